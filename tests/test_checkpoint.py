import glob
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from milk_jax import checkpoint
from milk_jax import methods
from milk_jax.errors import RunFolderError
from milk_jax.methods import layers
from milk_jax.methods.milk import model
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib


def _arrays(seed):
  # Large enough that the biggest file of a checkpoint is array data.
  params = model.init_params(jax.random.key(seed), 400, (64, 32), 16)
  return {'state': {'step': jnp.int32(seed), 'params': params,
                    'opt_state': optax.adam(1e-3).init(params)}}


def _meta(seed):
  return {'epoch': seed, 'best_metric': 0.5 * seed, 'best_val': {'ndcg@20': 0.1}}


def _saved(tmp_path, epochs=(1, 2)):
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  for epoch in epochs:
    checkpoints.save(checkpoint.LATEST, epoch, _arrays(epoch), _meta(epoch))
  checkpoints.close()
  return checkpoint.Checkpoints(str(tmp_path))


def _largest_array_file(tmp_path, epoch):
  # ocdbt.process_0/d holds the array data; arrays/d only orbax's own bookkeeping.
  files = glob.glob(str(tmp_path / 'checkpoints' / 'latest' / str(epoch) / 'arrays'
                        / 'ocdbt.process_0' / 'd' / '*'))
  return max(files, key=os.path.getsize)


