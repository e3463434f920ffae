"""Small configs shared by the tests: synthetic data that trains in seconds."""

import contextlib
import os
import signal

from configs import base


def tiny_config(**train_overrides):
  """make_config(train=train_overrides) of tests/conftest.py, for tests not yet on the fixture."""
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
  for key, value in train_overrides.items():
    setattr(config.train, key, value)
  return config


def snapshot(folder):
  """Every path under `folder` with its mode, size and modification time."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      info = os.lstat(path)
      found[os.path.relpath(path, folder)] = (info.st_mode, info.st_size, info.st_mtime_ns)
  return found


@contextlib.contextmanager
def fails_instead_of_hanging(seconds=120):
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


def edit_npz(path, change):
  """Rewrite the .npz file `path` with `change(arrays)` applied to its dict of arrays."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  with np.load(path) as saved:
    arrays = dict(saved)
  change(arrays)
  np.savez(path, **arrays)


def assert_training_beats_untrained(config, workdir):
  """Train `config` in `workdir`; its test NDCG@20 must at least double the untrained model's."""
  from milk_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  from milk_jax import run as run_lib  # pylint: disable=import-outside-toplevel
  from milk_jax.training import state as state_lib  # pylint: disable=import-outside-toplevel
  from milk_jax.training import step as step_lib  # pylint: disable=import-outside-toplevel
  dataset = data_lib.load_dataset(config)
  program = step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset))
  before = program.evaluate(program.fresh_state().params, 'test')
  results = run_lib.train_and_evaluate(config, str(workdir))
  assert results['test']['ndcg@20'] >= 2 * before['ndcg@20'], (before, results['test'])
  assert results['best_epoch'] > 0
