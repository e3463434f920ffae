"""MILK (Bai et al., SIGIR 2024) and its ablations, as a method.

Its hyper-parameters keep their historical places: `config.model.*` (the
switches, alpha, embed_dim) and `config.train.beta`, `align_weight`,
`reg_weight`, `reg_target`, `variance_ddof`, `task_loss`. ERM is MILK with
`model.use_invariance=False` and `model.use_alignment=False`. `model.fusion`
('mean', Eq. 18, or 'present') is how an item's modalities become its vector,
for MILK and ERM alike (milk_jax/model.py). `train.modality_dropout` drops
one modality of a training item at random, its imputed fill in its place.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from milk_jax import environments
from milk_jax import losses
from milk_jax import methods
from milk_jax import model
from milk_jax.data import missing
from milk_jax.errors import ConfigError
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import step_keys

INFO = methods.MethodInfo(
    display_name='MILK',
    fields=('model.user_init_std', 'model.fusion', 'model.use_alignment',
            'model.use_invariance', 'model.use_uniform_env', 'model.cyclic_shift',
            'model.resample_weights', 'model.alpha', 'train.beta', 'train.align_weight',
            'train.reg_weight', 'train.reg_target', 'train.variance_ddof', 'train.task_loss',
            'train.modality_dropout'),
    divergence_fields=('train.beta',))
# The stream of the one weight draw of a run with resample_weights=False.
_FIXED_WEIGHTS_STREAM = 7
# The stream of a step's modality-dropout draws (its weights use the step key itself).
_DROPOUT_STREAM = 11
# Tables.extras keys of the modalities' imputed fills, one (dim_m,) row each.
_FILL_KEY = 'modality_fill_{}'


def check_config(config: ml_collections.ConfigDict) -> None:
  def require(ok: bool, field: str, value, message: str):
    if not ok:
      raise ConfigError(f'config.{field}={value!r}: {message}')

  require(config.model.fusion in model.FUSIONS, 'model.fusion', config.model.fusion,
          f'must be one of {model.FUSIONS}')
  require(config.model.alpha > 0, 'model.alpha', config.model.alpha,
          'the Dirichlet concentration must be positive')
  require(config.train.beta >= 0, 'train.beta', config.train.beta, 'must be non-negative')
  require(config.train.reg_target in ('embeddings', 'params'), 'train.reg_target',
          config.train.reg_target, "must be 'embeddings' or 'params'")
  require(config.train.variance_ddof in (0, 1), 'train.variance_ddof',
          config.train.variance_ddof, 'must be 0 or 1')
  require(config.train.task_loss in losses.TASK_REDUCTIONS, 'train.task_loss',
          config.train.task_loss, f'must be one of {losses.TASK_REDUCTIONS}')
  rate = config.train.get('modality_dropout', 0.0)
  require(0.0 <= rate <= 1.0, 'train.modality_dropout', rate, 'must be in [0, 1]')
  require(rate == 0.0 or config.data.imputation != 'learned', 'train.modality_dropout', rate,
          "replaces a modality by its one imputed fill; data.imputation='learned' has "
          "none (use 'mean' or 'zero')")


def step_weights(config: ml_collections.ConfigDict, key: jax.Array,
                 num_modalities: int) -> jax.Array:
  """Environment weights of one step: (M + 1, M), (M, M) or (1, M) for ERM."""
  if not config.model.use_invariance:
    return environments.uniform_weights(num_modalities)
  if not config.model.resample_weights:
    # One draw for the whole run, from a key that depends on the seed only.
    key = jax.random.fold_in(jax.random.key(config.seed), _FIXED_WEIGHTS_STREAM)
  return environments.env_weights(
      key, num_modalities, config.model.alpha,
      include_uniform=config.model.use_uniform_env, cyclic=config.model.cyclic_shift)


def epoch_weights(config: ml_collections.ConfigDict, train_key: jax.Array,
                  first_step: jax.Array, num_steps: int, num_modalities: int) -> jax.Array:
  """(num_steps, E, M): the weights of steps first_step, first_step + 1, ...

  One vectorised draw for the whole epoch gives the same values as drawing
  step by step (each step still has its own key, fold_in(train_key, step)),
  but runs the Dirichlet's gamma sampler once instead of once per step.
  """
  keys = step_keys(train_key, first_step, num_steps)
  return jax.vmap(lambda key: step_weights(config, key, num_modalities))(keys)


def fusion_availability(config: ml_collections.ConfigDict, tables: Tables,
                        items: jax.Array) -> jax.Array | None:
  """The (n, M) availability of `items` that fusion='present' fuses by; None for 'mean'."""
  return tables.availability[items] if config.model.fusion == 'present' else None


def objective(config: ml_collections.ConfigDict, params: model.Params, batch,
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
  train_config = config.train
  env_losses = losses.bpr_per_env(pos_scores, neg_scores)
  task_loss, env_variance = losses.rex_loss(env_losses, train_config.beta,
                                            train_config.variance_ddof, train_config.task_loss)
  positives = batch['positives']
  if config.model.use_alignment:
    alignment = losses.alignment_loss(pos_reps, tables.availability[positives],
                                      losses.first_occurrence_weights(positives))
  else:
    alignment = jnp.zeros(())

  if train_config.reg_target == 'embeddings':
    # The batch's item vectors as inference fuses them (model.fusion).
    if scored is None:
      scored = (pos_reps, neg_reps, fusion_availability(config, tables, positives),
                fusion_availability(config, tables, batch['negatives']))
    regulariser = losses.embedding_l2(user_vectors, model.fused_items(scored[0], scored[2]),
                                      model.fused_items(scored[1], scored[3]))
  else:
    regulariser = losses.params_l2(params)

  loss = (task_loss + train_config.align_weight * alignment
          + train_config.reg_weight * regulariser)
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


def make_loss_fn(config: ml_collections.ConfigDict) -> Callable:
  """loss_fn(params, batch, weights, tables) -> (loss, metrics), Eq. 16.

  `weights` are the step's environment weights, (E, M) from `step_weights`.
  Scores are linear in the weights, so each environment's scores mix the M
  per-modality scores instead of fusing E item vectors. Under fusion='present'
  an item missing a modality (warm ones under MTMT) mixes them by the weights
  renormalised over its present modalities.
  """
  rate = config.train.get('modality_dropout', 0.0)

  def loss_fn(params, batch, step_input, tables):
    weights, dropout_key = step_input if rate > 0 else (step_input, None)
    user_vectors, pos_reps, neg_reps = batch_representations(params, batch, tables)
    pos_available = fusion_availability(config, tables, batch['positives'])
    neg_available = fusion_availability(config, tables, batch['negatives'])
    if rate == 0:
      return objective(config, params, batch, user_vectors, pos_reps, neg_reps,
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
    return objective(config, params, batch, user_vectors, pos_reps, neg_reps,
                     model.env_scores(user_vectors, pos_scored, weights, pos_kept),
                     model.env_scores(user_vectors, neg_scored, weights, neg_kept), tables,
                     scored=(pos_scored, neg_scored, pos_kept, neg_kept))

  return loss_fn


def fill_representations(params: model.Params, tables: Tables) -> jax.Array:
  """(M, d): each modality's extractor applied to its imputed fill (Tables.extras)."""
  fills = [tables.extras[_FILL_KEY.format(m)].astype(x.dtype)  # As feature_dtype holds rows.
           for m, x in enumerate(tables.features)]
  return model.modality_representations(params['extractors'], fills)


