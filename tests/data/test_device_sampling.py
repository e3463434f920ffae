"""Tests for milk_jax.data.device_sampling: the on-device epoch sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import data
from milk_jax.data import device_sampling


def hand_dataset(train_pairs, num_users=2, num_items=8, warm_items=(0, 1, 2, 3, 4)):
  """A catalogue with only the fields the sampler reads."""
  num_modalities = 2
  return data.Dataset(
      modality_names=('a', 'b'),
      features=tuple(np.zeros((num_items, 1), np.float32) for _ in range(num_modalities)),
      availability=np.ones((num_items, num_modalities), bool),
      num_users=num_users, num_items=num_items,
      train_pairs=np.asarray(train_pairs, np.int32),
      val_pairs=np.zeros((0, 2), np.int32), test_pairs=np.zeros((0, 2), np.int32),
      warm_items=np.asarray(warm_items, np.int32),
      val_items=np.zeros(0, np.int32), test_items=np.zeros(0, np.int32), source='hand')


def test_tables_hand_computed():
  # User 0 trained on warm items 1 and 3 (pool positions 1, 3); user 1 on 0, 1, 4.
  dataset = hand_dataset([(0, 3), (1, 4), (0, 1), (1, 0), (1, 1)])
  tables = device_sampling.sampler_tables(dataset, 'warm')
  np.testing.assert_array_equal(tables.user_offsets, [0, 2, 5])
  np.testing.assert_array_equal(tables.pool_items, [0, 1, 2, 3, 4])
  # q_i = p_i - i per user: (1 - 0, 3 - 1) and (0 - 0, 1 - 1, 4 - 2).
  np.testing.assert_array_equal(tables.shifted_positions, [1, 2, 0, 0, 2])
  assert device_sampling.search_steps(dataset) == 2


def test_nth_allowed_hand_computed():
  dataset = hand_dataset([(0, 3), (1, 4), (0, 1), (1, 0), (1, 1)])
  tables = device_sampling.sampler_tables(dataset, 'warm')
  steps = device_sampling.search_steps(dataset)
  # User 0 may get {0, 2, 4}; user 1 may get {2, 3}.
  users = jnp.array([0, 0, 0, 1, 1], jnp.int32)
  ranks = jnp.array([0, 1, 2, 0, 1], jnp.int32)
  np.testing.assert_array_equal(device_sampling.nth_allowed(tables, users, ranks, steps),
                                [0, 2, 4, 2, 3])
  # The 'all' pool adds the new items 5, 6, 7 after the warm ones.
  tables = device_sampling.sampler_tables(dataset, 'all')
  np.testing.assert_array_equal(
      device_sampling.nth_allowed(tables, jnp.array([0, 0, 1], jnp.int32),
                                  jnp.array([3, 5, 3], jnp.int32), steps), [5, 7, 6])


def test_negatives_are_uniform_over_the_allowed_items():
  dataset = hand_dataset([(0, 3), (1, 4), (0, 1), (1, 0), (1, 1)])
  tables = device_sampling.sampler_tables(dataset, 'warm')
  users = jnp.zeros(30000, jnp.int32)
  drawn = np.asarray(device_sampling.negatives(jax.random.key(0), tables, users,
                                               device_sampling.search_steps(dataset)))
  counts = np.bincount(drawn, minlength=5)
  assert counts[1] == counts[3] == 0
  # Each of the 3 allowed items has probability 1/3; 4 standard deviations is ~300.
  np.testing.assert_allclose(counts[[0, 2, 4]], 10000, atol=330)


def test_complement_table_hand_computed():
  dataset = hand_dataset([(0, 3), (1, 4), (0, 1), (1, 0), (1, 1)])
  # Row u: the pool minus u's items in pool order, then u's own items as padding.
  np.testing.assert_array_equal(device_sampling.complement_table(dataset, 'warm'),
                                [[0, 2, 4, 1, 3], [2, 3, 0, 1, 4]])
  np.testing.assert_array_equal(device_sampling.complement_table(dataset, 'all'),
                                [[0, 2, 4, 5, 6, 7, 1, 3], [2, 3, 5, 6, 7, 0, 1, 4]])


def test_complement_table_is_left_out_when_too_large(monkeypatch):
  dataset = hand_dataset([(0, 3), (1, 4), (0, 1), (1, 0), (1, 1)])
  monkeypatch.setattr(device_sampling, 'DENSE_COMPLEMENT_ENTRIES', 2 * 5 - 1)
  assert device_sampling.complement_table(dataset, 'warm') is None
  monkeypatch.setattr(device_sampling, 'DENSE_COMPLEMENT_ENTRIES', 2 * 5)
  assert device_sampling.complement_table(dataset, 'warm').shape == (2, 5)


@pytest.mark.parametrize('pool', ['warm', 'all'])
def test_complement_draws_are_the_same_with_and_without_the_table(pool):
  dataset = hand_dataset([(0, 3), (1, 4), (0, 1), (1, 0), (1, 1)])
  tables = device_sampling.sampler_tables(dataset, pool)
  dense = jnp.asarray(device_sampling.complement_table(dataset, pool))
  rows = jnp.tile(jnp.array([[0], [1]], jnp.int32), (1, 4000))  # (2, 4000): any shape.
  draw = jax.jit(device_sampling.complement_draws)
  looked_up = np.asarray(draw(jax.random.key(1), tables, rows, dense))
  searched = np.asarray(draw(jax.random.key(1), tables, rows))
  np.testing.assert_array_equal(looked_up, searched)
  # Never a row's own item; every allowed item drawn.
  assert set(looked_up[0]) == ({0, 2, 4} if pool == 'warm' else {0, 2, 4, 5, 6, 7})
  assert set(looked_up[1]) == ({2, 3} if pool == 'warm' else {2, 3, 5, 6, 7})
  # The same key gives negatives' draws too (same rank stream, exact search).
  np.testing.assert_array_equal(
      searched, device_sampling.negatives(jax.random.key(1), tables, rows,
                                          device_sampling.search_steps(dataset)))


def test_a_user_with_the_whole_pool_is_refused():
  dataset = hand_dataset([(0, i) for i in range(5)])
  with pytest.raises(data.DataError, match='every item'):
    device_sampling.sampler_tables(dataset, 'warm')
  device_sampling.sampler_tables(dataset, 'all')  # New items remain as negatives.


@pytest.mark.parametrize('batch_size', [7, 64, 5000])
def test_epoch_triples_match_the_host_contract(batch_size, data_config, as_set):
  dataset = data.load_dataset(data_config())
  n = len(dataset.train_pairs)
  tables = device_sampling.sampler_tables(dataset, 'warm')
  triples = jax.jit(device_sampling.epoch_triples, static_argnums=(2, 3))(
      jax.random.key(3), tables, batch_size, device_sampling.search_steps(dataset))
  triples = jax.tree.map(np.asarray, triples)
  steps = -(-n // batch_size)
  for array in triples.values():
    assert array.shape == (steps, batch_size) and array.dtype == np.int32
  users, positives, negatives = triples['users'], triples['positives'], triples['negatives']
  pairs = np.stack([users.ravel(), positives.ravel()], 1)
  # Every pair exactly once in the first n entries, then the fill-up.
  assert np.unique(pairs[:n], axis=0).shape[0] == n
  assert as_set(pairs) == as_set(dataset.train_pairs)
  assert np.isin(negatives, dataset.warm_items).all()
  assert not as_set(np.stack([users.ravel(), negatives.ravel()], 1)) & as_set(
      dataset.train_pairs)
