"""MILK's training loss (Eq. 16) and the hyper-parameters it is built from.

`read_hyper` reads MILK's fields from the config once, as Python scalars
(`Hyper`); `make_loss_fn` closes over them, so nothing in the traced loss
reads the config. The reference loss (reference.py) shares `objective` and
`batch_representations` and differs only in how it computes the scores.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from milk_jax.methods import Tables
from milk_jax.methods.milk import losses
from milk_jax.methods.milk import model

# Tables.extras keys of the modalities' imputed fills, one (dim_m,) row each.
FILL_KEY = 'modality_fill_{}'


class Hyper(NamedTuple):
  """MILK's hyper-parameters as Python scalars, from their historical config places."""
  seed: int  # config.seed: the one weight draw of a run with resample_weights=False.
  embed_dim: int  # model.*: d, the user table and the extractors' outputs.
  user_init_std: float
  fusion: str  # 'mean' (Eq. 18) | 'present'.
  use_alignment: bool
  use_invariance: bool
  use_uniform_env: bool
  cyclic_shift: bool
  resample_weights: bool
  alpha: float
  beta: float  # train.*: the objective's weights and forms.
  align_weight: float
  reg_weight: float
  reg_target: str  # 'embeddings' | 'params'.
  variance_ddof: int
  task_loss: str  # 'mean' | 'sum'.
  modality_dropout: float
  normalize: bool  # data.normalize: the imputed fills are normalised as the features are.


def read_hyper(config: ml_collections.ConfigDict) -> Hyper:
  """MILK's fields of `config` (checked by `check_config`), read once."""
  model_config, train_config = config.model, config.train
  return Hyper(
      seed=int(config.seed), embed_dim=int(model_config.embed_dim),
      user_init_std=float(model_config.user_init_std), fusion=str(model_config.fusion),
      use_alignment=bool(model_config.use_alignment),
      use_invariance=bool(model_config.use_invariance),
      use_uniform_env=bool(model_config.use_uniform_env),
      cyclic_shift=bool(model_config.cyclic_shift),
      resample_weights=bool(model_config.resample_weights), alpha=float(model_config.alpha),
      beta=float(train_config.beta), align_weight=float(train_config.align_weight),
      reg_weight=float(train_config.reg_weight), reg_target=str(train_config.reg_target),
      variance_ddof=int(train_config.variance_ddof), task_loss=str(train_config.task_loss),
      modality_dropout=float(train_config.get('modality_dropout', 0.0)),
      normalize=bool(config.data.normalize))


def fusion_availability(hyper: Hyper, tables: Tables, items: jax.Array) -> jax.Array | None:
  """The (n, M) availability of `items` that fusion='present' fuses by; None for 'mean'."""
  return tables.availability[items] if hyper.fusion == 'present' else None


