import chex
import jax
import jax.numpy as jnp
import optax

from milk_jax import checkpoint
from milk_jax import model


def _tree(seed):
  params = model.init_params(jax.random.key(seed), 5, (4, 3), 2)
  return {'state': {'step': jnp.int32(seed), 'params': params,
                    'opt_state': optax.adam(1e-3).init(params)},
          'loop': {'epoch': seed, 'best_metric': 0.5 * seed, 'best_val': {'ndcg@20': 0.1}}}


def test_round_trip_keeps_latest_and_best_apart(tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  checkpoints.save(checkpoint.LATEST, 1, _tree(1))
  checkpoints.save(checkpoint.LATEST, 2, _tree(2))
  checkpoints.save(checkpoint.BEST, 1, _tree(1))
  checkpoints.close()

  reopened = checkpoint.Checkpoints(str(tmp_path))
  epoch, latest = reopened.restore(checkpoint.LATEST, _tree(0))
  assert epoch == 2
  chex.assert_trees_all_close(latest['state'], _tree(2)['state'])
  assert int(latest['loop']['epoch']) == 2
  epoch, best = reopened.restore(checkpoint.BEST, _tree(0))
  assert epoch == 1
  chex.assert_trees_all_close(best['state']['params'], _tree(1)['state']['params'])
  # Only the newest latest checkpoint is kept.
  assert sorted(p.name for p in (tmp_path / 'checkpoints' / 'latest').iterdir()
                if p.name.isdigit()) == ['2']
  reopened.close()


def test_restore_from_an_empty_directory_is_none(tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  assert checkpoints.restore(checkpoint.LATEST, _tree(0)) is None
  checkpoints.close()


def test_save_replaces_the_same_epoch_and_discard_empties(tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  checkpoints.save(checkpoint.BEST, 3, _tree(1))
  checkpoints.save(checkpoint.BEST, 3, _tree(2))
  epoch, tree = checkpoints.restore(checkpoint.BEST, _tree(0))
  assert epoch == 3
  chex.assert_trees_all_close(tree['state']['params'], _tree(2)['state']['params'])
  checkpoints.discard(checkpoint.BEST)
  assert checkpoints.restore(checkpoint.BEST, _tree(0)) is None
  checkpoints.close()
