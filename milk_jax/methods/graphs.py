"""Graph numerics that methods share: padded kNN row lists and the user-item training pairs.

A graph over I nodes is a padded row list: `indices` (I, W) int32 and `weights` (I, W)
float32, (S x)_i = sum_w weights_iw x_{indices_iw}; unused slots point at the row itself
with weight 0. MICRO's item-item graphs and DGMRec's modality graphs are such lists.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def row_blocks(num_rows: int, chunk_rows: int) -> jax.Array:
  """(blocks, rows_per_block) int32 row ids covering 0..num_rows-1.

  ceil(n / chunk_rows) blocks of equal size, as small as that allows; the
  last row is repeated as padding.
  """
  num_blocks = math.ceil(num_rows / chunk_rows)
  per_block = math.ceil(num_rows / num_blocks)
  rows = np.minimum(np.arange(num_blocks * per_block), num_rows - 1)
  return jnp.asarray(rows.reshape(num_blocks, per_block), jnp.int32)


def sym_normalise(indices: jax.Array, weights: jax.Array) -> jax.Array:
  """w_ij / sqrt(d_i d_j), d the row sums of the (directed) kNN weights; d <= 0 gives 0.

  indices, weights: (I, k) -> (I, k).
  """
  degree = jnp.sum(weights, axis=-1)
  positive = degree > 0
  inv_sqrt = jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, degree, 1.0)), 0.0)
  return inv_sqrt[:, None] * weights * inv_sqrt[indices]


def propagate(indices: jax.Array, weights: jax.Array, x: jax.Array) -> jax.Array:
  """(S x)_i = sum_k w_ik x_{indices_ik}: (I, k), (I, k), (I, d) -> (I, d)."""
  return jnp.einsum('ik,ikd->id', weights, x[indices])


def training_pairs(dataset) -> tuple[np.ndarray, np.ndarray]:
  """The training pairs sorted by user: (users, items), each (n,) int32."""
  pairs = np.asarray(dataset.train_pairs, np.int64)
  order = np.lexsort((pairs[:, 1], pairs[:, 0]))
  return pairs[order, 0].astype(np.int32), pairs[order, 1].astype(np.int32)
