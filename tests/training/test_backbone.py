"""The warm backbone: trained once per (data, setting, seed), reused, never silently retrained."""

import json
import logging
import os

import numpy as np
import pytest

from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import interrupt
from milk_jax import run as run_lib
from milk_jax import runfolder
from milk_jax.errors import ConfigError
from milk_jax.errors import Interrupted
from milk_jax.errors import RunFolderError
from milk_jax.training import backbone
from milk_jax.training import loop as loop_lib
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

READER = 'heater'  # A method that reads the backbone's vectors.


@pytest.fixture(scope='session')
def reader_config(make_config):
  """reader_config(run_dir, **train) -> make_config(READER, train=train) with a 4-epoch
  backbone in run_dir (None: the run's own folder)."""
  def config(run_dir, **train):
    config = make_config(READER, train=train)
    config.backbone.num_epochs = 4
    config.backbone.run_dir = run_dir
    return config
  return config


def test_the_backbone_config_ignores_the_reader_s_training_fields(reader_config):
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


def test_trained_once_then_reused(tmp_path, reader_config):
  run_dir = str(tmp_path / 'bb')
  config = reader_config(run_dir)
  dataset = data_lib.load_dataset(config)
  first = run_lib.cf_vectors(config, str(tmp_path / 'unused'), dataset)
  log_path = os.path.join(run_dir, 'metrics.jsonl')
  stamp = os.stat(log_path).st_mtime_ns
  second = run_lib.cf_vectors(config, str(tmp_path / 'unused'), dataset)
  assert os.stat(log_path).st_mtime_ns == stamp  # Not trained again.
  for key in ('cf_users', 'cf_items'):
    np.testing.assert_array_equal(first[key], second[key])
  assert first['cf_users'].shape == (dataset.num_users, config.model.embed_dim)
  new = np.union1d(dataset.val_items, dataset.test_items)
  assert np.all(first['cf_items'][new] == 0.0)
  assert np.all(np.abs(first['cf_items'][dataset.warm_items]).sum(axis=1) > 0)


def test_a_backbone_of_other_settings_is_refused_not_retrained(tmp_path, reader_config):
  run_dir = str(tmp_path / 'bb')
  config = reader_config(run_dir)
  dataset = data_lib.load_dataset(config)
  run_lib.cf_vectors(config, str(tmp_path), dataset)
  changed = reader_config(run_dir)
  changed.backbone.learning_rate = 0.01
  with pytest.raises(ConfigError, match='backbone/|train.learning_rate'):
    backbone.check_backbone_folder(changed, str(tmp_path))
  workdir = tmp_path / 'run'
  with pytest.raises(ConfigError, match='backbone/|train.learning_rate'):
    run_lib.train_and_evaluate(changed, str(workdir))
  assert not workdir.exists()  # Refused before the run's folder (or its lock) is made.
  other_seed = reader_config(run_dir)
  other_seed.seed = 1
  with pytest.raises(ConfigError, match='seed'):
    backbone.check_backbone_folder(other_seed, str(tmp_path))


def test_default_folder_is_inside_the_run(reader_config):
  assert backbone.backbone_dir(reader_config(None), '/runs/x') == '/runs/x/backbone'


def test_evaluating_a_run_never_trains_a_backbone(tmp_path, reader_config):
  config = reader_config(str(tmp_path / 'absent'))
  dataset = data_lib.load_dataset(config)
  with pytest.raises(RunFolderError, match='absent holds no finished bprmf backbone'):
    run_lib.cf_vectors(config, str(tmp_path), dataset, train_if_missing=False)
  assert not os.path.exists(tmp_path / 'absent' / 'checkpoints')


