"""Shared test setup: fast CPU compilation, the one small-config builder, shared fixtures."""

from typing import Any, Mapping

import jax
import ml_collections
import pytest

from configs import base
from configs.experiments import base as experiments_base
from milk_jax import report

# Tests run tiny programs; skipping XLA's heavy optimisation passes makes them compile faster.
jax.config.update('jax_disable_most_optimizations', True)

EXPERIMENT_METRICS = ('test.ndcg@20', 'test_by_group.*.ndcg@20')


def _small_config(method: str | None = None, *, embed_dim: int | None = None,
                  train: Mapping[str, Any] | None = None, **section) -> ml_collections.ConfigDict:
  """configs/base.py on a synthetic catalogue that trains in seconds (200 users, 160 items).

  method: config.method (base's MILK when None), with `section` set in
  config.methods.<method>; embed_dim: config.model.embed_dim (16 when None);
  train: fields of config.train.
  """
  config = base.get_config()
  syn = config.data.synthetic
  syn.num_users = 200
  syn.num_items = 160
  syn.feature_dims = (24, 12)
  syn.latent_dim = 8
  syn.interactions_per_user = 15.0
  config.model.embed_dim = 16
  config.train.batch_size = 256
  config.train.num_epochs = 6
  config.train.eval_every = 2
  config.train.patience = 3
  config.train.beta = 10.0
  config.eval.ks = (10, 20)
  config.eval.user_batch_size = 64
  for key, value in (train or {}).items():
    setattr(config.train, key, value)
  if method is not None:
    config.method = method
  if embed_dim is not None:
    config.model.embed_dim = embed_dim
  for key, value in section.items():
    config.methods[config.method][key] = value
  return config


@pytest.fixture(scope='session')
def make_config():
  """The one small-config builder of the tests:
  make_config(method=None, *, embed_dim=None, train=None, **section) -> ConfigDict."""
  return _small_config


@pytest.fixture
def experiment_grid(make_config):
  """experiment_grid(settings, plots, num_seeds): the config.experiment of an ERM-and-MILK
  grid on make_config() with EXPERIMENT_METRICS; the summary tests feed it made-up results."""
  def grid(settings, plots, num_seeds):
    config = experiments_base.experiment_config(
        make_config(), 'fake', settings,
        [('ERM', experiments_base.ERM), ('MILK', experiments_base.MILK)],
        metrics=EXPERIMENT_METRICS, plots=plots, num_seeds=num_seeds)
    return config.experiment
  return grid


@pytest.fixture
def grid_results():
  """grid_results(setting, {variant: [(all, {group: value})]}): made-up results of a grid,
  {(setting, variant): {seed: results.json}}, the values its test ndcg@20 and per group."""
  def results(setting, values):
    return {(setting, variant): {
        seed: {'test': {'ndcg@20': a},
               'test_by_group': {g: {'ndcg@20': v} for g, v in by.items()}}
        for seed, (a, by) in enumerate(by_seed)} for variant, by_seed in values.items()}
  return results


@pytest.fixture
def summarise():
  """summarise(results, exp) -> (summary rows, metrics), as an experiment makes them."""
  def summary(results, exp):
    metrics = report.expand_metrics(exp.metrics, results)
    return report.summary_rows(results, exp, metrics), metrics
  return summary
