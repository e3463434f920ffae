"""Shared test setup: fast CPU compilation, the one small-config builder, shared fixtures.

Fixtures are requested by argument; those that tests call return the function:
  make_config, small_dataset       the small synthetic config (every test's), its Dataset
  experiment_grid, tiny_experiment, grid_results, summarise
                                   experiment configs, made-up results and their summary
  snapshot, fails_instead_of_hanging, edit_npz, write_items_folder
                                   files and folders: compare, guard, edit, write
  assert_training_beats_untrained  a short real run must beat the untrained model
  cli                              `python main.py` processes and what they wrote
  interrupted_run                  a run stopped after a chosen epoch, for resume tests
No test module imports another (nor a conftest); tests/data/ and tests/methods/ have their
own conftest.py.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import pytest

from configs import base
from configs.experiments import base as experiments_base
from milk_jax import data as data_lib
from milk_jax import faults
from milk_jax import report
from milk_jax import run as run_lib
from milk_jax import runfolder
from milk_jax.data import dataset as dataset_lib
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

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


@pytest.fixture(scope='session')
def small_dataset():
  """The Dataset of make_config(), loaded once; tests only read it."""
  return data_lib.load_dataset(_small_config())


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


@pytest.fixture(scope='session')
def tiny_experiment():
  """tiny_experiment(variants=None, **fields) -> the config of a grid that really trains:
  make_config() for 2 epochs on 'ftmt', ERM and MILK (or `variants`), 2 seeds,
  EXPERIMENT_METRICS, bar and group plots; `fields` set other config.experiment fields."""
  def config(variants=None, **fields):
    small = _small_config(train={'num_epochs': 2, 'eval_every': 1})
    variants = variants or [('ERM', experiments_base.ERM), ('MILK', experiments_base.MILK)]
    fields = {'num_seeds': 2, 'metrics': EXPERIMENT_METRICS, 'plots': ('bars', 'groups'),
              **fields}
    return experiments_base.experiment_config(small, 'tiny', ('ftmt',), variants, **fields)
  return config


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


# ------------------------------------------------------------------ files and folders


def _snapshot(folder):
  """Every path under `folder` with its mode, size and modification time."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      info = os.lstat(path)
      found[os.path.relpath(path, folder)] = (info.st_mode, info.st_size, info.st_mtime_ns)
  return found


@pytest.fixture(scope='session')
def snapshot():
  """snapshot(folder) -> {path: (mode, size, mtime)} of everything under it: equal before and
  after means nothing was written, created or removed."""
  return _snapshot


@contextlib.contextmanager
def _fails_instead_of_hanging(seconds=120):
  """A read that blocks (a FIFO opened by a regression) raises instead of stalling the suite."""
  def stop(signum, frame):
    raise TimeoutError('blocked: a special file was opened')
  previous = signal.signal(signal.SIGALRM, stop)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope='session')
def fails_instead_of_hanging():
  """`with fails_instead_of_hanging():` a block that hangs raises TimeoutError after 120 s."""
  return _fails_instead_of_hanging


def _edit_npz(path, change):
  """Rewrite the .npz file `path` with `change(arrays)` applied to its dict of arrays."""
  with np.load(path) as saved:
    arrays = dict(saved)
  change(arrays)
  np.savez(path, **arrays)


@pytest.fixture(scope='session')
def edit_npz():
  """edit_npz(path, change): rewrite an .npz file with change(arrays) applied to its arrays."""
  return _edit_npz


def _write_items_folder(folder, config, dataset, items, availability=None):
  """The raw rows of `items` (before imputation), their ids and availability."""
  raw, _ = dataset_lib.read_layout(config.data, int(config.seed))
  os.makedirs(folder, exist_ok=True)
  for name, features in zip(dataset.modality_names, raw.features):
    np.save(os.path.join(folder, f'{name}_feat.npy'), features[items])
  available = dataset.availability[items] if availability is None else availability
  np.save(os.path.join(folder, 'availability.npy'), available)
  with open(os.path.join(folder, 'item_ids.txt'), 'w') as f:
    f.write(''.join(f'{dataset.item_ids[i]}\n' for i in items))
  return folder


