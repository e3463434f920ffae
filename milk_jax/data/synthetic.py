"""A synthetic catalogue with planted structure, for tests and benchmarks.

Items and users get latent factors; every modality is a noisy random linear
view of the item factors, and users pick items by a softmax over factor
inner products. A model that recovers the factors from the features can
therefore rank new items well, and a missing modality removes part of the
signal, which is what MILK is about.

Two samplers draw the interactions (config.data.synthetic.sampler):
'softmax' (`planted_interactions`) samples each user's items exactly from the
softmax over all items, a cost of users x items; 'candidates'
(`candidate_interactions`) samples them from the softmax restricted to a
random candidate set a few times the user's count, a cost linear in the
interactions, for catalogues too large for the exact sampler.
"""

from typing import Sequence

import numpy as np

# Score entries held at once while drawing interactions (float32, ~32 MB):
# the whole users x items matrix of a Baby-sized catalogue would be ~0.5 GB.
_CHUNK_ENTRIES = 1 << 23
# Candidate (user, item) entries scored at once by the candidates sampler: each gathered
# (entries, latent_dim) float32 factor block is 2^21 x 4 x latent_dim bytes (128 MB at 16).
_CANDIDATE_CHUNK = 1 << 21
SAMPLERS = ('softmax', 'candidates')


def modality_features(rng: np.random.Generator, item_factors: np.ndarray,
                      feature_dims: Sequence[int], noise: float) -> tuple[np.ndarray, ...]:
  """x^m = Z P_m + noise * eps for each modality m.

  Args:
    item_factors: Z, (num_items, latent_dim).
    feature_dims: dim_m per modality.
  Returns:
    M arrays (num_items, dim_m) float32. P_m ~ N(0, 1/latent_dim) keeps the
    signal part at unit variance per coordinate whatever latent_dim is.
  """
  num_items, latent_dim = item_factors.shape
  features = []
  for dim in feature_dims:
    projection = rng.standard_normal((latent_dim, dim), dtype=np.float32) / np.sqrt(latent_dim)
    x = item_factors @ projection
    x += noise * rng.standard_normal((num_items, dim), dtype=np.float32)
    features.append(x)
  return tuple(features)


