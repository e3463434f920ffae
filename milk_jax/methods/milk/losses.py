"""MILK's objective (Eqs. 6, 14-16): BPR per environment, REx, alignment, L2.

All functions are pure and reduce to scalars, except `bpr_per_env`.
"""

import jax
import jax.numpy as jnp


def bpr_per_env(pos_scores: jax.Array, neg_scores: jax.Array) -> jax.Array:
  """BPR loss of each environment (Eq. 15): mean_b -ln sigmoid(pos - neg).

  Args:
    pos_scores: (E, B) scores of the positive items.
    neg_scores: (E, B) scores of the negative items.
  Returns:
    (E,) losses; softplus(neg - pos) equals -ln sigmoid(pos - neg) and is stable.
  """
  return jax.nn.softplus(neg_scores - pos_scores).mean(axis=-1)


TASK_REDUCTIONS = ('mean', 'sum')


def rex_loss(env_losses: jax.Array, beta: float, ddof: int = 0,
             reduction: str = 'mean') -> tuple[jax.Array, jax.Array]:
  """Variance-REx (Eq. 14): mean_e L_e + beta * Var_e(L_e).

  Args:
    env_losses: (E,) per-environment losses.
    beta: variance weight.
    ddof: 0 for the population variance, 1 for the unbiased one the authors use.
    reduction: 'mean' over environments (the paper), or 'sum' (the authors' code).
  Returns:
    (total, variance).
  """
  variance = jnp.var(env_losses, ddof=ddof) if env_losses.shape[0] > ddof else jnp.zeros(())
  task = env_losses.sum() if reduction == 'sum' else env_losses.mean()
  return task + beta * variance, variance


def first_occurrence_weights(items: jax.Array) -> jax.Array:
  """1.0 at the first place each id appears in `items` (B,), 0.0 at repeats.

  Lets a loss count each distinct item of a batch once with static shapes.
  """
  order = jnp.argsort(items, stable=True)
  sorted_items = items[order]
  is_first_sorted = jnp.concatenate(
      [jnp.ones((1,), bool), sorted_items[1:] != sorted_items[:-1]])
  return jnp.zeros(items.shape, jnp.float32).at[order].set(is_first_sorted.astype(jnp.float32))


def alignment_loss(representations: jax.Array, availability: jax.Array,
                   item_weights: jax.Array | None = None) -> jax.Array:
  """Masked pairwise cross-modality alignment (CMAM, Eq. 6).

  sum_j w_j sum_{m < m'} a_jm a_jm' ||c_j^m - c_j^m'||^2, divided by the
  weighted number of contributing pairs and by d: a mean squared error per
  present pair, which for M = 2 is the authors' MSE over the batch's items
  and keeps lambda on their scale. Pairs with a missing modality drop out.

  Args:
    representations: (B, M, d) extractor outputs c_j^m.
    availability: (B, M) bool or {0, 1}: a_jm.
    item_weights: (B,) weights w_j (e.g. first-occurrence weights); default 1.
  Returns:
    scalar; 0 when no pair is present.
  """
  num_items, num_modalities, dim = representations.shape
  if item_weights is None:
    item_weights = jnp.ones((num_items,), jnp.float32)
  first, second = jnp.triu_indices(num_modalities, k=1)
  diffs = representations[:, first] - representations[:, second]  # (B, P, d)
  mask = availability.astype(jnp.float32)
  pair_weights = mask[:, first] * mask[:, second] * item_weights[:, None]  # (B, P)
  total = jnp.sum(pair_weights * jnp.sum(diffs * diffs, axis=-1))
  return total / (jnp.maximum(pair_weights.sum(), 1.0) * dim)


def embedding_l2(*vectors: jax.Array) -> jax.Array:
  """Batch mean of the summed squared norms of row-aligned (B, d) vectors.

  The authors' regulariser: mean_b ||u_b||^2 + ||z_pos,b||^2 + ||z_neg,b||^2.
  """
  return sum(jnp.sum(v * v, axis=-1) for v in vectors).mean()


def params_l2(params) -> jax.Array:
  """Sum of squares of every parameter: the ||Phi||^2 of Eq. 16."""
  return sum(jnp.sum(p * p) for p in jax.tree.leaves(params))