def test_the_refusal_names_what_chose_the_folder(tmp_path, reader_config):
  other_seed = reader_config(None)
  other_seed.seed = 1
  saved = json_of(backbone.backbone_config(other_seed))
  for folder in (tmp_path / 'bb', tmp_path / 'run' / 'backbone'):
    folder.mkdir(parents=True)
    runfolder.write_json(str(folder / runfolder.CONFIG_FILE), saved)
  with pytest.raises(ConfigError, match='seed') as refused:
    backbone.check_backbone_folder(reader_config(str(tmp_path / 'bb')), str(tmp_path / 'run'))
  assert 'config.backbone.run_dir' in str(refused.value)
  assert '--workdir' not in str(refused.value)
  with pytest.raises(ConfigError, match='use a fresh --workdir'):
    backbone.check_backbone_folder(reader_config(None), str(tmp_path / 'run'))


def _lines(caplog):
  return [r.getMessage() for r in caplog.records]


def test_the_backbone_ranks_nothing_and_its_vectors_are_those_of_bprmf_alone(tmp_path, caplog,
                                                                             reader_config):
  config = reader_config(str(tmp_path / 'bb'))
  dataset = data_lib.load_dataset(config)
  with caplog.at_level(logging.INFO, logger='milk_jax'):
    vectors = run_lib.cf_vectors(config, str(tmp_path), dataset)
  lines = _lines(caplog)
  assert lines[0].startswith('backbone: training bprmf')
  assert all(line.startswith('backbone: ') for line in lines)
  assert any(line.startswith('backbone: epoch 4/4 loss ') for line in lines)
  assert not any('new best' in line or 'ndcg' in line or line.startswith('backbone: test')
                 for line in lines)
  with open(tmp_path / 'bb' / 'results.json') as f:
    results = json.load(f)
  assert not {'val', 'test', 'test_by_group'} & set(results)
  assert results['best_epoch'] == 4 and results['train']['loss'] > 0
  assert {r['kind'] for r in runfolder.read_log(str(tmp_path / 'bb' / 'metrics.jsonl'))} == {
      'train'}
  # BPR-MF trained alone keeps its evaluation, the warm-only reference, and says what it is.
  caplog.clear()
  alone = str(tmp_path / 'alone')
  bconfig = backbone.backbone_config(config)
  with caplog.at_level(logging.INFO, logger='milk_jax'):
    results = run_lib.train_and_evaluate(bconfig, alone)
  evals = [line for line in _lines(caplog) if line.startswith(('eval epoch', 'test at'))]
  assert len(evals) == 3 and all(loop_lib.WARM_ONLY in line for line in evals)
  assert not any('new best' in line for line in evals)
  assert 'test' in results
  program = step_lib.EpochProgram(bconfig, dataset, state_lib.make_method(bconfig, dataset))
  _, params = checkpoint.restore_best_params(alone, program.fresh_state())
  users, items = (np.asarray(v) for v in program.vectors(params))
  np.testing.assert_array_equal(vectors['cf_users'], users[:dataset.num_users])
  np.testing.assert_array_equal(vectors['cf_items'], items)  # Bit for bit.


def test_an_interrupted_backbone_resumes_to_the_same_vectors(tmp_path, monkeypatch, capsys,
                                                             reader_config):
  config = reader_config(str(tmp_path / 'bb'))
  dataset = data_lib.load_dataset(config)
  whole = run_lib.cf_vectors(reader_config(str(tmp_path / 'whole')), str(tmp_path), dataset)
  train_epoch = loop_lib.Training.train_epoch
  def stop_after_two(self, epoch):
    if epoch == 2:
      interrupt.request()  # What Ctrl-C does: the loop stops before epoch 3.
    return train_epoch(self, epoch)
  monkeypatch.setattr(loop_lib.Training, 'train_epoch', stop_after_two)
  try:
    with pytest.raises(Interrupted):
      run_lib.cf_vectors(config, str(tmp_path), dataset)
  finally:
    interrupt.clear()
  monkeypatch.undo()
  resumed = run_lib.cf_vectors(config, str(tmp_path), dataset)
  for key in ('cf_users', 'cf_items'):
    np.testing.assert_array_equal(resumed[key], whole[key])
  with open(tmp_path / 'bb' / 'results.json') as f:
    assert json.load(f)['best_epoch'] == 4
  assert 'Logging error' not in capsys.readouterr().err  # The resume line has no metric.