def gumbel_top_k(rng: np.random.Generator, logits: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Distinct items per row, drawn without replacement with p ∝ softmax(logits).

  Adding Gumbel noise and keeping the k largest is an exact sampler of k
  items without replacement from the softmax, with no Python loop per user.

  Args:
    logits: (users, items) float32; overwritten (it is a scratch chunk).
    counts: (users,) int, 1 <= counts <= items.
  Returns:
    (sum(counts), 2) int64 (row, item) pairs; rows index into `logits`.
  """
  # In place on the scratch chunk: g = log(-log(u)) is minus a Gumbel draw,
  # so logits - g is a perturbed score; negated, argpartition finds the largest.
  g = rng.random(logits.shape, dtype=np.float32)
  np.maximum(g, np.finfo(np.float32).tiny, out=g)  # log(0) guard.
  np.log(g, out=g)
  np.negative(g, out=g)
  np.log(g, out=g)
  np.subtract(g, logits, out=logits)  # logits now holds minus the perturbed scores.
  k_max = int(counts.max())
  top = np.argpartition(logits, k_max - 1, axis=1)[:, :k_max]
  # argpartition leaves the top k unordered; order them so a row keeps its best counts[u].
  top = np.take_along_axis(top, np.argsort(np.take_along_axis(logits, top, axis=1), axis=1),
                           axis=1)
  keep = np.arange(k_max)[None, :] < counts[:, None]
  rows = np.broadcast_to(np.arange(len(counts))[:, None], top.shape)
  return np.stack([rows[keep], top[keep]], axis=1).astype(np.int64)


def planted_interactions(rng: np.random.Generator, user_factors: np.ndarray,
                         item_factors: np.ndarray, interactions_per_user: float,
                         temperature: float) -> np.ndarray:
  """Each user draws Poisson(interactions_per_user) distinct items (clipped to [1, items]).

  p(item j | user i) ∝ exp(<u_i, z_j> / (temperature * sqrt(latent_dim))).

  Args:
    user_factors: (num_users, latent_dim).
    item_factors: (num_items, latent_dim).
  Returns:
    (n, 2) int64 unique (user, item) pairs, sorted by user.
  """
  num_users, latent_dim = user_factors.shape
  num_items = item_factors.shape[0]
  counts = np.clip(rng.poisson(interactions_per_user, num_users), 1, num_items)
  scale = np.float32(1.0 / (temperature * np.sqrt(latent_dim)))
  chunk = max(1, _CHUNK_ENTRIES // num_items)
  item_t = np.ascontiguousarray((item_factors * scale).T, dtype=np.float32)
  pairs = []
  for start in range(0, num_users, chunk):
    stop = min(start + chunk, num_users)
    logits = user_factors[start:stop].astype(np.float32) @ item_t
    chunk_pairs = gumbel_top_k(rng, logits, counts[start:stop])
    chunk_pairs[:, 0] += start
    pairs.append(chunk_pairs)
  return np.concatenate(pairs)


def candidate_sizes(counts: np.ndarray, num_items: int, candidate_factor: float) -> np.ndarray:
  """Candidates per user: ceil(candidate_factor x count), or the whole catalogue.

  A user whose candidates would reach a quarter of the catalogue scores every
  item instead: exact, no duplicates to redraw, and still at most 4x its
  candidates, so the total stays linear in the interactions.
  """
  sizes = np.ceil(counts * float(candidate_factor)).astype(np.int64)
  sizes = np.maximum(sizes, counts)
  return np.where(sizes * 4 >= num_items, num_items, sizes)


def _distinct_candidates(rng: np.random.Generator, items: np.ndarray, valid: np.ndarray,
                         num_items: int) -> None:
  """Redraw, in place, every repeat within a row of `items` (where `valid`) until each
  row's valid items are distinct.

  Rejection, like the negative sampler: a redraw collides with probability
  (row's candidates) / num_items < 1/4 (see `candidate_sizes`), so a few
  rounds end it; each round sorts the rows that still hold a repeat.
  """
  rows = np.arange(items.shape[0])
  while rows.size:
    keys = np.where(valid[rows], items[rows], -1)  # Padding sorts first, never a repeat.
    ordered = np.sort(keys, axis=1)
    rows = rows[((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1)]
    if not rows.size:
      return
    keys = np.where(valid[rows], items[rows], -1)
    order = np.argsort(keys, axis=1)
    ordered = np.take_along_axis(keys, order, axis=1)
    at, columns = np.nonzero((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0))
    items[rows[at], order[at, columns + 1]] = rng.integers(num_items, size=at.size)


def _chunk_bounds(sizes: np.ndarray, chunk_entries: int) -> list[tuple[int, int]]:
  """Consecutive user ranges whose padded (users, widest user) candidate block holds at most
  chunk_entries entries (one user if a single user has more)."""
  bounds, start = [], 0
  while start < len(sizes):
    widest = np.maximum.accumulate(sizes[start:start + chunk_entries])
    users = np.arange(1, widest.size + 1)
    fits = users * widest <= chunk_entries
    stop = start + max(1, int(fits.sum()))  # users * widest only grows: fits is a prefix.
    bounds.append((start, stop))
    start = stop
  return bounds


def candidate_interactions(rng: np.random.Generator, user_factors: np.ndarray,
                           item_factors: np.ndarray, interactions_per_user: float,
                           temperature: float, candidate_factor: float,
                           chunk_entries: int = _CANDIDATE_CHUNK) -> np.ndarray:
  """`planted_interactions` at a cost linear in the interactions, not in users x items.

  Each user draws Poisson(interactions_per_user) items (clipped to [1, items]),
  as the exact sampler does, but among candidates: ceil(candidate_factor x
  count) distinct items drawn uniformly (`candidate_sizes`: the whole
  catalogue when that reaches a quarter of it). Within them `gumbel_top_k`
  keeps its `count` best by Gumbel-perturbed logits, the same logits
  <u_i, z_j> / (temperature * sqrt(latent_dim)). That is an exact draw without
  replacement from the softmax restricted to the candidates, so it
  approximates the softmax over all items: the same planted factors decide
  which items a user keeps, but a uniform candidate set holds fewer of the
  user's highest-logit items than the whole catalogue, so choices are less
  sharp the smaller candidate_factor is (chosen items' mean logit with 3000
  users x 20000 items, latent_dim 16, 20 each, temperature 0.5: exact 3.9;
  2.7 with 10 candidates per interaction, 3.0 with 20, 3.4 with 50; random
  items 0). Users whose candidates cover the
  catalogue draw exactly. Work and memory: O(interactions x candidate_factor
  x latent_dim), in blocks of at most `chunk_entries` candidate entries
  (users x their widest list); no users x items array is built.

  Returns:
    (n, 2) int64 unique (user, item) pairs, sorted by user, each user's best first.
  """
  num_users, latent_dim = user_factors.shape
  num_items = item_factors.shape[0]
  counts = np.clip(rng.poisson(interactions_per_user, num_users), 1, num_items)
  sizes = candidate_sizes(counts, num_items, candidate_factor)
  scale = np.float32(1.0 / (temperature * np.sqrt(latent_dim)))
  pairs = []
  for start, stop in _chunk_bounds(sizes, chunk_entries):
    chunk_sizes = sizes[start:stop]
    width = int(chunk_sizes.max())
    valid = np.arange(width)[None, :] < chunk_sizes[:, None]
    items = rng.integers(num_items, size=(stop - start, width))
    whole = chunk_sizes == num_items  # These users' candidates are items 0..I-1, distinct.
    items[whole] = np.arange(width)[None, :]
    _distinct_candidates(rng, items, valid, num_items)
    logits = np.einsum('uwl,ul->uw', item_factors[items], user_factors[start:stop] * scale)
    logits[~valid] = -np.inf  # Padding is never drawn: counts <= sizes.
    chunk_pairs = gumbel_top_k(rng, logits, counts[start:stop])
    chunk_pairs[:, 1] = items[chunk_pairs[:, 0], chunk_pairs[:, 1]]
    chunk_pairs[:, 0] += start
    pairs.append(chunk_pairs)
  return np.concatenate(pairs)


def generate(rng: np.random.Generator, num_users: int, num_items: int,
             feature_dims: Sequence[int], latent_dim: int, interactions_per_user: float,
             noise: float, temperature: float, sampler: str = 'softmax',
             candidate_factor: float = 10.0) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
  """The whole synthetic catalogue.

  Args:
    sampler: 'softmax' (`planted_interactions`, exact, users x items work) or
      'candidates' (`candidate_interactions`, linear in the interactions, with
      `candidate_factor` candidates per interaction).
  Returns:
    features: M arrays (num_items, dim_m) float32.
    pairs: (n, 2) int64 unique (user, item) interactions.
  """
  item_factors = rng.standard_normal((num_items, latent_dim), dtype=np.float32)
  user_factors = rng.standard_normal((num_users, latent_dim), dtype=np.float32)
  features = modality_features(rng, item_factors, feature_dims, noise)
  if sampler == 'softmax':
    pairs = planted_interactions(rng, user_factors, item_factors, interactions_per_user,
                                 temperature)
  elif sampler == 'candidates':
    pairs = candidate_interactions(rng, user_factors, item_factors, interactions_per_user,
                                   temperature, candidate_factor)
  else:
    raise ValueError(f'sampler={sampler!r}: unknown, expected one of {SAMPLERS}')
  return features, pairs