def imputed_fills(config: ml_collections.ConfigDict, dataset) -> dict[str, np.ndarray]:
  """{extras key: fill}: each modality's imputed row as the tables hold it (normalised
  when data.normalize, as the features are)."""
  fills = {}
  for m, fill in enumerate(dataset.imputation.fills):
    row = np.asarray(fill, np.float32)[None]
    fills[_FILL_KEY.format(m)] = (missing.l2_normalize(row) if config.data.normalize else row)[0]
  return fills


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  num_modalities = len(spec.feature_dims)

  def init(key):
    return model.init_params(key, spec.num_users, spec.feature_dims, config.model.embed_dim,
                             config.model.user_init_std)

  def embed(params, tables):
    available = tables.availability if config.model.fusion == 'present' else None
    return params['user_embedding'], model.item_embeddings(params, tables.features, available)

  rate = config.train.get('modality_dropout', 0.0)

  def step_inputs(train_key, first_step, num_steps):
    weights = epoch_weights(config, train_key, first_step, num_steps, num_modalities)
    if rate == 0:
      return weights
    return weights, step_keys(jax.random.fold_in(train_key, _DROPOUT_STREAM), first_step,
                              num_steps)

  def prepare(dataset, extras):
    return {**extras, **(imputed_fills(config, dataset) if rate > 0 else {})}

  return Method(init=init, loss=make_loss_fn(config), embed=embed, step_inputs=step_inputs,
                prepare=prepare, log_keys=('bpr', 'env_variance', 'alignment', 'regulariser'))
