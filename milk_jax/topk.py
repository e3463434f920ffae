"""Each user's top-k items by inner product, over any number of items, in bounded memory.

Items arrive in chunks, padded to a few sizes (`padded_items`: a small
catalogue is not scored as a whole chunk, and few programs serve every
chunk); users are ranked in chunks too. For each (user chunk, item chunk) the
scores are computed and cut to k on device, then merged with the best k so
far. Memory is one (user_chunk, item_chunk) score block plus the (users, k)
running result, whatever the number of items. Ties go to the lower item
index, as one top-k over all items would.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=('k',))
def _merge(best_scores: jax.Array, best_items: jax.Array, users: jax.Array, items: jax.Array,
           num_valid: jax.Array, first_item: jax.Array, seen_rows: jax.Array,
           seen_cols: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Merge one item chunk into the running top-k of one user chunk.

  Args:
    best_scores, best_items: (Bu, k) running top-k (-inf / -1 where empty).
    users: (Bu, d); items: (Bi, d), rows >= num_valid are padding.
    first_item: global index of items[0].
    seen_rows, seen_cols: (S,) (user row, item row) pairs left out; rows = Bu are padding.
  """
  scores = users @ items.T
  columns = jnp.arange(items.shape[0])
  scores = jnp.where(columns[None, :] < num_valid, scores, -jnp.inf)
  scores = scores.at[seen_rows, seen_cols].set(-jnp.inf, mode='drop')
  chunk_scores, chunk_items = jax.lax.top_k(scores, min(k, items.shape[0]))
  chunk_items = jnp.where(jnp.isfinite(chunk_scores), chunk_items + first_item, -1)
  scores = jnp.concatenate([best_scores, chunk_scores], axis=1)
  indices = jnp.concatenate([best_items, chunk_items], axis=1)
  top_scores, position = jax.lax.top_k(scores, k)
  return top_scores, jnp.take_along_axis(indices, position, axis=1)


def _padded_length(n: int) -> int:
  """Next power of two (at least 1): few distinct shapes, few compilations."""
  return 1 << max(n - 1, 0).bit_length()


PADDING_STEP = 4096  # Chunks of more items than this are padded to a multiple of it.
MIN_PADDED = 256  # The fewest rows a chunk is padded to.


def padded_items(n: int, chunk_size: int) -> int:
  """Rows a chunk of n <= chunk_size items is scored with.

  The next power of two (at least MIN_PADDED) up to PADDING_STEP, then the
  next multiple of it, at most chunk_size: 2k items cost 2k rows, not a whole
  chunk, and at most ~12 shapes compile per chunk size. Only when chunk_size is
  a multiple of MIN_PADDED, though, else the whole chunk: XLA:CPU's matrix
  product rounds a real row's scores the same for every padded length that is
  a multiple of 256 (so as the default 32768-item chunk, tests/test_topk.py),
  but not always as for a length such as 10000.
  """
  if chunk_size % MIN_PADDED:
    return int(chunk_size)
  step = min(PADDING_STEP, max(MIN_PADDED, _padded_length(n)))
  return min(int(chunk_size), -(-n // step) * step)


class TopK:
  """The running top-k of a fixed set of users over item chunks added one by one."""

  def __init__(self, user_vectors: np.ndarray, k: int, user_chunk: int = 2048):
    self.k = int(k)
    self.num_users = int(user_vectors.shape[0])
    self.user_chunk = max(1, min(int(user_chunk), self.num_users))
    num_chunks = -(-self.num_users // self.user_chunk)
    padded = np.zeros((num_chunks * self.user_chunk, user_vectors.shape[1]), np.float32)
    padded[:self.num_users] = user_vectors
    self._users = [jnp.asarray(padded[c * self.user_chunk:(c + 1) * self.user_chunk])
                   for c in range(num_chunks)]
    self._scores = [jnp.full((self.user_chunk, self.k), -jnp.inf) for _ in self._users]
    self._items = [jnp.full((self.user_chunk, self.k), -1, jnp.int32) for _ in self._users]

  def add(self, item_vectors: np.ndarray, first_item: int, chunk_size: int,
          seen: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Rank `item_vectors` (n <= chunk_size, d), global indices first_item...

    Args:
      chunk_size: the most items a chunk of this ranking holds; the chunk is
        padded to `padded_items(n, chunk_size)` rows.
      seen: (user rows, item rows within this chunk) to leave out, e.g. a
        user's training items when warm items are ranked.
    """
    n = item_vectors.shape[0]
    padded = np.zeros((padded_items(n, chunk_size), item_vectors.shape[1]), np.float32)
    padded[:n] = item_vectors
    items = jnp.asarray(padded)
    seen_users, seen_items = (np.zeros(0, np.int64),) * 2 if seen is None else seen
    for c, users in enumerate(self._users):
      rows, cols = _chunk_pairs(seen_users, seen_items, c * self.user_chunk, self.user_chunk)
      self._scores[c], self._items[c] = _merge(
          self._scores[c], self._items[c], users, items, jnp.int32(n), jnp.int32(first_item),
          jnp.asarray(rows), jnp.asarray(cols), k=self.k)

  def result(self) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, k) int64 global index or -1, scores (U, k) float32 or -inf), best first."""
    items = np.concatenate([np.asarray(i) for i in self._items])[:self.num_users]
    scores = np.concatenate([np.asarray(s) for s in self._scores])[:self.num_users]
    return items.astype(np.int64), scores


def _chunk_pairs(users: np.ndarray, items: np.ndarray, first_user: int, user_chunk: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """The pairs of one user chunk, rows relative to it, padded with row = user_chunk (dropped)."""
  inside = (users >= first_user) & (users < first_user + user_chunk)
  length = _padded_length(int(inside.sum()))
  rows = np.full(length, user_chunk, np.int32)
  cols = np.zeros(length, np.int32)
  rows[:inside.sum()] = users[inside] - first_user
  cols[:inside.sum()] = items[inside]
  return rows, cols
