import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import evaluate


def _setup():
  # Scores of user 0 over items 0..4 are 5, 4, 3, 2, 1 (rank = item id).
  users = jnp.array([[1.0], [-1.0]])
  items = jnp.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
  return users, items


def test_hand_computed_metrics():
  users, items = _setup()
  # User 0 holds out items 1 and 4 (ranks 2 and 5). User 1 ranks in reverse: item 4 first;
  # it holds out item 0 (rank 5).
  pairs = np.array([[0, 1], [0, 4], [1, 0]])
  m = evaluate.rank_metrics(users, items, pairs, np.arange(5), ks=(1, 2, 5), user_batch_size=1)
  assert m['num_users'] == 2
  np.testing.assert_allclose(m['recall@1'], 0.0)
  np.testing.assert_allclose(m['recall@2'], (0.5 + 0.0) / 2)
  np.testing.assert_allclose(m['recall@5'], 1.0)
  ndcg2_user0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
  np.testing.assert_allclose(m['ndcg@2'], ndcg2_user0 / 2, rtol=1e-6)
  idcg = 1 + 1 / np.log2(3)
  ndcg5_user0 = (1 / np.log2(3) + 1 / np.log2(6)) / idcg
  ndcg5_user1 = (1 / np.log2(6)) / 1.0
  np.testing.assert_allclose(m['ndcg@5'], (ndcg5_user0 + ndcg5_user1) / 2, rtol=1e-6)
  np.testing.assert_allclose(m['precision@2'], (1 / 2 + 0) / 2)
  np.testing.assert_allclose(m['hr@2'], 0.5)
  np.testing.assert_allclose(m['hr@5'], 1.0)


def test_candidates_restrict_the_ranking():
  users, items = _setup()
  # Only items 3 and 4 compete: user 0 ranks 3 then 4, so held-out item 4 is at rank 2.
  pairs = np.array([[0, 4], [0, 1]])  # item 1 is not a candidate: ignored.
  m = evaluate.rank_metrics(users, items, pairs, np.array([3, 4]), ks=(1, 2))
  np.testing.assert_allclose(m['recall@1'], 0.0)
  np.testing.assert_allclose(m['recall@2'], 1.0)
  np.testing.assert_allclose(m['ndcg@2'], 1 / np.log2(3))


def test_batching_does_not_change_results():
  rng = np.random.default_rng(0)
  users = jnp.asarray(rng.normal(size=(50, 8)), jnp.float32)
  items = jnp.asarray(rng.normal(size=(40, 8)), jnp.float32)
  pairs = np.stack([rng.integers(0, 50, 300), rng.integers(0, 40, 300)], axis=1)
  candidates = np.arange(10, 40)
  a = evaluate.rank_metrics(users, items, pairs, candidates, (5, 10, 50), user_batch_size=7)
  b = evaluate.rank_metrics(users, items, pairs, candidates, (5, 10, 50), user_batch_size=64)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5)


def test_perfect_and_empty_rankings():
  users = jnp.eye(3)
  items = jnp.eye(3)
  m = evaluate.rank_metrics(users, items, np.array([[0, 0], [1, 1], [2, 2]]), np.arange(3), (1,))
  assert m['recall@1'] == pytest.approx(1.0) and m['ndcg@1'] == pytest.approx(1.0)
  empty = evaluate.rank_metrics(users, items, np.zeros((0, 2), int), np.arange(3), (1,))
  assert empty['num_users'] == 0 and empty['recall@1'] == 0.0


def test_metrics_by_group():
  users, items = _setup()
  num_missing = np.array([0, 1, 0, 1, 2])
  # User 0 ranks items 0,1,2,3,4; user 1 ranks them in reverse.
  pairs = np.array([[0, 1], [0, 2], [1, 4]])
  groups = evaluate.rank_metrics_by_group(users, items, pairs, np.arange(5), num_missing, (1, 2))
  assert sorted(groups) == ['full', 'missing_1', 'missing_2']
  # All groups share one ranking of the 5 candidates: item 1 (missing_1) is at rank 2,
  # item 2 (full) at rank 3, item 4 (missing_2) first for user 1.
  assert groups['missing_1']['recall@1'] == pytest.approx(0.0)
  assert groups['missing_1']['recall@2'] == pytest.approx(1.0)
  assert groups['full']['recall@2'] == pytest.approx(0.0)
  assert groups['missing_2']['recall@1'] == pytest.approx(1.0)
  assert groups['missing_2']['num_users'] == 1 and groups['full']['num_users'] == 1


def test_metrics_within_group_rank_only_the_group():
  users, items = _setup()
  num_missing = np.array([0, 1, 0, 1, 0])
  # User 0 ranks items 0..4 in order and holds out item 3 (missing_1); user 1 ranks them in
  # reverse (4, 3, 2, 1, 0) and holds out item 0 (full).
  pairs = np.array([[0, 3], [1, 0]])
  shared = evaluate.rank_metrics_by_group(users, items, pairs, np.arange(5), num_missing, (5,))
  within = evaluate.rank_metrics_within_group(users, items, pairs, np.arange(5), num_missing,
                                              (5,))
  # One shared ranking: item 3 is 4th for user 0, item 0 is 5th for user 1.
  assert shared['missing_1']['ndcg@5'] == pytest.approx(1 / np.log2(5))
  assert shared['full']['ndcg@5'] == pytest.approx(1 / np.log2(6))
  # Within missing_1 user 0 ranks items 1, 3: item 3 is 2nd; within full user 1 ranks
  # items 4, 2, 0: item 0 is 3rd.
  assert within['missing_1']['ndcg@5'] == pytest.approx(1 / np.log2(3))
  assert within['full']['ndcg@5'] == pytest.approx(1 / np.log2(4))
  assert within['missing_1']['num_users'] == 1 and within['full']['num_users'] == 1
  assert within['missing_1']['recall@5'] == pytest.approx(1.0)


