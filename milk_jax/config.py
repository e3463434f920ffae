"""Checks of a training config that need no data: shared fields, then the method's own."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from milk_jax import evaluate
from milk_jax import methods
from milk_jax import sharding
from milk_jax.data import dataset as dataset_lib
from milk_jax.errors import ConfigError

FEATURE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
SAMPLERS = ('host', 'device')
_LAYOUTS = tuple(f for f in dataset_lib.FORMATS if f != 'synthetic')  # Formats read from data.path.


def config_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  for part in dotted.split('.'):
    config = config[part]
  return config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raise ConfigError on config values the code cannot honour."""
  def require(ok: bool, field: str, message: str):
    if not ok:
      raise ConfigError(f'config.{field}={config_value(config, field)!r}: {message}')

  method = methods.get(config.method)  # ConfigError naming the choices.
  # A folder given without its format would be ignored: the run would train on synthetic data.
  require(config.data.format != 'synthetic' or config.data.path is None, 'data.path',
          "config.data.format='synthetic' generates its data and would ignore this folder; "
          f'set config.data.format to its layout: {" | ".join(_LAYOUTS)}')
  require(config.model.embed_dim > 0, 'model.embed_dim', 'must be positive')
  require(config.train.batch_size > 0, 'train.batch_size', 'must be positive')
  require(config.train.learning_rate > 0, 'train.learning_rate', 'must be positive')
  require(config.train.eval_every >= 1, 'train.eval_every', 'must be at least 1')
  require(config.train.patience >= 1, 'train.patience', 'must be at least 1')
  require(config.train.num_epochs >= 1, 'train.num_epochs', 'must be at least 1')
  require(config.train.checkpoint_every >= 0, 'train.checkpoint_every',
          'must be 0 (at evaluations) or a positive number of epochs')
  require(config.train.divergence_factor >= 0, 'train.divergence_factor',
          'must be non-negative (0 turns the check off)')
  require(config.train.divergence_epochs >= 1, 'train.divergence_epochs', 'must be at least 1')
  require(len(config.eval.ks) > 0 and all(k > 0 for k in config.eval.ks), 'eval.ks',
          'needs at least one positive cut-off')
  require(config.train.select_metric in evaluate.metric_keys(config.eval.ks),
          'train.select_metric', f'must be one of {evaluate.metric_keys(config.eval.ks)}')
  require(config.eval.candidates in ('all_new', 'split'), 'eval.candidates',
          "must be 'all_new' or 'split'")
  require(config.eval.user_batch_size > 0, 'eval.user_batch_size', 'must be positive')
  require(config.eval.calibration in ('none', 'validation'), 'eval.calibration',
          "must be 'none' or 'validation'")
  require(config.eval.calibration_shrinkage >= 0, 'eval.calibration_shrinkage',
          'must be non-negative (0: match each pattern fully)')
  require(config.train.sampler in SAMPLERS, 'train.sampler', f'must be one of {SAMPLERS}')
  require(config.train.feature_dtype in FEATURE_DTYPES, 'train.feature_dtype',
          f'must be one of {tuple(FEATURE_DTYPES)}')
  require(config.train.data_parallel or not config.train.shard_user_table,
          'train.shard_user_table', 'needs config.train.data_parallel=True')
  require(config.train.data_parallel or not config.train.shard_item_features,
          'train.shard_item_features', 'needs config.train.data_parallel=True')
  if config.train.data_parallel:
    problem = sharding.check_batch(config.train.batch_size, sharding.make_mesh())
    require(problem is None, 'train.batch_size', problem or '')
  # Several processes (--jax_distributed) train one model together only on the global mesh.
  require(config.train.data_parallel or jax.process_count() == 1, 'train.data_parallel',
          f'must be True when several processes train together ({jax.process_count()} here)')
  backbone = config.backbone
  require(backbone.num_epochs >= 1, 'backbone.num_epochs', 'must be at least 1')
  require(backbone.learning_rate > 0, 'backbone.learning_rate', 'must be positive')
  require(backbone.batch_size > 0, 'backbone.batch_size', 'must be positive')
  method.check_config(config)
