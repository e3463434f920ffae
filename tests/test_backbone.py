"""The warm backbone: trained once per (data, setting, seed), reused, never silently retrained."""

import os

import numpy as np
import pytest

from milk_jax import backbone
from milk_jax import data as data_lib
from milk_jax import runfolder
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError
from tests.helpers import tiny_config

READER = 'heater'  # A method that reads the backbone's vectors.


def reader_config(run_dir, **train_overrides):
  config = tiny_config(**train_overrides)
  config.method = READER
  config.backbone.num_epochs = 4
  config.backbone.run_dir = run_dir
  return config


def test_the_backbone_config_ignores_the_reader_s_training_fields():
  a = backbone.backbone_config(reader_config(None))
  other = reader_config(None, learning_rate=0.05, batch_size=128, num_epochs=3)
  other.method = 'dropoutnet'
  b = backbone.backbone_config(other)
  assert a.method == b.method == 'bprmf'
  assert runfolder.changed_fields(json_of(a), b) == []
  assert a.train.num_epochs == 4 and a.train.learning_rate == a.backbone.learning_rate


def json_of(config):
  import json
  return json.loads(config.to_json())


def test_trained_once_then_reused(tmp_path):
  run_dir = str(tmp_path / 'bb')
  config = reader_config(run_dir)
  dataset = data_lib.load_dataset(config)
  first = backbone.cf_vectors(config, str(tmp_path / 'unused'), dataset)
  log_path = os.path.join(run_dir, 'metrics.jsonl')
  stamp = os.stat(log_path).st_mtime_ns
  second = backbone.cf_vectors(config, str(tmp_path / 'unused'), dataset)
  assert os.stat(log_path).st_mtime_ns == stamp  # Not trained again.
  for key in ('cf_users', 'cf_items'):
    np.testing.assert_array_equal(first[key], second[key])
  assert first['cf_users'].shape == (dataset.num_users, config.model.embed_dim)
  new = np.union1d(dataset.val_items, dataset.test_items)
  assert np.all(first['cf_items'][new] == 0.0)
  assert np.all(np.abs(first['cf_items'][dataset.warm_items]).sum(axis=1) > 0)


def test_a_backbone_of_other_settings_is_refused_not_retrained(tmp_path):
  run_dir = str(tmp_path / 'bb')
  config = reader_config(run_dir)
  dataset = data_lib.load_dataset(config)
  backbone.cf_vectors(config, str(tmp_path), dataset)
  changed = reader_config(run_dir)
  changed.backbone.learning_rate = 0.01
  with pytest.raises(ConfigError, match='backbone/|train.learning_rate'):
    backbone.cf_vectors(changed, str(tmp_path), dataset)
  other_seed = reader_config(run_dir)
  other_seed.seed = 1
  with pytest.raises(ConfigError, match='seed'):
    backbone.check_backbone_folder(other_seed, str(tmp_path))


def test_default_folder_is_inside_the_run():
  assert backbone.backbone_dir(reader_config(None), '/runs/x') == '/runs/x/backbone'


def test_evaluating_a_run_never_trains_a_backbone(tmp_path):
  config = reader_config(str(tmp_path / 'absent'))
  dataset = data_lib.load_dataset(config)
  with pytest.raises(RunFolderError, match='absent holds no finished bprmf backbone'):
    backbone.cf_vectors(config, str(tmp_path), dataset, train_if_missing=False)
  assert not os.path.exists(tmp_path / 'absent' / 'checkpoints')
