"""The loop's counters, its divergence check, its time left, and resuming older run folders."""

import jax
import optax
import pytest

from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import run as run_lib
from milk_jax.errors import DivergenceError
from milk_jax.methods import layers
from milk_jax.training import loop as loop_lib
from milk_jax.training import state as state_lib


def test_check_divergence_counts_epochs_far_above_the_first_loss(make_config):
  config = make_config(train={'divergence_factor': 10.0, 'divergence_epochs': 2})
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


def test_the_time_left_is_the_epochs_left_times_the_mean_epoch(make_config):
  training = object.__new__(loop_lib.Training)  # Only the config and the epoch times.
  training.config = make_config(train={'num_epochs': 10})
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



def _rewrite_in_the_older_layout(config, workdir: str) -> None:
  """Re-save a run's latest checkpoints as run folders written before the model state held
  them: BatchNorm statistics inside params, the optimiser state of a multi_transform that
  froze them (the trained leaves are the same arrays, in the same order)."""
  dataset = data_lib.load_dataset(config)
  method = state_lib.make_method(config, dataset)
  fresh = state_lib.create_train_state(config, method, jax.random.key(0), dataset.num_users)
  like, _ = checkpoint.latest_like(fresh)

  def labels(variables):
    return {k: jax.tree.map(lambda _, k=k: 'frozen' if k == layers.STATS else 'trained', v)
            for k, v in variables.items()}
  old_optimizer = optax.multi_transform({'trained': method.optimizer,
                                         'frozen': optax.set_to_zero()}, labels)
  store = checkpoint.Checkpoints(workdir)
  for epoch in store.epochs(checkpoint.LATEST):
    arrays, meta = store.restore(checkpoint.LATEST, epoch, like)
    state = checkpoint.state_from_tree(arrays['state'], fresh)
    old_opt_state = old_optimizer.init(state.variables)
    old_opt_state = jax.tree.unflatten(jax.tree.structure(old_opt_state),
                                       jax.tree.leaves(state.opt_state))
    store.delete(checkpoint.LATEST, [epoch])
    store.save(checkpoint.LATEST, epoch,
               {'state': {'step': state.step, 'params': state.variables,
                          'opt_state': old_opt_state},
                'best_params': arrays['best_params']}, meta)
    store.wait()
    with pytest.raises(checkpoint.DamagedCheckpoint):  # Not the current layout any more.
      store.restore(checkpoint.LATEST, epoch, like)
  store.close()


@pytest.mark.slow
def test_a_run_folder_of_the_older_layout_resumes_as_if_never_stopped(make_config, tmp_path,
                                                                      interrupted_run):
  """SiBraR's BatchNorm statistics, saved by the older code inside its params with its AdamW
  frozen on them, are converted on restore: the resumed run equals an uninterrupted one."""
  config = make_config('sibrar', train={'num_epochs': 6, 'eval_every': 2, 'patience': 10})
  full = run_lib.train_and_evaluate(config, str(tmp_path / 'full'))
  interrupted_run(run_lib.train_and_evaluate, config, str(tmp_path / 'old'), after_epoch=3)
  _rewrite_in_the_older_layout(config, str(tmp_path / 'old'))
  resumed = run_lib.train_and_evaluate(config, str(tmp_path / 'old'))
  for key in ('best_epoch', 'val', 'test', 'history'):
    assert resumed[key] == full[key], key
