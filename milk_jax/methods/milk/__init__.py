"""MILK (Bai et al., SIGIR 2024) and its ablations, as a method.

Its hyper-parameters keep their historical places: `config.model.*` (the
switches, alpha, embed_dim) and `config.train.beta`, `align_weight`,
`reg_weight`, `reg_target`, `variance_ddof`, `task_loss`; `make` reads them
once (`objective.read_hyper`). ERM is MILK with `model.use_invariance=False`
and `model.use_alignment=False`. `model.fusion` ('mean', Eq. 18, or
'present') is how an item's modalities become its vector, for MILK and ERM
alike (model.py). `train.modality_dropout` drops one modality of a training
item at random, its imputed fill in its place.

The package: model.py (parameters, extractors, fusion, scores),
environments.py (the environment weights), losses.py (the terms of the
objective), objective.py (the training loss, Eq. 16), reference.py (the same
loss computed plainly, which the benchmark times beside it).
"""

import jax
import ml_collections
import numpy as np

from milk_jax import methods
from milk_jax.data import missing
from milk_jax.errors import ConfigError
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import step_keys
from milk_jax.methods.milk import environments
from milk_jax.methods.milk import losses
from milk_jax.methods.milk import model
from milk_jax.methods.milk import objective
from milk_jax.methods.milk import reference

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


def step_weights(hyper: objective.Hyper, key: jax.Array, num_modalities: int) -> jax.Array:
  """Environment weights of one step: (M + 1, M), (M, M) or (1, M) for ERM."""
  if not hyper.use_invariance:
    return environments.uniform_weights(num_modalities)
  if not hyper.resample_weights:
    # One draw for the whole run, from a key that depends on the seed only.
    key = jax.random.fold_in(jax.random.key(hyper.seed), _FIXED_WEIGHTS_STREAM)
  return environments.env_weights(
      key, num_modalities, hyper.alpha,
      include_uniform=hyper.use_uniform_env, cyclic=hyper.cyclic_shift)


def epoch_weights(hyper: objective.Hyper, train_key: jax.Array,
                  first_step: jax.Array, num_steps: int, num_modalities: int) -> jax.Array:
  """(num_steps, E, M): the weights of steps first_step, first_step + 1, ...

  One vectorised draw for the whole epoch gives the same values as drawing
  step by step (each step still has its own key, fold_in(train_key, step)),
  but runs the Dirichlet's gamma sampler once instead of once per step.
  """
  keys = step_keys(train_key, first_step, num_steps)
  return jax.vmap(lambda key: step_weights(hyper, key, num_modalities))(keys)


def imputed_fills(hyper: objective.Hyper, dataset) -> dict[str, np.ndarray]:
  """{extras key: fill}: each modality's imputed row as the tables hold it (normalised
  when data.normalize, as the features are)."""
  fills = {}
  for m, fill in enumerate(dataset.imputation.fills):
    row = np.asarray(fill, np.float32)[None]
    fills[objective.FILL_KEY.format(m)] = (missing.l2_normalize(row) if hyper.normalize
                                           else row)[0]
  return fills


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  hyper = objective.read_hyper(config)
  num_modalities = len(spec.feature_dims)
  rate = hyper.modality_dropout

  def init(key):
    return model.init_params(key, spec.num_users, spec.feature_dims, hyper.embed_dim,
                             hyper.user_init_std)

  def embed(params, tables):
    available = tables.availability if hyper.fusion == 'present' else None
    return params['user_embedding'], model.item_embeddings(params, tables.features, available)

  def step_inputs(train_key, first_step, num_steps):
    weights = epoch_weights(hyper, train_key, first_step, num_steps, num_modalities)
    if rate == 0:
      return weights
    return weights, step_keys(jax.random.fold_in(train_key, _DROPOUT_STREAM), first_step,
                              num_steps)

  def prepare(dataset, extras):
    return {**extras, **(imputed_fills(hyper, dataset) if rate > 0 else {})}

  # The reference scores plain weights; the authors' step has no modality dropout.
  reference_loss = reference.make_loss_fn(hyper) if rate == 0 else None
  return Method(init=init, loss=objective.make_loss_fn(hyper), embed=embed,
                step_inputs=step_inputs, prepare=prepare,
                log_keys=('bpr', 'env_variance', 'alignment', 'regulariser'),
                reference_loss=reference_loss)
