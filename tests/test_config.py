"""milk_jax/config.py: the checks of a training config that need no data."""

import importlib
import os

import pytest

from configs.experiments import base as experiments_base
from milk_jax import config as config_lib
from milk_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('name', experiments_base.dataset_names())
def test_every_dataset_config_passes_the_checks(name):
  config_lib.check_config(importlib.import_module(f'configs.{name}').get_config())


@pytest.mark.parametrize('name', sorted(f[:-3] for f in os.listdir(os.path.join(
    REPO, 'configs', 'experiments')) if f.endswith('.py') and f not in ('__init__.py', 'base.py')))
def test_every_experiment_config_passes_the_checks(name):
  config_lib.check_config(importlib.import_module(f'configs.experiments.{name}').get_config())


def test_a_data_path_with_the_synthetic_format_is_refused():
  config = importlib.import_module('configs.default').get_config()
  config.data.path = 'my_data'
  with pytest.raises(ConfigError, match=r"config.data.path='my_data': "
                     r"config.data.format='synthetic' generates its data"):
    config_lib.check_config(config)
  config.data.format = 'interactions'
  config_lib.check_config(config)  # The folder itself is read (and checked) by the data code.
