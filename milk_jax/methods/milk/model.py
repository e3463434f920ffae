"""MILK's parameters and scoring functions (Eqs. 5, 8, 12, 13, 18).

Parameters are a plain pytree:
  {'user_embedding': (num_users, d),
   'extractors': [{'kernel': (dim_m, d), 'bias': (d,)} for each modality m]}

Fusion (config.model.fusion): 'mean' is Eq. 18, the mean over all M
modalities, an item's missing ones imputed; 'present' averages only the
modalities an item has (and renormalises an environment's weights over
them). Complete items take the 'mean' arithmetic under both, bit for bit.

Modality dropout (config.train.modality_dropout): in training, an item with
two or more modalities loses one of them at random, its representation
replaced by that of the modality's imputed fill, as a new item missing it
is embedded; under FTMT no warm item is ever seen that way otherwise.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from milk_jax.methods.milk import environments

Params = dict[str, Any]


def init_params(key: jax.Array, num_users: int, feature_dims: Sequence[int],
                embed_dim: int, user_init_std: float = 0.1) -> Params:
  """User embeddings ~ N(0, user_init_std^2); extractors as a default linear layer.

  Kernel and bias start U(-1/sqrt(dim_m), 1/sqrt(dim_m)), the usual linear-layer
  init that the authors' extractors also get.
  """
  user_key, *extractor_keys = jax.random.split(key, 1 + len(feature_dims))
  extractors = []
  for k, dim in zip(extractor_keys, feature_dims):
    kernel_key, bias_key = jax.random.split(k)
    bound = 1.0 / jnp.sqrt(dim)
    extractors.append({
        'kernel': jax.random.uniform(kernel_key, (dim, embed_dim), jnp.float32, -bound, bound),
        'bias': jax.random.uniform(bias_key, (embed_dim,), jnp.float32, -bound, bound),
    })
  users = user_init_std * jax.random.normal(user_key, (num_users, embed_dim), jnp.float32)
  return {'user_embedding': users, 'extractors': extractors}


def modality_representations(extractors: Sequence[Params],
                             features: Sequence[jax.Array]) -> jax.Array:
  """Modality-specific extractors c^m = W^m x^m + b^m (Eq. 5).

  Args:
    extractors: M dicts with 'kernel' (dim_m, d) and 'bias' (d,).
    features: M arrays (..., dim_m) for the same items.
  Returns:
    (..., M, d).
  """
  outputs = [
      jnp.dot(x, p['kernel'].astype(x.dtype),
              preferred_element_type=jnp.float32) + p['bias']
      for p, x in zip(extractors, features)
  ]
  return jnp.stack(outputs, axis=-2)


def fuse(representations: jax.Array, weights: jax.Array) -> jax.Array:
  """Item representation per environment z^e = sum_m theta_e^m c^m (Eq. 12).

  Args:
    representations: (..., M, d).
    weights: (E, M).
  Returns:
    (E, ..., d).
  """
  return jnp.einsum('em,...md->e...d', weights, representations)


FUSIONS = ('mean', 'present')


def env_scores(user_vectors: jax.Array, representations: jax.Array,
               weights: jax.Array, availability: jax.Array | None = None) -> jax.Array:
  """Scores y^e = <u, z^e> for every environment (Eq. 13).

  Scores are linear in the weights, so the M per-modality scores are computed
  once and mixed, instead of fusing M + 1 item vectors.

  Args:
    user_vectors: (B, d).
    representations: (B, M, d) of the items paired with those users.
    weights: (E, M).
    availability: (B, M) bool of those items for fusion='present': an
      incomplete item's weights are renormalised over its present modalities
      (`environments.present_weights`); None = fusion='mean', all mixed by `weights`.
  Returns:
    (E, B).
  """
  per_modality = jnp.einsum('bd,bmd->bm', user_vectors, representations)
  scores = weights @ per_modality.T
  if availability is None:
    return scores
  # Complete items keep the matmul's floats exactly ('present' == 'mean' for them).
  renormalised = jnp.einsum('ebm,bm->eb', environments.present_weights(weights, availability),
                            per_modality)
  return jnp.where(availability.all(axis=-1), scores, renormalised)


def present_mean(representations: jax.Array, availability: jax.Array) -> jax.Array:
  """The mean over each item's present modalities, (..., d).

  Args:
    representations: (..., M, d).
    availability: (..., M) bool; a complete item's row is exactly
      representations.mean(axis=-2), one with no modality is zero.
  """
  mask = availability.astype(representations.dtype)
  count = jnp.maximum(mask.sum(axis=-1, keepdims=True), 1.0)
  present = jnp.einsum('...m,...md->...d', mask, representations) / count
  return jnp.where(availability.all(axis=-1, keepdims=True),
                   representations.mean(axis=-2), present)


def fused_items(representations: jax.Array, availability: jax.Array | None) -> jax.Array:
  """Item vectors (..., d): Eq. 18's mean (availability None) or `present_mean`."""
  if availability is None:
    return representations.mean(axis=-2)
  return present_mean(representations, availability)


def item_embeddings(params: Params, features: Sequence[jax.Array],
                    availability: jax.Array | None = None) -> jax.Array:
  """Inference-time item vectors, (num_items, d).

  The mean over modalities (Eq. 18) when availability is None (fusion='mean');
  else the mean over each item's present modalities (fusion='present').
  """
  return fused_items(modality_representations(params['extractors'], features), availability)


def dropout_mask(key: jax.Array, availability: jax.Array, rate: float) -> jax.Array:
  """(..., M) bool: the modality each item drops in this step, at most one.

  With probability `rate` an item with two or more present modalities drops
  one of them, drawn uniformly among the present ones; an item with one (or
  none) keeps what it has.
  """
  drop_key, pick_key = jax.random.split(key)
  drops = jax.random.uniform(drop_key, availability.shape[:-1]) < rate
  drops &= availability.sum(axis=-1) >= 2
  # Uniform among the present modalities: the largest of iid uniforms over them.
  draws = jnp.where(availability, jax.random.uniform(pick_key, availability.shape), -1.0)
  picked = jax.nn.one_hot(jnp.argmax(draws, axis=-1), availability.shape[-1], dtype=bool)
  return picked & drops[..., None]


def with_dropped(representations: jax.Array, fill_representations: jax.Array,
                 dropped: jax.Array) -> jax.Array:
  """(..., M, d): each dropped modality's representation replaced by its fill's, (M, d)."""
  return jnp.where(dropped[..., None], fill_representations, representations)
