import glob
import os

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from milk_jax import checkpoint
from milk_jax.errors import RunFolderError
from milk_jax.methods.milk import model
from tests.helpers import snapshot


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


def test_read_newest_reads_without_writing(tmp_path):
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
