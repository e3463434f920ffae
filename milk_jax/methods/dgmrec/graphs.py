"""DGMRec's graphs: modality kNN graphs (isolation, normalisation, row blending) and the
user-item graph (LightGCN, the means over a node's neighbours).

A modality graph is a padded row list (milk_jax/methods/graphs.py), as MICRO's: `indices`
(I, W) int32 and `weights` (I, W) float32, (S x)_i = sum_w weights_iw x_{indices_iw};
unused slots point at the row itself with weight 0. The original keeps torch sparse (or dense) I x I matrices.
"""

import jax
import jax.numpy as jnp

from milk_jax.methods import graphs as shared_graphs
from milk_jax.methods import layers


def knn_graph(x: jax.Array, isolated_before: jax.Array, isolated_after: jax.Array, k: int,
              chunk_rows: int) -> tuple[jax.Array, jax.Array]:
  """The original's kNN graph of cosine similarities, before normalisation (no gradient).

  As build_sim -> (isolation) -> build_knn_neighbourhood -> (isolation) in the original:
  `isolated_before` items have their similarity rows and columns set to 0 and their own
  similarity to 1 before the top-k (the training graph's new items), so they are nobody's
  neighbour and keep themselves; `isolated_after` items are cut out of the finished top-k
  graph (rows and columns zeroed) and given a self-loop of weight 1 (the inference graph's
  items missing the modality), so their former neighbours keep fewer than k entries. The
  item itself is not forced into its row: for a non-zero row its cosine 1 puts it there.

  Args:
    x: (I, F) features. isolated_before, isolated_after: (I,) bool.
    k: entries per row, at most I.
  Returns:
    indices (I, k) int32, weights (I, k) float32 (the similarities; 0 on dropped entries).
  """
  num_items = x.shape[0]
  xn = layers.unit_rows(jax.lax.stop_gradient(x.astype(jnp.float32)))
  columns = jnp.arange(num_items, dtype=jnp.int32)
  first_slot = jnp.arange(k) == 0

  def block(rows):
    sims = xn[rows] @ xn.T  # (C, I): the only matrix of size chunk_rows x I.
    before_row = isolated_before[rows][:, None]
    sims = jnp.where(before_row | isolated_before[None, :], 0.0, sims)
    sims = jnp.where(before_row & (rows[:, None] == columns[None, :]), 1.0, sims)
    top, indices = jax.lax.top_k(sims, k)
    after_row = isolated_after[rows][:, None]
    top = jnp.where(after_row | isolated_after[indices], 0.0, top)
    self_loop = after_row & first_slot[None, :]
    return (jnp.where(self_loop, rows[:, None], indices), jnp.where(self_loop, 1.0, top))

  outputs = jax.lax.map(block, shared_graphs.row_blocks(num_items, chunk_rows))
  return tuple(a.reshape((-1, k))[:num_items] for a in outputs)


