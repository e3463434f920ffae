"""Heterogeneous environments by cyclic mixup (CEIM, Eqs. 9-12).

An environment is a weight vector on the simplex over the M modalities; an
item's representation in environment e is sum_m theta_e^m c^m (Eq. 12), or,
under fusion='present', the same with the weights renormalised over the
modalities the item has (`present_weights`).
"""

import jax
import jax.numpy as jnp

from milk_jax.methods import layers


def cyclic_shifts(theta: jax.Array) -> jax.Array:
  """Rows k = 0..M-1 are theta shifted k places to the right (Eq. 10-11).

  Shifting right moves the last weight first: (t1, ..., tM) -> (tM, t1, ...),
  so every modality leads exactly one row.

  Args:
    theta: (M,) weights.
  Returns:
    (M, M) with row k = jnp.roll(theta, k).
  """
  num_modalities = theta.shape[-1]
  return jnp.stack([jnp.roll(theta, k) for k in range(num_modalities)])


def env_weights(key: jax.Array,
                num_modalities: int,
                alpha: float,
                *,
                include_uniform: bool = True,
                cyclic: bool = True) -> jax.Array:
  """Environment weights for one training step.

  Row 0 (when `include_uniform`) is the equal-weight environment; the next M
  rows are one Dirichlet(alpha) draw and its M-1 cyclic shifts, or M
  independent draws when `cyclic` is False (the paper's ablation).

  Args:
    key: PRNG key for the Dirichlet draw(s).
    num_modalities: M (static).
    alpha: symmetric Dirichlet concentration.
    include_uniform: prepend the uniform environment e = 0.
    cyclic: build rows 1..M by cyclic shifts of one draw.
  Returns:
    (M + 1, M) weights, or (M, M) without the uniform row; each row sums to 1.
  """
  concentration = jnp.full((num_modalities,), alpha, jnp.float32)
  if cyclic:
    mixed = cyclic_shifts(jax.random.dirichlet(key, concentration))
  else:
    mixed = jax.random.dirichlet(key, concentration, shape=(num_modalities,))
  if not include_uniform:
    return mixed
  uniform = jnp.full((1, num_modalities), 1.0 / num_modalities, jnp.float32)
  return jnp.concatenate([uniform, mixed], axis=0)


def uniform_weights(num_modalities: int) -> jax.Array:
  """The single mean-fusion environment used by ERM and at inference (Eq. 18): (1, M)."""
  return jnp.full((1, num_modalities), 1.0 / num_modalities, jnp.float32)


def present_weights(weights: jax.Array, availability: jax.Array) -> jax.Array:
  """Each environment's weights renormalised over each item's present modalities.

  w'_ebm = w_em a_bm / sum_m' w_em' a_bm'. When an environment puts all its
  weight on modalities the item lacks (the sum is 0, e.g. a Dirichlet draw
  that underflowed to one-hot on the missing modality), the item falls back
  to the uniform mean over its present modalities: that environment then
  shows the item as ERM's present-fused vector, neither inventing a weight
  for a modality it favoured nor dropping the item from its loss.
  An item with no modality (the data layer refuses those) gets all zeros.

  Args:
    weights: (E, M), rows on the simplex.
    availability: (B, M) bool.
  Returns:
    (E, B, M).
  """
  mask = availability.astype(weights.dtype)
  masked = weights[:, None, :] * mask[None]  # (E, B, M)
  total = masked.sum(axis=-1, keepdims=True)
  uniform = layers.present_mean_weights(availability, weights.dtype)  # (B, M)
  renormalised = masked / jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, renormalised, uniform[None])
