"""Negative sampling and the (user, positive, negative) triples of an epoch.

Negatives are uniform over a pool of items and never an item the user has
in the training pairs. The pool is the warm items by default: drawing from
all items (the authors' choice) shows the model new items' features during
training, a leak into evaluation.
"""

import math

import numpy as np

from milk_jax.data.dataset import Dataset
from milk_jax.data.dataset import NEGATIVE_POOLS
from milk_jax.data.errors import DataError

# Rejection rounds before the exact per-user fallback. A collision has
# probability (user's train items) / (pool size), so a handful of rounds
# clears nearly everything; only users with almost the whole pool in their
# history reach the fallback.
_REJECTION_ROUNDS = 16


def negative_pool(dataset: Dataset, pool: str) -> np.ndarray:
  """Sorted int64 item ids negatives are drawn from: 'warm' or 'all' items."""
  if pool == 'warm':
    return dataset.warm_items.astype(np.int64)
  if pool == 'all':
    return np.arange(dataset.num_items, dtype=np.int64)
  raise DataError(f'config.data.negatives={pool!r}: unknown, expected one of {NEGATIVE_POOLS}')


def is_trained(dataset: Dataset, users: np.ndarray, items: np.ndarray) -> np.ndarray:
  """Bool, same shape as `users`: is (user, item) a training pair?"""
  keys = dataset.train_keys
  query = users.astype(np.int64) * dataset.num_items + items
  position = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
  return keys[position] == query if len(keys) else np.zeros(query.shape, bool)


def _exact_negatives(rng: np.random.Generator, dataset: Dataset, users: np.ndarray,
                     pool_items: np.ndarray) -> np.ndarray:
  """One uniform draw from pool minus the user's training items, per entry; a loop per user.

  The same distribution as rejection sampling, for the few users it is slow on.
  """
  keys = dataset.train_keys
  negatives = np.empty(len(users), np.int64)
  for user in np.unique(users):
    lo, hi = np.searchsorted(keys, [user * dataset.num_items, (user + 1) * dataset.num_items])
    allowed = np.setdiff1d(pool_items, keys[lo:hi] - user * dataset.num_items,
                           assume_unique=True)
    if not allowed.size:
      raise DataError(f'{dataset.source}: user {user} has trained on every item of the '
                      f'negative pool ({len(pool_items)} items); no negative exists')
    where = users == user
    negatives[where] = rng.choice(allowed, size=int(where.sum()))
  return negatives


def sample_negatives(rng: np.random.Generator, dataset: Dataset, users: np.ndarray,
                     pool: str = 'warm') -> np.ndarray:
  """One negative item per entry of `users`.

  Vectorised rejection sampling: draw for everyone, then redraw only the
  entries that hit one of the user's training items.

  Args:
    users: int array of any shape.
    pool: 'warm' (warm items) or 'all' (every item, the authors' choice).
  Returns:
    int32 array shaped like `users`.
  """
  pool_items = negative_pool(dataset, pool)
  if not pool_items.size:
    raise DataError(f'{dataset.source}: the negative pool {pool!r} is empty')
  users = np.asarray(users)
  flat_users = users.reshape(-1).astype(np.int64)
  negatives = pool_items[rng.integers(len(pool_items), size=flat_users.size)]
  todo = np.flatnonzero(is_trained(dataset, flat_users, negatives))
  for _ in range(_REJECTION_ROUNDS):
    if not todo.size:
      break
    negatives[todo] = pool_items[rng.integers(len(pool_items), size=todo.size)]
    todo = todo[is_trained(dataset, flat_users[todo], negatives[todo])]
  if todo.size:
    negatives[todo] = _exact_negatives(rng, dataset, flat_users[todo], pool_items)
  return negatives.reshape(users.shape).astype(np.int32)


def steps_per_epoch(num_pairs: int, batch_size: int) -> int:
  """Batches in an epoch: ceil(num_pairs / batch_size), the last one filled up.

  The one count of steps per epoch that the samplers (host and device), the
  training loop, the benchmark and the methods that act once per epoch share.
  """
  return -(-int(num_pairs) // int(batch_size))


def epoch_triples(rng: np.random.Generator, dataset: Dataset, batch_size: int,
                  pool: str = 'warm') -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The shuffled training triples of one epoch, in static-shape batches.

  Every training pair appears once in a random order; the last batch is
  filled up from further random permutations, so each pair is seen at least
  once and every batch has the same shape (one compiled train step).

  Returns:
    users, positives, negatives: each (steps, batch_size) int32 with
    steps = ceil(num_train_pairs / batch_size); one fresh negative per entry.
  """
  num_pairs = len(dataset.train_pairs)
  if not num_pairs:
    raise DataError(f'{dataset.source}: no training pairs to make an epoch from')
  steps = steps_per_epoch(num_pairs, batch_size)
  needed = steps * batch_size
  # Several permutations when a batch is larger than the whole training set.
  order = np.concatenate([rng.permutation(num_pairs)
                          for _ in range(math.ceil(needed / num_pairs))])[:needed]
  pairs = dataset.train_pairs[order]
  users = pairs[:, 0].reshape(steps, batch_size).astype(np.int32)
  positives = pairs[:, 1].reshape(steps, batch_size).astype(np.int32)
  negatives = sample_negatives(rng, dataset, users, pool)
  return users, positives, negatives