def test_item_maps_rank_calibrated_scores():
  users, items = _setup()
  # Item 4's score for user 0 is 1; scale 10 and offset 0.5 make it 10.5, above item 0's 5.
  scale = np.ones(5, np.float32)
  offset = np.zeros(5, np.float32)
  scale[4], offset[4] = 10.0, 0.5
  pairs = np.array([[0, 4]])
  plain = evaluate.rank_metrics(users, items, pairs, np.arange(5), (1,))
  calibrated = evaluate.rank_metrics(users, items, pairs, np.arange(5), (1,),
                                     item_maps=(scale, offset))
  assert plain['hr@1'] == 0.0 and calibrated['hr@1'] == 1.0


def test_identity_maps_give_the_uncalibrated_numbers_bit_for_bit():
  rng = np.random.default_rng(1)
  users = jnp.asarray(rng.normal(size=(30, 8)), jnp.float32)
  items = jnp.asarray(rng.normal(size=(40, 8)), jnp.float32)
  pairs = np.stack([rng.integers(0, 30, 200), rng.integers(10, 40, 200)], axis=1)
  num_missing = rng.integers(0, 3, 40)
  identity = (np.ones(40, np.float32), np.zeros(40, np.float32))
  for grouped in (evaluate.rank_metrics_by_group, evaluate.rank_metrics_within_group):
    plain = grouped(users, items, pairs, np.arange(10, 40), num_missing, (5, 20), 7)
    mapped = grouped(users, items, pairs, np.arange(10, 40), num_missing, (5, 20), 7, identity)
    assert plain == mapped


def test_candidates_all_new_or_the_splits_own(small_dataset):
  dataset = small_dataset
  all_new = evaluate.candidate_items(dataset, 'test', 'all_new')
  np.testing.assert_array_equal(all_new, np.union1d(dataset.val_items, dataset.test_items))
  np.testing.assert_array_equal(evaluate.candidate_items(dataset, 'val', 'split'),
                                dataset.val_items)
  np.testing.assert_array_equal(evaluate.candidate_items(dataset, 'test', 'split'),
                                dataset.test_items)


def _random_case(seed, num_users=60, num_items=50):
  rng = np.random.default_rng(seed)
  users = jnp.asarray(rng.integers(-2, 3, size=(num_users, 6)), jnp.float32)  # Many ties.
  items = jnp.asarray(rng.integers(-2, 3, size=(num_items, 6)), jnp.float32)
  pairs = np.stack([rng.integers(0, num_users, 150), rng.integers(0, num_items, 150)], axis=1)
  num_missing = rng.integers(0, 3, num_items)
  num_missing[:3] = 3  # A group whose items are never candidates: num_users 0.
  pairs[:5, 1] = np.arange(5)
  maps = (rng.uniform(0.5, 2.0, num_items).astype(np.float32),
          rng.normal(size=num_items).astype(np.float32))
  return users, items, pairs, num_missing, maps


@pytest.mark.parametrize('user_batch_size', [1, 7, 64])
@pytest.mark.parametrize('calibrated', [False, True])
def test_shared_ranking_equals_a_ranking_per_group_bit_for_bit(user_batch_size, calibrated):
  users, items, pairs, num_missing, maps = _random_case(2)
  maps = maps if calibrated else None
  candidates = np.arange(3, 50)
  plain, groups = evaluate.rank_metrics_and_groups(users, items, pairs, candidates, num_missing,
                                                   (1, 5, 20), user_batch_size, maps)
  assert plain == evaluate.rank_metrics(users, items, pairs, candidates, (1, 5, 20),
                                        user_batch_size, maps)
  # Straightforward: each group's held-out pairs ranked on their own.
  separate = {evaluate.group_name(int(g)): evaluate.rank_metrics(
      users, items, pairs[num_missing[pairs[:, 1]] == g], candidates, (1, 5, 20),
      user_batch_size, maps) for g in np.unique(num_missing[pairs[:, 1]])}
  assert groups == separate
  assert groups['missing_3']['num_users'] == 0 and groups['full']['num_users'] > 7
  assert evaluate.rank_metrics_by_group(users, items, pairs, candidates, num_missing,
                                        (1, 5, 20), user_batch_size, maps) == separate


def test_held_out_metrics_equal_the_three_evaluations(small_dataset, make_config):
  config = make_config()
  config.eval.user_batch_size = 16
  rng = np.random.default_rng(3)
  users = jnp.asarray(rng.normal(size=(small_dataset.num_users, 8)), jnp.float32)
  items = jnp.asarray(rng.normal(size=(small_dataset.num_items, 8)), jnp.float32)
  held_out = evaluate.held_out_metrics(config.eval, users, items, small_dataset)
  for key, flags in (('test', {}), ('test_by_group', {'by_group': True}),
                     ('test_within_group', {'within_group': True})):
    assert held_out[key] == evaluate.evaluate_split(config.eval, users, items, small_dataset,
                                                    'test', **flags)
