"""An epoch's shuffled triples drawn on the device, inside the jitted epoch.

The same distribution as `sampling.epoch_triples` (the host reference):
every training pair once in a random order, the last batch filled up from
further permutations, and one negative per entry drawn uniformly from the
pool minus the user's training items. Only the random streams differ.

Negatives need no rejection loop. For a user whose training items sit at
sorted pool positions p_0 < ... < p_{n-1}, let q_i = p_i - i. A uniform r in
[0, P - n) maps to the r-th allowed position r + #{i : q_i <= r}, so one draw
per entry is exact; the count is a fixed-length binary search over the
user's segment of q, the same program on every entry.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from milk_jax.data import sampling
from milk_jax.data.dataset import Dataset
from milk_jax.data.errors import DataError


class SamplerTables(NamedTuple):
  """Device arrays the sampler reads; built once per run by `sampler_tables`."""
  train_pairs: jax.Array  # (n, 2) int32 (user, item).
  pool_items: jax.Array  # (P,) int32 item ids negatives are drawn from, sorted.
  user_offsets: jax.Array  # (U + 1,) int32: user u's entries are [offsets[u], offsets[u+1]).
  shifted_positions: jax.Array  # (n,) int32 q_i = p_i - i within each user's segment.


def sampler_tables(dataset: Dataset, pool: str = 'warm') -> SamplerTables:
  """The sampler's tables for `dataset` and a negative pool ('warm' or 'all').

  Raises DataError when a user has trained on the whole pool (no negative exists).
  """
  pool_items = sampling.negative_pool(dataset, pool)
  if not pool_items.size:
    raise DataError(f'{dataset.source}: the negative pool {pool!r} is empty')
  keys = dataset.train_keys  # Sorted by user, then item.
  users = keys // dataset.num_items
  items = keys - users * dataset.num_items
  positions = np.searchsorted(pool_items, items)  # Training items are warm, so in every pool.
  counts = np.bincount(users, minlength=dataset.num_users)
  full = np.flatnonzero(counts >= len(pool_items))
  if full.size:
    raise DataError(f'{dataset.source}: user {full[0]} has trained on every item of the '
                    f'negative pool ({len(pool_items)} items); no negative exists')
  offsets = np.concatenate([[0], np.cumsum(counts)])
  rank_in_user = np.arange(len(keys)) - offsets[users]
  return SamplerTables(
      train_pairs=jnp.asarray(np.stack([users, items], axis=1).astype(np.int32)),
      pool_items=jnp.asarray(pool_items.astype(np.int32)),
      user_offsets=jnp.asarray(offsets.astype(np.int32)),
      shifted_positions=jnp.asarray((positions - rank_in_user).astype(np.int32)))


def search_steps(dataset: Dataset) -> int:
  """Binary-search iterations that cover the largest user history (static)."""
  counts = np.bincount(dataset.train_pairs[:, 0].astype(np.int64), minlength=1)
  return max(1, math.ceil(math.log2(int(counts.max()) + 1)))


def nth_allowed(tables: SamplerTables, users: jax.Array, r: jax.Array,
                num_search_steps: int) -> jax.Array:
  """The item at allowed rank `r` of each user's pool minus their training items.

  Args:
    users, r: int32 of one shape, 0 <= r < pool size - the user's training items.
  Returns:
    Item ids shaped like `users`.
  """
  lo = tables.user_offsets[users]
  last = tables.shifted_positions.shape[0] - 1

  def narrow(_, bounds):  # Upper bound of r in q[lo:hi): first index with q > r.
    lo, hi = bounds
    mid = (lo + hi) // 2
    q = tables.shifted_positions[jnp.clip(mid, 0, last)]
    searching = lo < hi
    return (jnp.where(searching & (q <= r), mid + 1, lo),
            jnp.where(searching & (q > r), mid, hi))

  first_above, _ = jax.lax.fori_loop(0, num_search_steps, narrow,
                                     (lo, tables.user_offsets[users + 1]))
  return tables.pool_items[r + (first_above - lo)]


def _allowed_ranks(key: jax.Array, tables: SamplerTables, users: jax.Array) -> jax.Array:
  """A uniform rank in [0, pool size - the user's training items) per entry of `users`."""
  history = tables.user_offsets[users + 1] - tables.user_offsets[users]
  return jax.random.randint(key, users.shape, 0, tables.pool_items.shape[0] - history)


def negatives(key: jax.Array, tables: SamplerTables, users: jax.Array,
              num_search_steps: int) -> jax.Array:
  """One exact uniform negative per entry of `users` (any shape), int32."""
  return nth_allowed(tables, users, _allowed_ranks(key, tables, users), num_search_steps)


# --- The complement sampler of the methods that draw several negatives per row ---------------
#
# CLCRec and CCFCRec draw many items (or users) per row, each uniform over the pool minus
# the row's training set, inside their loss, where the dataset's largest history is unknown.
# Their tables travel in `Tables.extras`; a dense (rows x pool) table, when it fits, turns
# each draw's binary search into one lookup.

DENSE_COMPLEMENT_ENTRIES = 1 << 24  # int32 entries: a dense table of at most 64 MiB.


def complement_table(dataset: Dataset, pool: str = 'warm') -> np.ndarray | None:
  """Host side: (U, P) int32, row u = the pool minus u's training items, in pool order.

  The row's last history(u) entries (u's own training items) are padding: a
  rank r < P - history(u) reads only the allowed prefix. None when U * P is
  over DENSE_COMPLEMENT_ENTRIES (the draws then search instead).
  """
  pool_items = sampling.negative_pool(dataset, pool)
  if dataset.num_users * pool_items.size > DENSE_COMPLEMENT_ENTRIES:
    return None
  users = dataset.train_keys // dataset.num_items
  items = dataset.train_keys - users * dataset.num_items
  trained = np.zeros((dataset.num_users, pool_items.size), bool)
  trained[users, np.searchsorted(pool_items, items)] = True
  # A stable sort puts each row's allowed (False) positions first, in pool order.
  return pool_items[np.argsort(trained, axis=1, kind='stable')].astype(np.int32)


_COMPLEMENT_FIELDS = ('pool_items', 'user_offsets', 'shifted_positions')
_DENSE_FIELD = 'allowed_items'


def complement_extras(dataset: Dataset, pool: str, prefix: str) -> dict[str, np.ndarray]:
  """Host side: the users' complement tables for `pool`, as `Tables.extras` named prefix + field.

  pool_items, user_offsets and shifted_positions (`sampler_tables`), plus
  allowed_items (`complement_table`) when it fits.
  """
  tables = sampler_tables(dataset, pool)
  extras = {prefix + name: np.asarray(getattr(tables, name)) for name in _COMPLEMENT_FIELDS}
  dense = complement_table(dataset, pool)
  if dense is not None:
    extras[prefix + _DENSE_FIELD] = dense
  return extras


def complement_draws_from_extras(key: jax.Array, extras, prefix: str,
                                 rows: jax.Array) -> jax.Array:
  """`complement_draws` over the tables `complement_extras` stored under `prefix`."""
  tables = SamplerTables(train_pairs=None,
                         **{name: extras[prefix + name] for name in _COMPLEMENT_FIELDS})
  # The dense table's presence is static: the dict's keys are the pytree's structure.
  return complement_draws(key, tables, rows, extras.get(prefix + _DENSE_FIELD))


def complement_draws(key: jax.Array, tables: SamplerTables, rows: jax.Array,
                     dense: jax.Array | None = None) -> jax.Array:
  """One entry per element of `rows` (any shape), uniform over the pool minus the row's set.

  `tables` may hold any CSR sets (users' items, or items' users); `dense` is
  `complement_table`'s lookup for the same sets. With or without it, the same
  key gives the same draws. Without it, the search covers any segment of
  `tables` (a static bound from its length).
  """
  r = _allowed_ranks(key, tables, rows)
  if dense is not None:
    return dense.at[rows, r].get(mode='promise_in_bounds')
  steps = max(1, math.ceil(math.log2(tables.shifted_positions.shape[0] + 1)))
  return nth_allowed(tables, rows, r, steps)


def epoch_triples(key: jax.Array, tables: SamplerTables, batch_size: int,
                  num_search_steps: int) -> dict[str, jax.Array]:
  """{'users', 'positives', 'negatives'}, each (steps, batch_size) int32; jit-friendly."""
  num_pairs = tables.train_pairs.shape[0]
  steps = sampling.steps_per_epoch(num_pairs, batch_size)
  needed = steps * batch_size
  order_key, negative_key = jax.random.split(key)
  permutation_keys = jax.random.split(order_key, math.ceil(needed / num_pairs))
  order = jnp.concatenate([jax.random.permutation(k, num_pairs)
                           for k in permutation_keys])[:needed]
  pairs = tables.train_pairs[order].reshape(steps, batch_size, 2)
  users = pairs[..., 0]
  return {'users': users, 'positives': pairs[..., 1],
          'negatives': negatives(negative_key, tables, users, num_search_steps)}
