"""Tests for milk_jax.sharding: data-parallel epochs match the single-device epoch."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import pytest

from milk_jax import sharding
from milk_jax import config as config_lib
from milk_jax.errors import ConfigError

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


@pytest.mark.slow  # A 4-device subprocess: about 40 s on 2 cores.
@pytest.mark.parametrize('sampler', ['host', 'device'])
@pytest.mark.parametrize('layout', ['data_parallel', 'user_rows'])
def test_sharded_epochs_equal_the_single_device_epoch(sharded_report, sampler, layout):
  figures = sharded_report[f'{sampler}/{layout}']
  # Same math; only the order of the gradient sums differs between devices.
  assert figures['max_param_difference'] < 1e-5, figures
  assert figures['loss_difference'] < 1e-5, figures
  if layout == 'user_rows':
    assert "('data'" in figures['user_table_spec'], figures  # Split by rows, columns whole.
    assert figures['user_table_devices'] == 4


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