def objective(hyper: Hyper, params: model.Params, batch,
              user_vectors: jax.Array, pos_reps: jax.Array, neg_reps: jax.Array,
              pos_scores: jax.Array, neg_scores: jax.Array,
              tables: Tables, scored=None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MILK's loss (Eq. 16) from a batch's representations and per-environment scores.

  Args:
    user_vectors: (B, d); pos_reps, neg_reps: (B, M, d) modality outputs.
    pos_scores, neg_scores: (E, B) scores in each environment (Eq. 13).
    scored: None, or with modality dropout the (pos_reps, neg_reps, pos_available,
      neg_available) that were scored, which the regulariser then reads; the
      alignment always reads the items' own representations.
  Returns:
    (loss, metrics).
  """
  env_losses = losses.bpr_per_env(pos_scores, neg_scores)
  task_loss, env_variance = losses.rex_loss(env_losses, hyper.beta, hyper.variance_ddof,
                                            hyper.task_loss)
  positives = batch['positives']
  if hyper.use_alignment:
    alignment = losses.alignment_loss(pos_reps, tables.availability[positives],
                                      losses.first_occurrence_weights(positives))
  else:
    alignment = jnp.zeros(())

  if hyper.reg_target == 'embeddings':
    # The batch's item vectors as inference fuses them (model.fusion).
    if scored is None:
      scored = (pos_reps, neg_reps, fusion_availability(hyper, tables, positives),
                fusion_availability(hyper, tables, batch['negatives']))
    regulariser = losses.embedding_l2(user_vectors, model.fused_items(scored[0], scored[2]),
                                      model.fused_items(scored[1], scored[3]))
  else:
    regulariser = losses.params_l2(params)

  loss = task_loss + hyper.align_weight * alignment + hyper.reg_weight * regulariser
  metrics = {'loss': loss, 'bpr': env_losses.mean(), 'env_variance': env_variance,
             'alignment': alignment, 'regulariser': regulariser}
  return loss, metrics


def batch_representations(params: model.Params, batch, tables: Tables):
  """(user_vectors (B, d), pos_reps (B, M, d), neg_reps (B, M, d)) of a batch.

  Only the batch's items go through the extractors, in one gather, once for
  all environments.
  """
  users, positives, negatives = batch['users'], batch['positives'], batch['negatives']
  items = jnp.concatenate([positives, negatives])
  features = [f[items] for f in tables.features]
  representations = model.modality_representations(params['extractors'], features)
  pos_reps, neg_reps = jnp.split(representations, 2)
  return params['user_embedding'][users], pos_reps, neg_reps


def make_loss_fn(hyper: Hyper) -> Callable:
  """loss_fn(params, batch, step_input, tables) -> (loss, metrics), Eq. 16.

  `step_input` is the step's environment weights, (E, M) from `step_weights`
  (with modality dropout, the pair (weights, dropout key)). Scores are linear
  in the weights, so each environment's scores mix the M per-modality scores
  instead of fusing E item vectors. Under fusion='present' an item missing a
  modality (warm ones under MTMT) mixes them by the weights renormalised over
  its present modalities.
  """
  rate = hyper.modality_dropout

  def loss_fn(params, batch, step_input, tables):
    weights, dropout_key = step_input if rate > 0 else (step_input, None)
    user_vectors, pos_reps, neg_reps = batch_representations(params, batch, tables)
    pos_available = fusion_availability(hyper, tables, batch['positives'])
    neg_available = fusion_availability(hyper, tables, batch['negatives'])
    if rate == 0:
      return objective(hyper, params, batch, user_vectors, pos_reps, neg_reps,
                       model.env_scores(user_vectors, pos_reps, weights, pos_available),
                       model.env_scores(user_vectors, neg_reps, weights, neg_available), tables)
    fills = fill_representations(params, tables)
    scored = []
    for key, items, reps, available in zip(
        jax.random.split(dropout_key), (batch['positives'], batch['negatives']),
        (pos_reps, neg_reps), (pos_available, neg_available)):
      dropped = model.dropout_mask(key, tables.availability[items], rate)
      scored.append((model.with_dropped(reps, fills, dropped),
                     None if available is None else available & ~dropped))
    (pos_scored, pos_kept), (neg_scored, neg_kept) = scored
    return objective(hyper, params, batch, user_vectors, pos_reps, neg_reps,
                     model.env_scores(user_vectors, pos_scored, weights, pos_kept),
                     model.env_scores(user_vectors, neg_scored, weights, neg_kept), tables,
                     scored=(pos_scored, neg_scored, pos_kept, neg_kept))

  return loss_fn


def fill_representations(params: model.Params, tables: Tables) -> jax.Array:
  """(M, d): each modality's extractor applied to its imputed fill (Tables.extras)."""
  fills = [tables.extras[FILL_KEY.format(m)].astype(x.dtype)  # As feature_dtype holds rows.
           for m, x in enumerate(tables.features)]
  return model.modality_representations(params['extractors'], fills)