def test_round_trip_keeps_latest_and_best_apart(tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  checkpoints.save(checkpoint.LATEST, 1, _arrays(1), _meta(1))
  checkpoints.save(checkpoint.LATEST, 2, _arrays(2), _meta(2))
  checkpoints.save(checkpoint.LATEST, 3, _arrays(3), _meta(3))
  checkpoints.save(checkpoint.BEST, 1, _arrays(1), _meta(1))
  checkpoints.close()

  reopened = checkpoint.Checkpoints(str(tmp_path))
  epoch, latest, meta = reopened.restore_newest(checkpoint.LATEST, _arrays(0))
  assert epoch == 3 and meta == _meta(3)
  chex.assert_trees_all_close(latest, _arrays(3))
  best, best_meta = reopened.restore(checkpoint.BEST, 1, _arrays(0))
  chex.assert_trees_all_close(best, _arrays(1))
  assert best_meta == _meta(1)
  # The two newest latest checkpoints are kept: the older one is the fallback.
  assert reopened.epochs(checkpoint.LATEST) == [3, 2]
  assert reopened.epochs(checkpoint.BEST) == [1]
  reopened.close()


def test_restore_from_an_empty_directory_is_none(tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  assert checkpoints.restore_newest(checkpoint.LATEST, _arrays(0)) is None
  checkpoints.close()


def test_save_replaces_the_same_epoch_and_discard_empties(tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  checkpoints.save(checkpoint.BEST, 3, _arrays(1), _meta(1))
  checkpoints.save(checkpoint.BEST, 3, _arrays(2), _meta(2))
  epoch, arrays, _ = checkpoints.restore_newest(checkpoint.BEST, _arrays(0))
  assert epoch == 3
  chex.assert_trees_all_close(arrays, _arrays(2))
  checkpoints.discard(checkpoint.BEST)
  assert checkpoints.restore_newest(checkpoint.BEST, _arrays(0)) is None
  checkpoints.close()


def test_digest_changes_with_any_value_and_with_the_counters():
  digest = checkpoint.tree_digest(_arrays(1), _meta(1))
  assert digest == checkpoint.tree_digest(_arrays(1), _meta(1))
  changed = _arrays(1)
  changed['state']['params']['user_embedding'] = changed['state']['params'][
      'user_embedding'].at[0, 0].add(1e-7)
  assert checkpoint.tree_digest(changed, _meta(1)) != digest
  assert checkpoint.tree_digest(_arrays(1), dict(_meta(1), epoch=2)) != digest


def _flip_one_bit(path):
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 1
  open(path, 'wb').write(bytes(data))


def _truncate(path):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


@pytest.mark.parametrize('damage', [_flip_one_bit, _truncate])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage, caplog):
  _saved(tmp_path).close()
  damage(_largest_array_file(tmp_path, 2))
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  epoch, arrays, meta = checkpoints.restore_newest(checkpoint.LATEST, _arrays(0))
  assert epoch == 1 and meta == _meta(1)
  chex.assert_trees_all_close(arrays, _arrays(1))
  assert 'falling back' in caplog.text and 'latest/2' in caplog.text
  assert checkpoints.epochs(checkpoint.LATEST) == [1]  # The damaged one is gone.
  checkpoints.close()


def test_damaged_counters_are_detected(tmp_path):
  _saved(tmp_path).close()
  (tmp_path / 'checkpoints' / 'latest' / '2' / 'meta' / 'metadata').write_text('{"epoch": 2, ')
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  with pytest.raises(checkpoint.DamagedCheckpoint, match='latest/2 cannot be read'):
    checkpoints.restore(checkpoint.LATEST, 2, _arrays(0))
  checkpoints.close()


def test_no_intact_checkpoint_left_is_a_clear_error(tmp_path):
  _saved(tmp_path, epochs=(1,)).close()
  _flip_one_bit(_largest_array_file(tmp_path, 1))
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  with pytest.raises(RunFolderError, match=r'latest/1 does not match its digest.*start the run '
                     'over'):
    checkpoints.restore_newest(checkpoint.LATEST, _arrays(0))
  checkpoints.close()


def test_a_half_written_save_is_ignored(tmp_path):
  _saved(tmp_path).close()
  # What a process killed mid-save leaves: orbax's temporary folder, never committed.
  partial = tmp_path / 'checkpoints' / 'latest' / '3.orbax-checkpoint-tmp-1234' / 'arrays'
  partial.mkdir(parents=True)
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  assert checkpoints.restore_newest(checkpoint.LATEST, _arrays(0))[0] == 2
  checkpoints.close()


def test_read_newest_reads_without_writing(tmp_path, snapshot):
  """Serving's restore: a save in flight (orbax's temporary folder) is left alone."""
  _saved(tmp_path).close()
  in_flight = tmp_path / 'checkpoints' / 'latest' / '3.orbax-checkpoint-tmp-1234' / 'arrays'
  in_flight.mkdir(parents=True)
  before = snapshot(str(tmp_path))
  epoch, arrays, meta = checkpoint.read_newest(str(tmp_path / 'checkpoints' / 'latest'),
                                               _arrays(0))
  assert epoch == 2 and meta == _meta(2)
  chex.assert_trees_all_close(arrays, _arrays(2))
  assert snapshot(str(tmp_path)) == before
  assert checkpoint.read_newest(str(tmp_path / 'checkpoints' / 'best'), _arrays(0)) is None


def test_read_newest_skips_a_damaged_checkpoint_and_keeps_it(tmp_path, caplog):
  _saved(tmp_path).close()
  _flip_one_bit(_largest_array_file(tmp_path, 2))
  latest = str(tmp_path / 'checkpoints' / 'latest')
  epoch, _, _ = checkpoint.read_newest(latest, _arrays(0))
  assert epoch == 1 and 'latest/2 does not match its digest' in caplog.text
  assert checkpoint.committed_epochs(latest) == [2, 1]  # Reported, not deleted.
  _flip_one_bit(_largest_array_file(tmp_path, 1))
  with pytest.raises(RunFolderError, match=r'latest/2 does not match its digest .*; no intact '
                     'checkpoint is left in'):
    checkpoint.read_newest(latest, _arrays(0))


# ---- run folders written before the model state: BatchNorm statistics inside the params

def _bn_method(optimizer):
  """A one-tower method with non-trainable BatchNorm statistics, its fresh state, its loss."""
  tower, stats = layers.tower_init(jax.random.key(0), 3, (4,), 2)
  x = jax.random.normal(jax.random.key(1), (8, 3))

  def loss(variables, batch, step_input, tables):
    out, moments = layers.tower_train(variables['tower'], x, 1e-3)
    value = jnp.mean(jnp.square(out - 1.0))
    return value, ({'loss': value}, {'tower': moments})

  method = methods.Method(init=lambda key: {'tower': tower, layers.STATS: {'tower': stats}},
                          loss=loss, embed=None, optimizer=optimizer,
                          non_trainable=(layers.STATS,),
                          update_model_state=layers.batch_stats_update(0.25))
  return method, state_lib.train_state(method, method.init(None), optimizer), loss


@pytest.mark.parametrize('name', ['adam', 'momentum', 'adamw'])
def test_an_older_frozen_optimiser_layout_restores_as_the_state_its_steps_reached(tmp_path, name):
  """The older code path: the statistics in params, the gradient over everything, the
  optimiser a multi_transform that froze them, the moments blended after. Its state, saved
  in that layout, restores into exactly the state the shared update reaches."""
  optimizer = {'adam': optax.adam(0.1), 'momentum': optax.sgd(0.1, momentum=0.9),
               'adamw': optax.adamw(0.1, weight_decay=0.01)}[name]
  method, fresh, loss = _bn_method(optimizer)

  def labels(variables):
    return {k: jax.tree.map(lambda _, k=k: 'frozen' if k == layers.STATS else 'trained', v)
            for k, v in variables.items()}
  old_optimizer = optax.multi_transform({'trained': optimizer, 'frozen': optax.set_to_zero()},
                                        labels)

  @jax.jit
  def old_update(variables, opt_state):
    grads, (_, moments) = jax.grad(loss, has_aux=True)(variables, None, None, None)
    updates, opt_state = old_optimizer.update(grads, opt_state, variables)
    new = optax.apply_updates(variables, updates)
    stats = layers.blend_running_stats(variables[layers.STATS], moments, 0.25)
    return {**new, layers.STATS: stats}, opt_state

  old_variables = fresh.variables
  old_opt_state = old_optimizer.init(old_variables)
  state, update = fresh, jax.jit(step_lib.make_update(None, method))
  for _ in range(2):
    old_variables, old_opt_state = old_update(old_variables, old_opt_state)
    state, _ = update(state, None, None, None)
  chex.assert_trees_all_equal(state.variables, old_variables)
  store = checkpoint.Checkpoints(str(tmp_path))
  store.save(checkpoint.LATEST, 2, {'state': {'step': state.step, 'params': old_variables,
                                              'opt_state': old_opt_state},
                                    'best_params': old_variables}, {'epoch': 2})
  store.wait()
  epoch, arrays, meta = store.restore_newest(checkpoint.LATEST, *checkpoint.latest_like(fresh))
  store.close()
  assert epoch == 2 and meta == {'epoch': 2}
  chex.assert_trees_all_equal(arrays['state'], checkpoint.state_tree(state))
  chex.assert_trees_all_equal(arrays['best_params'], state.variables)


def test_an_older_layout_whose_optimiser_ignored_the_statistics_restores_too(tmp_path):
  """GAR's per-player Adam never held the statistics: only the params change layout."""
  method, fresh, _ = _bn_method(optax.adam(0.1))
  state, _ = jax.jit(step_lib.make_update(None, method))(fresh, None, None, None)
  old = {'step': state.step, 'params': state.variables, 'opt_state': state.opt_state}
  store = checkpoint.Checkpoints(str(tmp_path))
  store.save(checkpoint.LATEST, 1, {'state': old, 'best_params': state.variables},
             {'epoch': 1, 'best_epoch': 1})
  store.save(checkpoint.BEST, 1, {'params': state.variables}, {'epoch': 1})
  store.close()
  found = checkpoint.read_newest(str(tmp_path / 'checkpoints' / 'latest'),
                                 *checkpoint.latest_like(fresh))
  chex.assert_trees_all_equal(found[1]['state'], checkpoint.state_tree(state))
  # Serving reads the best variables, whose layout did not change; with the best checkpoint
  # gone, the older latest checkpoint's copy.
  chex.assert_trees_all_equal(checkpoint.restore_best_params(str(tmp_path), fresh),
                              (1, state.variables))
  for path in glob.glob(str(tmp_path / 'checkpoints' / 'best' / '*')):
    shutil.rmtree(path)
  chex.assert_trees_all_equal(checkpoint.restore_best_params(str(tmp_path), fresh),
                              (1, state.variables))


def test_a_state_without_model_state_keeps_the_tree_it_always_had():
  params = {'w': jnp.ones(3)}
  state = state_lib.TrainState(step=jnp.int32(0), params=params,
                               opt_state=optax.adam(0.1).init(params))
  assert set(checkpoint.state_tree(state)) == {'step', 'params', 'opt_state'}
  assert checkpoint.latest_like(state)[1] == ()
