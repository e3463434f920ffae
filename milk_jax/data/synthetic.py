"""A synthetic catalogue with planted structure, for tests and benchmarks.

Items and users get latent factors; every modality is a noisy random linear
view of the item factors, and users pick items by a softmax over factor
inner products. A model that recovers the factors from the features can
therefore rank new items well, and a missing modality removes part of the
signal, which is what MILK is about.
"""

from typing import Sequence

import numpy as np

# Score entries held at once while drawing interactions (float32, ~32 MB):
# the whole users x items matrix of a Baby-sized catalogue would be ~0.5 GB.
_CHUNK_ENTRIES = 1 << 23


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


def generate(rng: np.random.Generator, num_users: int, num_items: int,
             feature_dims: Sequence[int], latent_dim: int, interactions_per_user: float,
             noise: float, temperature: float) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
  """The whole synthetic catalogue.

  Returns:
    features: M arrays (num_items, dim_m) float32.
    pairs: (n, 2) int64 unique (user, item) interactions.
  """
  item_factors = rng.standard_normal((num_items, latent_dim), dtype=np.float32)
  user_factors = rng.standard_normal((num_users, latent_dim), dtype=np.float32)
  features = modality_features(rng, item_factors, feature_dims, noise)
  pairs = planted_interactions(rng, user_factors, item_factors, interactions_per_user,
                               temperature)
  return features, pairs