@pytest.fixture(scope='session')
def write_items_folder():
  """write_items_folder(folder, config, dataset, items, availability=None) -> folder: catalogue
  items handed back as a folder of new items, raw, as a user would bring them."""
  return _write_items_folder


# ------------------------------------------------------------------ training


def _assert_training_beats_untrained(config, workdir):
  """Train `config` in `workdir`; its test NDCG@20 must at least double the untrained model's."""
  dataset = data_lib.load_dataset(config)
  program = step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset))
  before = program.evaluate(program.fresh_state().params, 'test')
  results = run_lib.train_and_evaluate(config, str(workdir))
  assert results['test']['ndcg@20'] >= 2 * before['ndcg@20'], (before, results['test'])
  assert results['best_epoch'] > 0


@pytest.fixture(scope='session')
def assert_training_beats_untrained():
  """assert_training_beats_untrained(config, workdir): a short real run must clearly beat the
  untrained model."""
  return _assert_training_beats_untrained


# ------------------------------------------------------------------ the command line


class MainProcess:
  """`python main.py --workdir=WORKDIR ...` as the fault tests drive it: one process per call,
  JAX on the CPU, fault injection (milk_jax/faults.py) off unless `crash_at` names a point."""

  REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  TIMEOUT = 300  # Seconds: a hang (a FIFO read, a lock wait) fails instead of stalling.
  # What an interrupted run must end with to equal the uninterrupted one.
  COMPARED = ('best_epoch', 'epochs_run', 'stopped_early', 'val', 'test', 'test_by_group',
              'history')

  @staticmethod
  def env(crash_at=None):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    env.pop(faults.ENV, None)
    if crash_at is not None:
      env[faults.ENV] = crash_at
    return env

  @classmethod
  def run(cls, workdir, *args, crash_at=None) -> subprocess.CompletedProcess:
    """The command run to its end."""
    return subprocess.run([sys.executable, 'main.py', f'--workdir={workdir}', *args],
                          cwd=cls.REPO, env=cls.env(crash_at), capture_output=True, text=True,
                          timeout=cls.TIMEOUT)

  @classmethod
  def start(cls, workdir, *args) -> subprocess.Popen:
    """The command started, not waited for."""
    return subprocess.Popen([sys.executable, 'main.py', f'--workdir={workdir}', *args],
                            cwd=cls.REPO, env=cls.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

  @staticmethod
  def results(workdir):
    with open(os.path.join(workdir, 'results.json')) as f:
      return json.load(f)

  @staticmethod
  def log(workdir):
    """metrics.jsonl without the wall times."""
    records = runfolder.read_log(os.path.join(workdir, 'metrics.jsonl'))
    return [{k: v for k, v in r.items() if k != 'seconds'} for r in records]

  @classmethod
  def assert_same_run(cls, workdir, reference):
    results, expected = cls.results(workdir), cls.results(reference)
    for key in cls.COMPARED:
      assert results[key] == expected[key], key
    assert cls.log(workdir) == cls.log(reference)

  @staticmethod
  def one_error_line(done):
    """The one `error: ` line of stderr, and no traceback."""
    assert 'Traceback' not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope='session')
def cli():
  """MainProcess: run or start `python main.py`, read what the run wrote."""
  return MainProcess


class StoppedByTest(Exception):
  """What `interrupted_run`'s callback raises: a run cut off at a chosen epoch."""


def _interrupted_run(run_fn, config, workdir: str, after_epoch: int) -> None:
  def stop(epoch, metrics):
    del metrics
    if epoch == after_epoch:
      raise StoppedByTest()

  with pytest.raises(StoppedByTest):
    run_fn(config, workdir, epoch_callback=stop)


@pytest.fixture(scope='session')
def interrupted_run():
  """interrupted_run(train_and_evaluate, config, workdir, after_epoch): a run stopped right after
  `after_epoch` (its latest checkpoint is what a crash there leaves), for resume tests."""
  return _interrupted_run