def pad_rows(indices: jax.Array, weights: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
  """(I, k) rows widened to (I, width) with empty slots (the row itself, weight 0)."""
  num_items, k = indices.shape
  own = jnp.broadcast_to(jnp.arange(num_items, dtype=indices.dtype)[:, None],
                         (num_items, width - k))
  return (jnp.concatenate([indices, own], axis=1),
          jnp.concatenate([weights, jnp.zeros((num_items, width - k), weights.dtype)], axis=1))


def blend_rows(old: dict[str, jax.Array], new_indices: jax.Array, new_weights: jax.Array,
               rows: jax.Array, avg_lambda: float, chunk_rows: int) -> dict[str, jax.Array]:
  """update_adj: row i <- avg_lambda new_i + (1 - avg_lambda) old_i where `rows`, else old_i.

  Entries of the same column are summed; a blended row keeps its W heaviest entries (by
  |weight|), so it is exact while it has at most W distinct columns.

  Args:
    old: {'indices', 'weights'} (I, W). new_indices, new_weights: (I, k). rows: (I,) bool.
  Returns:
    {'indices', 'weights'} (I, W).
  """
  num_items, width = old['indices'].shape
  candidates = jnp.concatenate([new_indices, old['indices']], axis=1)  # (I, C)
  mass = jnp.concatenate([avg_lambda * new_weights, (1.0 - avg_lambda) * old['weights']], 1)
  num_candidates = candidates.shape[1]
  earlier = jnp.tril(jnp.ones((num_candidates, num_candidates), bool), -1)

  def block(block_rows):
    idx, w = candidates[block_rows], mass[block_rows]  # (C_rows, C)
    same = idx[:, :, None] == idx[:, None, :]
    total = jnp.einsum('rab,rb->ra', same.astype(w.dtype), w)
    first = ~jnp.any(same & earlier[None], axis=-1)
    keep = first & (total != 0)
    key = jnp.where(keep, jnp.abs(total), -1.0)
    top, slots = jax.lax.top_k(key, width)
    used = top >= 0
    own = block_rows[:, None]
    return (jnp.where(used, jnp.take_along_axis(idx, slots, 1), own),
            jnp.where(used, jnp.take_along_axis(total, slots, 1), 0.0))

  blocks = shared_graphs.row_blocks(num_items, chunk_rows)
  indices, weights = (a.reshape((-1, width))[:num_items] for a in jax.lax.map(block, blocks))
  return {'indices': jnp.where(rows[:, None], indices, old['indices']),
          'weights': jnp.where(rows[:, None], weights, old['weights'])}


def degrees(pair_users: jax.Array, pair_items: jax.Array, num_users: int,
            num_items: int) -> tuple[jax.Array, jax.Array]:
  """Training interactions per user (U,) and per item (I,), float32."""
  ones = jnp.ones(pair_users.shape, jnp.float32)
  return (jax.ops.segment_sum(ones, pair_users, num_users, indices_are_sorted=True),
          jax.ops.segment_sum(ones, pair_items, num_items))


def item_mean_of_users(user_rows: jax.Array, pair_users, pair_items,
                       item_degree: jax.Array) -> jax.Array:
  """sum_{u in N(i)} x_u / (deg_i + 1e-7): (U, d) -> (I, d); 0 for items without pairs."""
  summed = jax.ops.segment_sum(user_rows[pair_users], pair_items, item_degree.shape[0])
  return summed / (item_degree + 1e-7)[:, None]


def user_mean_of_items(item_rows: jax.Array, pair_users, pair_items,
                       user_degree: jax.Array) -> jax.Array:
  """sum_{i in N(u)} x_i / (deg_u + 1e-7): (I, d) -> (U, d)."""
  summed = jax.ops.segment_sum(item_rows[pair_items], pair_users, user_degree.shape[0],
                               indices_are_sorted=True)
  return summed / (user_degree + 1e-7)[:, None]


def lightgcn(users: jax.Array, items: jax.Array, pair_users, pair_items, user_degree,
             item_degree, num_layers: int) -> tuple[jax.Array, jax.Array]:
  """Layer mean of LightGCN over D^-1/2 A D^-1/2 (no self-loops, D = degree + 1e-7).

  An item without training pairs gets only its own row / (num_layers + 1).
  users (U, d), items (I, d) -> (U, d), (I, d).
  """
  num_users, num_items = users.shape[0], items.shape[0]
  edge = (jax.lax.rsqrt(user_degree + 1e-7)[pair_users]
          * jax.lax.rsqrt(item_degree + 1e-7)[pair_items])[:, None]
  user_sum, item_sum = users, items
  for _ in range(num_layers):
    users, items = (
        jax.ops.segment_sum(edge * items[pair_items], pair_users, num_users,
                            indices_are_sorted=True),
        jax.ops.segment_sum(edge * users[pair_users], pair_items, num_items))
    user_sum, item_sum = user_sum + users, item_sum + items
  return user_sum / (num_layers + 1), item_sum / (num_layers + 1)
