"""MILK's reference loss: the same value as `objective.make_loss_fn`'s, computed plainly.

The benchmark times it beside the real loss (`Method.reference_loss`), so the
speed-up is a ratio measured on one machine. Every item goes through every
extractor once per environment, as the authors' code does, and the batch's
rows are gathered afterwards: E * M full projections instead of one per
modality for the batch's items only. The environment's weight is folded into
the kernel (into an item's rows under fusion='present', whose weights differ
per item), so XLA cannot merge the E projections.
"""

from typing import Callable

import jax.numpy as jnp

from milk_jax.methods.milk import environments
from milk_jax.methods.milk import objective


def make_loss_fn(hyper: objective.Hyper) -> Callable:
  """loss_fn(params, batch, weights, tables) -> (loss, metrics), as `objective.make_loss_fn`.

  Without modality dropout only: `weights` is the step's (E, M) environment weights.
  """
  def loss_fn(params, batch, weights, tables):
    extractors = params['extractors']
    if hyper.fusion == 'present':
      # (E, I, M): each environment's weights renormalised over each item's modalities.
      item_weights = environments.present_weights(weights, tables.availability)

    def projection(e, m, p, x):
      """Every item's modality m scaled by environment e's weight: (num_items, d)."""
      kernel = p['kernel'].astype(x.dtype)
      if hyper.fusion == 'present':
        w = item_weights[e, :, m][:, None]
        return (jnp.dot(w.astype(x.dtype) * x, kernel, preferred_element_type=jnp.float32)
                + w * p['bias'])
      return (jnp.dot(x, weights[e, m] * kernel, preferred_element_type=jnp.float32)
              + weights[e, m] * p['bias'])

    env_items = jnp.stack([
        sum(projection(e, m, p, x) for m, (p, x) in enumerate(zip(extractors, tables.features)))
        for e in range(weights.shape[0])])  # (E, num_items, d)
    # The batch's modality outputs still feed the alignment and the regulariser.
    user_vectors, pos_reps, neg_reps = objective.batch_representations(params, batch, tables)
    pos_scores = jnp.einsum('bd,ebd->eb', user_vectors, env_items[:, batch['positives']])
    neg_scores = jnp.einsum('bd,ebd->eb', user_vectors, env_items[:, batch['negatives']])
    return objective.objective(hyper, params, batch, user_vectors, pos_reps, neg_reps,
                               pos_scores, neg_scores, tables)

  return loss_fn
