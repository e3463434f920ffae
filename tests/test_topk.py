"""milk_jax/topk.py: chunked top-k equals one sort over all items, ties and exclusions included."""

import numpy as np
import pytest

from milk_jax import topk


def _reference(users, items, k, excluded=None):
  """Numpy: sort every item at once; ties to the lower index; excluded pairs at -inf."""
  scores = (users @ items.T).astype(np.float64)
  if excluded is not None:
    scores[excluded] = -np.inf
  order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
  top_scores = np.take_along_axis(scores, order, axis=1)
  return np.where(np.isfinite(top_scores), order, -1)


@pytest.mark.parametrize('item_chunk,user_chunk', [(7, 3), (64, 64), (5, 1)])
def test_chunks_give_the_top_k_of_all_items(item_chunk, user_chunk):
  rng = np.random.default_rng(0)
  # Small integer vectors: exact float scores with many ties.
  users = rng.integers(-2, 3, size=(11, 4)).astype(np.float32)
  items = rng.integers(-2, 3, size=(40, 4)).astype(np.float32)
  ranking = topk.TopK(users, k=6, user_chunk=user_chunk)
  for start in range(0, len(items), item_chunk):
    ranking.add(items[start:start + item_chunk], start, item_chunk)
  found, scores = ranking.result()
  np.testing.assert_array_equal(found, _reference(users, items, 6))
  np.testing.assert_array_equal(scores, np.take_along_axis(users @ items.T, found, axis=1))


def test_excluded_pairs_never_appear_and_short_lists_are_padded():
  rng = np.random.default_rng(1)
  users = rng.normal(size=(5, 3)).astype(np.float32)
  items = rng.normal(size=(6, 3)).astype(np.float32)
  excluded = np.zeros((5, 6), bool)
  excluded[0, :] = True  # User 0 has seen everything: no candidate at all.
  excluded[1, [0, 2, 4]] = True
  excluded[2, 5] = True
  ranking = topk.TopK(users, k=4, user_chunk=2)
  for start in (0, 4):
    rows, cols = np.nonzero(excluded[:, start:start + 4])
    ranking.add(items[start:start + 4], start, 4, seen=(rows, cols))
  found, scores = ranking.result()
  np.testing.assert_array_equal(found, _reference(users, items, 4, excluded))
  assert (found[0] == -1).all() and np.isneginf(scores[0]).all()
  assert (found[1, 3] == -1)  # Three candidates left for user 1.


def test_padding_rounds_up_to_few_sizes_within_the_chunk():
  assert [topk.padded_items(n, 32768) for n in (1, 256, 300, 2000, 3000, 4097, 10000, 32768)] \
      == [256, 256, 512, 2048, 4096, 8192, 12288, 32768]
  # Chunks not a multiple of 256 are padded whole, as before (another rounding otherwise).
  assert topk.padded_items(3000, 10000) == 10000 and topk.padded_items(5, 7) == 7
  assert topk.padded_items(3000, 8192) == 4096
  sizes = {topk.padded_items(n, 32768) for n in range(1, 32769)}
  assert len(sizes) == 12


@pytest.mark.parametrize('num_items,item_chunk,dim', [(2000, 32768, 64), (3000, 12288, 65),
                                                     (21000, 8192, 64)])
def test_small_padding_ranks_as_the_whole_chunk_bit_for_bit(monkeypatch, num_items, item_chunk,
                                                            dim):
  rng = np.random.default_rng(2)
  # dim 64 is where XLA:CPU rounds a 10000-row chunk's scores unlike an 8192-row one's.
  users = rng.normal(size=(300, dim)).astype(np.float32)
  items = rng.normal(size=(num_items, dim)).astype(np.float32)
  items[1::7] = items[::7][:len(items[1::7])]  # Duplicates: ties to the lower index.
  seen_users = rng.integers(0, 300, 500)
  seen_items = rng.integers(0, min(num_items, item_chunk), 500)

  def rank():
    ranking = topk.TopK(users, k=50, user_chunk=128)
    for start in range(0, num_items, item_chunk):
      chunk = items[start:start + item_chunk]
      inside = seen_items < len(chunk)
      ranking.add(chunk, start, item_chunk, seen=(seen_users[inside], seen_items[inside]))
    return ranking.result()

  found, scores = rank()
  monkeypatch.setattr(topk, 'padded_items', lambda n, chunk_size: chunk_size)  # As before.
  whole_found, whole_scores = rank()
  np.testing.assert_array_equal(found, whole_found)
  np.testing.assert_array_equal(scores, whole_scores)
