"""The loop's counters, its divergence check and its time left."""

import pytest

from milk_jax.errors import DivergenceError
from milk_jax.training import loop as loop_lib
from tests.helpers import tiny_config


def test_check_divergence_counts_epochs_far_above_the_first_loss():
  config = tiny_config(divergence_factor=10.0, divergence_epochs=2)
  loop = loop_lib.LoopState()
  parts = {'bpr': 0.5, 'env_variance': 0.0, 'alignment': 0.1, 'regulariser': 0.0}
  loop_lib.check_divergence(config, loop, 1, {'loss': 2.0, **parts}, 'best')
  assert loop.first_loss == 2.0
  loop_lib.check_divergence(config, loop, 2, {'loss': 25.0, **parts}, 'best')  # 25 > 10 x 2.
  assert loop.epochs_above == 1
  loop_lib.check_divergence(config, loop, 3, {'loss': 19.0, **parts}, 'best')  # Back below 20.
  assert loop.epochs_above == 0
  loop_lib.check_divergence(config, loop, 4, {'loss': 21.0, **parts}, 'best')
  with pytest.raises(DivergenceError, match=r'epoch 5: the loss \(30\) has stayed above 10 x the '
                     r"first epoch's \(2\) for 2 epochs"):
    loop_lib.check_divergence(config, loop, 5, {'loss': 30.0, **parts}, 'best')
  with pytest.raises(DivergenceError, match=r'epoch 6: the loss is not finite \(bpr inf\)'):
    loop_lib.check_divergence(config, loop, 6, {'loss': 3.0, **dict(parts, bpr=float('inf'))}, 'b')


def test_the_time_left_is_the_epochs_left_times_the_mean_epoch():
  training = object.__new__(loop_lib.Training)  # Only the config and the epoch times.
  training.config = tiny_config(num_epochs=10)
  training.epoch_walls = []
  assert training._eta(1, 5.0) == ', eta 45s'  # No epoch finished yet: this one's time.
  training.epoch_walls = [2.0, 4.0, 30.0]
  assert training._eta(4, 1.0) == ', eta 1m12s'  # 6 epochs x 12 s.
  assert training._eta(10, 1.0) == ''  # The last epoch.
  assert [loop_lib.format_duration(s) for s in (0.4, 42, 59.6, 80, 3599, 7500)] == [
      '0s', '42s', '1m00s', '1m20s', '59m59s', '2h05m']


def test_the_counters_are_saved_under_the_keys_older_run_folders_hold():
  older = {'epoch': 0, 'best_metric': None, 'best_epoch': 0, 'evals_since_best': 0,
           'best_val': None, 'train_seconds': 0.0, 'compile_seconds': 0.0,
           'first_loss': None, 'epochs_above': 0}
  assert loop_lib.LoopState().to_json() == older
  resumed = dict(older, epoch=4, best_metric=0.25, best_epoch=2, best_val={'ndcg@20': 0.25},
                 train_seconds=3.5, first_loss=1.5, epochs_above=1)
  assert loop_lib.LoopState.from_json(resumed).to_json() == resumed
