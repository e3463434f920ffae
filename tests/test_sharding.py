"""Tests for milk_jax.sharding: data-parallel epochs match the single-device epoch, with the
user table and the item features replicated or split by rows."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from milk_jax import sharding
from milk_jax import config as config_lib
from milk_jax.errors import ConfigError
from milk_jax.methods import Tables

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def sharded_report(make_config):
  # The device count is fixed when JAX starts, so the 4-device run needs its own process.
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO),
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  config = make_config(train={'batch_size': 64})
  done = subprocess.run([sys.executable, '-m', 'tests.sharded_epochs'], cwd=REPO, env=env,
                        input=config.to_json(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_item_rows_split(figures):
  # 162 items over 4 devices: 41 rows each, 2 of them padding; the vectors have the 162 items.
  assert figures['feature_shard_rows'] == [41] * 4, figures
  assert "'data'" in figures['feature_spec'], figures
  assert figures['item_vector_rows'] == 162, figures
  # No program gathers a whole feature table onto a device (XLA gathers the batch's rows
  # locally, masked, and sums them over the devices).
  assert figures['collectives'] == [], figures


@pytest.mark.slow  # A 4-device subprocess: about 100 s on 2 cores, for all the tests using it.
@pytest.mark.parametrize('sampler', ['host', 'device'])
@pytest.mark.parametrize('layout', ['data_parallel', 'user_rows', 'item_rows',
                                    'user_and_item_rows'])
def test_sharded_epochs_equal_the_single_device_epoch(sharded_report, sampler, layout):
  figures = sharded_report[f'{sampler}/{layout}']
  # Same math; only the order of the gradient sums differs between devices.
  assert figures['max_param_difference'] < 1e-5, figures
  assert figures['loss_difference'] < 1e-5, figures
  assert figures['max_item_vector_difference'] < 1e-5, figures
  if layout in ('user_rows', 'user_and_item_rows'):
    assert "('data'" in figures['user_table_spec'], figures  # Split by rows, columns whole.
    assert figures['user_table_devices'] == 4
  if layout in ('item_rows', 'user_and_item_rows'):
    _assert_item_rows_split(figures)
    # Against the same layout with replicated features: 0.0 measured (MILK sums no item axis
    # split over devices; its batch rows are gathered exactly).
    assert figures['max_difference_from_replicated_features'] < 1e-6, figures


@pytest.mark.slow  # Shares the 4-device subprocess above.
@pytest.mark.parametrize('method', ['clcrec', 'dropoutnet'])
def test_baselines_with_item_features_split_match_replicated_features(sharded_report, method):
  figures = sharded_report[f'{method}/item_rows']
  # CLCRec gathers the batch's rows, DropoutNet encodes every item (with item-sized extras):
  # the same values up to float32 summation order (sums over items split over devices).
  assert figures['max_param_difference'] < 1e-5, figures
  assert figures['max_item_vector_difference'] < 1e-5, figures
  _assert_item_rows_split(figures)


@pytest.mark.slow  # Shares the 4-device subprocess above.
def test_run_with_item_features_split_resumes_as_the_replicated_run(sharded_report):
  figures = sharded_report['resumed_item_rows']
  # Stopped after epoch 1 and resumed: the metrics and vectors.npz of a replicated run.
  assert figures['same_metrics'], figures
  assert figures['max_vector_difference'] < 1e-5, figures
  assert figures['item_vector_rows'] == 162, figures


def test_user_table_padding_only_when_sharded(monkeypatch, make_config):
  config = make_config()
  assert sharding.num_user_rows(config, 202) == 202
  config.train.data_parallel = True
  config.train.shard_user_table = True
  monkeypatch.setattr(jax, 'device_count', lambda: 4)  # The pytest process has one device.
  assert sharding.num_user_rows(config, 202) == 204  # Padded to a multiple of 4.
  assert sharding.num_user_rows(config, 200) == 200


def test_batch_that_does_not_split_evenly_is_refused(make_config):
  four_devices = types.SimpleNamespace(size=4)  # check_batch reads only the mesh's size.
  assert sharding.check_batch(8, four_devices) is None
  assert sharding.check_batch(7, four_devices) == (
      'must be divisible by the 4 devices of the data-parallel mesh (try 8)')
  config = make_config()
  config.train.shard_user_table = True
  with pytest.raises(ConfigError, match='data_parallel'):
    config_lib.check_config(config)


def test_item_features_split_by_rows_need_data_parallel(make_config):
  config = make_config(train={'shard_item_features': True})
  with pytest.raises(ConfigError, match=r'train\.shard_item_features=True: needs config\.train'
                                        r'\.data_parallel=True'):
    config_lib.check_config(config)


def test_item_tables_padded_by_rows_and_the_padding_dropped_again():
  num_items = 5
  tables = Tables(features=(np.arange(10, dtype=np.float32).reshape(5, 2),),
                  availability=np.ones((5, 1), bool), warm_items=np.arange(3, dtype=np.int32),
                  is_new=np.array([0, 0, 0, 1, 1], bool),
                  extras={'cf_items': np.ones((5, 4), np.float32),
                          'cf_users': np.ones((8, 4), np.float32), 'steps': np.asarray(3)})
  per_item = sharding.per_item_leaves(tables, num_items)
  assert per_item == Tables(features=(True,), availability=True, warm_items=False,
                            is_new=True,
                            extras={'cf_items': True, 'cf_users': False, 'steps': False})
  padded = sharding.pad_item_rows(tables, per_item, 8)
  assert padded.features[0].shape == (8, 2) and padded.is_new.shape == (8,)
  assert not padded.features[0][5:].any() and not padded.availability[5:].any()
  assert padded.extras['cf_users'].shape == (8, 4)  # Not per item, though it has 8 rows.
  restored = sharding.drop_item_padding(padded, per_item, num_items)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(tables)):
    np.testing.assert_array_equal(got, want)
