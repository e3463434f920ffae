"""Training: the state, the jitted train step, whole epochs, and the loop.

`train_and_evaluate(config, workdir)` is the one entry point: it loads and
checks the data, trains with early stopping on validation, resumes from the
latest checkpoint, and writes `config.json`, the id maps `users.tsv` and
`items.tsv`, `metrics.jsonl` and `results.json` into the workdir.
"""

import contextlib
import json
import logging
import math
import os
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import environments
from milk_jax import evaluate
from milk_jax import faults
from milk_jax import interrupt
from milk_jax import losses
from milk_jax import model
from milk_jax import runfolder
from milk_jax import sharding
from milk_jax.data import device_sampling
from milk_jax.data import ids as data_ids
from milk_jax.errors import ConfigError
from milk_jax.errors import DivergenceError
from milk_jax.errors import Interrupted
from milk_jax.errors import RunFolderError

log = logging.getLogger('milk_jax')

@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Global step, int32 scalar.
  params: model.Params
  opt_state: optax.OptState


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adam(config.train.learning_rate)


def create_train_state(config: ml_collections.ConfigDict, key: jax.Array,
                       num_users: int, feature_dims: tuple[int, ...]) -> TrainState:
  """Fresh parameters and Adam state; the user table is padded when it is sharded."""
  params = model.init_params(key, num_users, feature_dims, config.model.embed_dim,
                             config.model.user_init_std)
  padding = sharding.num_user_rows(config, num_users) - num_users
  if padding:  # Zero rows appended after the draw: the real rows match an unsharded run.
    params['user_embedding'] = jnp.pad(params['user_embedding'], ((0, padding), (0, 0)))
  opt_state = make_optimizer(config).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


FEATURE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
SAMPLERS = ('host', 'device')


def item_data_on_device(dataset: data_lib.Dataset, feature_dtype: str = 'float32',
                        sharding: jax.sharding.Sharding | None = None) -> dict[str, Any]:
  """Item features (in `feature_dtype`) and availability as device arrays, for every step."""
  dtype = FEATURE_DTYPES[feature_dtype]
  item_data = {'features': tuple(jnp.asarray(f, dtype) for f in dataset.features),
               'availability': jnp.asarray(dataset.availability)}
  return item_data if sharding is None else jax.device_put(item_data, sharding)


def step_weights(config: ml_collections.ConfigDict, key: jax.Array,
                 num_modalities: int) -> jax.Array:
  """Environment weights of one step: (M + 1, M), (M, M) or (1, M) for ERM."""
  if not config.model.use_invariance:
    return environments.uniform_weights(num_modalities)
  if not config.model.resample_weights:
    # One draw for the whole run, from a key that depends on the seed only.
    key = jax.random.fold_in(jax.random.key(config.seed), 7)
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
  steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(train_key, steps)
  return jax.vmap(lambda key: step_weights(config, key, num_modalities))(keys)


def objective(config: ml_collections.ConfigDict, params: model.Params, batch,
              user_vectors: jax.Array, pos_reps: jax.Array, neg_reps: jax.Array,
              pos_scores: jax.Array, neg_scores: jax.Array,
              item_data: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MILK's loss (Eq. 16) from a batch's representations and per-environment scores.

  Args:
    user_vectors: (B, d); pos_reps, neg_reps: (B, M, d) modality outputs.
    pos_scores, neg_scores: (E, B) scores in each environment (Eq. 13).
  Returns:
    (loss, metrics).
  """
  train_config = config.train
  env_losses = losses.bpr_per_env(pos_scores, neg_scores)
  task_loss, env_variance = losses.rex_loss(env_losses, train_config.beta,
                                            train_config.variance_ddof, train_config.task_loss)
  positives = batch['positives']
  if config.model.use_alignment:
    alignment = losses.alignment_loss(pos_reps, item_data['availability'][positives],
                                      losses.first_occurrence_weights(positives))
  else:
    alignment = jnp.zeros(())

  if train_config.reg_target == 'embeddings':
    regulariser = losses.embedding_l2(user_vectors, pos_reps.mean(axis=1),
                                      neg_reps.mean(axis=1))
  else:
    regulariser = losses.params_l2(params)

  loss = (task_loss + train_config.align_weight * alignment
          + train_config.reg_weight * regulariser)
  metrics = {'loss': loss, 'bpr': env_losses.mean(), 'env_variance': env_variance,
             'alignment': alignment, 'regulariser': regulariser}
  return loss, metrics


def batch_representations(params: model.Params, batch, item_data: dict[str, Any]):
  """(user_vectors (B, d), pos_reps (B, M, d), neg_reps (B, M, d)) of a batch.

  Only the batch's items go through the extractors, in one gather, once for
  all environments.
  """
  users, positives, negatives = batch['users'], batch['positives'], batch['negatives']
  items = jnp.concatenate([positives, negatives])
  features = [f[items] for f in item_data['features']]
  representations = model.modality_representations(params['extractors'], features)
  pos_reps, neg_reps = jnp.split(representations, 2)
  return params['user_embedding'][users], pos_reps, neg_reps


def make_loss_fn(config: ml_collections.ConfigDict) -> Callable:
  """loss_fn(params, batch, weights, item_data) -> (loss, metrics), Eq. 16.

  `weights` are the step's environment weights, (E, M) from `step_weights`.
  Scores are linear in the weights, so each environment's scores mix the M
  per-modality scores instead of fusing E item vectors.
  """
  def loss_fn(params, batch, weights, item_data):
    user_vectors, pos_reps, neg_reps = batch_representations(params, batch, item_data)
    return objective(config, params, batch, user_vectors, pos_reps, neg_reps,
                     model.env_scores(user_vectors, pos_reps, weights),
                     model.env_scores(user_vectors, neg_reps, weights), item_data)

  return loss_fn


def make_update(config: ml_collections.ConfigDict, loss_fn: Callable | None = None) -> Callable:
  """update(state, batch, weights, item_data) -> (state, metrics): one Adam step; pure.

  `loss_fn` defaults to `make_loss_fn(config)`; the benchmark passes its reference.
  """
  optimizer = make_optimizer(config)
  grad_fn = jax.grad(loss_fn or make_loss_fn(config), has_aux=True)

  def update(state: TrainState, batch, weights, item_data):
    grads, metrics = grad_fn(state.params, batch, weights, item_data)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return update


def make_train_step(config: ml_collections.ConfigDict, num_modalities: int,
                    loss_fn: Callable | None = None) -> Callable:
  """train_step(state, batch, key, item_data) -> (state, metrics); pure, not jitted.

  The simple path: draws the step's weights from `key`, then one update.
  `batch` holds 'users', 'positives', 'negatives', each (B,) int32;
  `item_data` is `item_data_on_device(dataset)`.
  """
  update = make_update(config, loss_fn)

  def train_step(state: TrainState, batch, key, item_data):
    return update(state, batch, step_weights(config, key, num_modalities), item_data)

  return train_step


def _scan_updates(config: ml_collections.ConfigDict, num_modalities: int) -> Callable:
  """scan(state, triples, train_key, item_data): the epoch's updates as one lax.scan."""
  update = make_update(config)

  def scan(state, triples, train_key, item_data):
    num_steps = triples['users'].shape[0]
    weights = epoch_weights(config, train_key, state.step, num_steps, num_modalities)
    def body(state, inputs):
      batch, step_weights_ = inputs
      return update(state, batch, step_weights_, item_data)
    state, metrics = jax.lax.scan(body, state, (triples, weights))
    return state, jax.tree.map(jnp.mean, metrics)

  return scan


def make_train_epoch(config: ml_collections.ConfigDict, num_modalities: int,
                     batch_sharding: jax.sharding.Sharding | None = None) -> Callable:
  """Jitted train_epoch(state, triples, train_key, item_data) -> (state, mean metrics).

  One `lax.scan` over host-sampled batches: a single device program per epoch.
  `triples` holds 'users', 'positives', 'negatives' of shape (steps, B); step
  s uses the key fold_in(train_key, global step), the same as a step-by-step loop.
  With `batch_sharding` (of the (steps, B) arrays) the batch axis is split
  over devices; the state keeps whatever sharding it comes with.
  """
  scan = _scan_updates(config, num_modalities)

  def train_epoch(state, triples, train_key, item_data):
    if batch_sharding is not None:
      triples = jax.lax.with_sharding_constraint(triples, batch_sharding)
    return scan(state, triples, train_key, item_data)

  return jax.jit(train_epoch, donate_argnums=0)


def make_device_epoch(config: ml_collections.ConfigDict, num_modalities: int,
                      num_search_steps: int,
                      batch_sharding: jax.sharding.Sharding | None = None) -> Callable:
  """Jitted epoch(state, sample_key, train_key, item_data, tables) -> (state, mean metrics).

  Shuffling, negative sampling and every update in one device program;
  `tables` is `device_sampling.sampler_tables(dataset, pool)`.
  """
  scan = _scan_updates(config, num_modalities)
  batch_size = config.train.batch_size

  def train_epoch(state, sample_key, train_key, item_data, tables):
    triples = device_sampling.epoch_triples(sample_key, tables, batch_size, num_search_steps)
    if batch_sharding is not None:
      triples = jax.lax.with_sharding_constraint(triples, batch_sharding)
    return scan(state, triples, train_key, item_data)

  return jax.jit(train_epoch, donate_argnums=0)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raise ConfigError on config values the code cannot honour."""
  def require(ok: bool, field: str, message: str):
    if not ok:
      raise ConfigError(f'config.{field}={config_value(config, field)!r}: {message}')

  require(config.model.embed_dim > 0, 'model.embed_dim', 'must be positive')
  require(config.model.alpha > 0, 'model.alpha', 'the Dirichlet concentration must be positive')
  require(config.train.batch_size > 0, 'train.batch_size', 'must be positive')
  require(config.train.learning_rate > 0, 'train.learning_rate', 'must be positive')
  require(config.train.eval_every >= 1, 'train.eval_every', 'must be at least 1')
  require(config.train.patience >= 1, 'train.patience', 'must be at least 1')
  require(config.train.num_epochs >= 1, 'train.num_epochs', 'must be at least 1')
  require(config.train.checkpoint_every >= 0, 'train.checkpoint_every',
          'must be 0 (at evaluations) or a positive number of epochs')
  require(config.train.divergence_factor >= 0, 'train.divergence_factor',
          'must be non-negative (0 turns the check off)')
  require(config.train.divergence_epochs >= 1, 'train.divergence_epochs', 'must be at least 1')
  require(config.train.beta >= 0, 'train.beta', 'must be non-negative')
  require(config.train.reg_target in ('embeddings', 'params'), 'train.reg_target',
          "must be 'embeddings' or 'params'")
  require(config.train.variance_ddof in (0, 1), 'train.variance_ddof', 'must be 0 or 1')
  require(config.train.task_loss in losses.TASK_REDUCTIONS, 'train.task_loss',
          f'must be one of {losses.TASK_REDUCTIONS}')
  require(len(config.eval.ks) > 0 and all(k > 0 for k in config.eval.ks), 'eval.ks',
          'needs at least one positive cut-off')
  require(config.train.select_metric in evaluate.metric_keys(config.eval.ks),
          'train.select_metric', f'must be one of {evaluate.metric_keys(config.eval.ks)}')
  require(config.eval.candidates in ('all_new', 'split'), 'eval.candidates',
          "must be 'all_new' or 'split'")
  require(config.eval.user_batch_size > 0, 'eval.user_batch_size', 'must be positive')
  require(config.train.sampler in SAMPLERS, 'train.sampler', f'must be one of {SAMPLERS}')
  require(config.train.feature_dtype in FEATURE_DTYPES, 'train.feature_dtype',
          f'must be one of {tuple(FEATURE_DTYPES)}')
  require(config.train.data_parallel or not config.train.shard_user_table,
          'train.shard_user_table', 'needs config.train.data_parallel=True')
  if config.train.data_parallel:
    problem = sharding.check_batch(config.train.batch_size, sharding.make_mesh())
    require(problem is None, 'train.batch_size', problem or '')
  # Host-sampled batches are numpy arrays of one process; several hosts share device ones.
  require(jax.process_count() == 1 or config.train.sampler == 'device', 'train.sampler',
          "must be 'device' when several processes train together")


def config_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  for part in dotted.split('.'):
    config = config[part]
  return config


def candidate_items(dataset: data_lib.Dataset, split: str, candidates: str) -> np.ndarray:
  """The new items a user of `split` ranks: all new items, or the split's own."""
  if candidates == 'all_new':
    return np.union1d(dataset.val_items, dataset.test_items)
  return dataset.val_items if split == 'val' else dataset.test_items


def evaluate_params(config: ml_collections.ConfigDict, params: model.Params,
                    item_data: dict[str, Any], dataset: data_lib.Dataset, split: str,
                    by_group: bool = False) -> dict[str, Any]:
  """Ranking metrics of `split` ('val' or 'test'); with groups when `by_group`."""
  item_vectors = _item_embeddings_jit(params, item_data['features'])
  pairs = dataset.val_pairs if split == 'val' else dataset.test_pairs
  candidates = candidate_items(dataset, split, config.eval.candidates)
  users = params['user_embedding']
  if by_group:
    return evaluate.rank_metrics_by_group(users, item_vectors, pairs, candidates,
                                          dataset.num_missing, config.eval.ks,
                                          config.eval.user_batch_size)
  return evaluate.rank_metrics(users, item_vectors, pairs, candidates, config.eval.ks,
                               config.eval.user_batch_size)


_item_embeddings_jit = jax.jit(model.item_embeddings)


def is_primary_process() -> bool:
  """Only process 0 writes logs and results when several hosts train together."""
  return jax.process_index() == 0


def _write_json(path: str, payload: Any) -> None:
  if is_primary_process():
    runfolder.write_json(path, payload)


def initial_loop_state(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Loop counters, saved as JSON with every latest checkpoint."""
  del config  # Every config starts from the same counters.
  return {'epoch': 0, 'best_metric': None, 'best_epoch': 0, 'evals_since_best': 0,
          'best_val': None, 'train_seconds': 0.0, 'compile_seconds': 0.0,
          'first_loss': None, 'epochs_above': 0}


def _format_metrics(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
  return ' '.join(f'{k} {metrics[k]:.4f}' for k in keys if k in metrics)


def _shown_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The metrics a log line shows: Recall and NDCG at every cut-off."""
  return tuple(f'{m}@{k}' for m in ('recall', 'ndcg') for k in config.eval.ks)


class EpochProgram:
  """One training epoch as the config asks: sampler, feature dtype and devices.

  `run(state, epoch)` samples the epoch's triples (on the host with numpy, or
  inside the device program) and applies all of its updates. Epoch e's
  triples depend on (seed, e) only, and step s's weights on (seed, s), so a
  resumed run repeats an uninterrupted one exactly. The program is compiled
  ahead of its first run, so that `last_compile_seconds` tells compile time
  apart from training time.
  """

  def __init__(self, config: ml_collections.ConfigDict, dataset: data_lib.Dataset):
    self.config = config
    self.dataset = dataset
    num_modalities = len(dataset.features)
    root_key = jax.random.key(config.seed)
    self.train_key = jax.random.fold_in(root_key, 1)
    self.sample_key = jax.random.fold_in(root_key, 2)
    self.mesh = sharding.mesh_from_config(config)
    batch_sharding = replicated = None
    if self.mesh is not None:
      batch_sharding = sharding.batch_sharding(self.mesh)
      replicated = sharding.replicated(self.mesh)
    self.batch_sharding = batch_sharding
    self.item_data = item_data_on_device(dataset, config.train.feature_dtype, replicated)
    if config.train.sampler == 'device':
      tables = device_sampling.sampler_tables(dataset, config.data.negatives)
      self.tables = tables if replicated is None else jax.device_put(tables, replicated)
      self.epoch_fn = make_device_epoch(config, num_modalities,
                                        device_sampling.search_steps(dataset), batch_sharding)
    else:
      self.epoch_fn = make_train_epoch(config, num_modalities, batch_sharding)
    self._compiled = None
    self.last_compile_seconds = 0.0  # Compile time within the last `run`.

  def place(self, state: TrainState) -> TrainState:
    """Put a state on the mesh (replicated, the user table maybe by rows)."""
    if self.mesh is None:
      return state
    return jax.device_put(state, sharding.state_shardings(
        state, self.mesh, self.config.train.shard_user_table))

  def triples(self, epoch: int) -> dict[str, np.ndarray]:
    """The host sampler's (steps, B) triples of `epoch`."""
    rng = np.random.default_rng([self.config.seed, 1, epoch])
    users, positives, negatives = data_lib.epoch_triples(
        rng, self.dataset, self.config.train.batch_size, self.config.data.negatives)
    triples = {'users': users, 'positives': positives, 'negatives': negatives}
    if self.batch_sharding is not None:
      triples = jax.device_put(triples, self.batch_sharding)
    return triples

  def run(self, state: TrainState, epoch: int) -> tuple[TrainState, dict[str, jax.Array]]:
    if self.config.train.sampler == 'device':
      args = (state, jax.random.fold_in(self.sample_key, epoch), self.train_key,
              self.item_data, self.tables)
    else:
      args = (state, self.triples(epoch), self.train_key, self.item_data)
    self.last_compile_seconds = 0.0
    if self._compiled is None:  # Every epoch has the same shapes: one compilation.
      tic = time.perf_counter()
      self._compiled = self.epoch_fn.lower(*args).compile()
      self.last_compile_seconds = time.perf_counter() - tic
    return self._compiled(*args)


def check_divergence(config: ml_collections.ConfigDict, loop: dict[str, Any], epoch: int,
                     metrics: dict[str, float], best_path: str) -> None:
  """DivergenceError on a non-finite loss, or a loss far above the first epoch's for long.

  Updates loop['first_loss'] and loop['epochs_above'] (saved with checkpoints,
  so a resumed run counts on where it stopped).
  """
  train_config = config.train
  advice = (f'lower config.train.learning_rate (now {train_config.learning_rate:g}) or '
            f'config.train.beta (now {train_config.beta:g}); the best checkpoint (epoch '
            f"{loop['best_epoch']}) is kept in {best_path}")
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    raise DivergenceError(f'training diverged at epoch {epoch}: the loss is not finite '
                          f'({", ".join(f"{k} {v}" for k, v in bad.items())}); {advice}')
  loss, first = metrics['loss'], loop['first_loss']
  if first is None:
    loop['first_loss'] = loss
    return
  factor = train_config.divergence_factor
  above = factor > 0 and loss > factor * abs(first)
  loop['epochs_above'] = loop['epochs_above'] + 1 if above else 0
  if loop['epochs_above'] >= train_config.divergence_epochs:
    raise DivergenceError(
        f'training diverged at epoch {epoch}: the loss ({loss:.4g}) has stayed above '
        f'{factor:g} x the first epoch\'s ({first:.4g}) for {loop["epochs_above"]} epochs '
        f'(config.train.divergence_factor, divergence_epochs); {advice}')


class Training:
  """One run in its locked workdir: resume, epochs, evaluations, checkpoints, the log.

  A latest checkpoint holds the state, the best parameters so far and the
  loop counters, so it alone is enough to resume; the best checkpoint is
  the copy that `--mode=eval` reads, re-saved from the latest one whenever
  the two disagree (a kill between their saves).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               dataset: data_lib.Dataset, program: EpochProgram):
    self.config = config
    self.workdir = workdir
    self.dataset = dataset
    self.program = program
    feature_dims = tuple(f.shape[1] for f in dataset.features)
    root_key = jax.random.key(config.seed)
    self.state = program.place(create_train_state(config, jax.random.fold_in(root_key, 0),
                                                  dataset.num_users, feature_dims))
    self.best_params = None
    self.loop = initial_loop_state(config)
    self.history: list[dict[str, Any]] = []
    self.log_path = os.path.join(workdir, 'metrics.jsonl')
    self.checkpoints = checkpoint.Checkpoints(workdir)
    self.select = config.train.select_metric
    self.ks_shown = _shown_keys(config)

  # ------------------------------------------------------------ checkpoints

  def _latest_like(self) -> dict[str, Any]:
    return {'state': _state_tree(self.state), 'best_params': self.state.params}

  def save_latest(self, epoch: int) -> None:
    self.checkpoints.save(checkpoint.LATEST, epoch, {'state': _state_tree(self.state),
                                                     'best_params': self.best_params}, self.loop)

  def _save_latest_once(self) -> None:
    """Save the latest state unless the newest latest checkpoint already holds its epoch."""
    saved = self.checkpoints.epochs(checkpoint.LATEST)
    if not saved or saved[0] != self.loop['epoch']:
      self.save_latest(self.loop['epoch'])

  def save_best(self) -> None:
    self.checkpoints.save(checkpoint.BEST, self.loop['best_epoch'], {'params': self.best_params},
                          {'epoch': self.loop['best_epoch'], 'val': self.loop['best_val']})

  def _repair_best(self) -> None:
    """Re-save the best checkpoint when it is missing, damaged or of another epoch."""
    best_epoch = self.loop['best_epoch']
    saved = self.checkpoints.epochs(checkpoint.BEST)
    problem = None
    if not saved:
      problem = 'is missing'
    elif saved[0] != best_epoch:
      problem = f'holds epoch {saved[0]}'
    else:
      try:
        self.checkpoints.restore(checkpoint.BEST, best_epoch, {'params': self.best_params})
      except checkpoint.DamagedCheckpoint as error:
        problem = f'is damaged ({error})'
    if problem is not None:
      log.warning("%s %s, but the run's best is epoch %d: re-saving it from the latest "
                  'checkpoint', self.checkpoints.path(checkpoint.BEST), problem, best_epoch)
      self.checkpoints.discard(checkpoint.BEST)
      self.save_best()

  def resume(self, saved_num_epochs: int | None) -> int:
    """Restore the newest intact latest checkpoint, if any; returns its epoch (0: fresh)."""
    restored = None
    if self.config.train.resume:
      restored = self.checkpoints.restore_newest(checkpoint.LATEST, self._latest_like())
    if restored is None:
      # Starting over: a best checkpoint or log left by an attempt that died before its
      # first latest checkpoint is stale.
      self.checkpoints.discard(checkpoint.BEST)
      self._truncate_log(-1)  # Nothing of it is kept, not even its epoch-0 evaluation.
      return 0
    epoch, arrays, loop = restored
    if loop.get('epoch') != epoch:
      raise RunFolderError(f'{self.checkpoints.path(checkpoint.LATEST, epoch)} records epoch '
                           f"{loop.get('epoch')}: the checkpoint folder was renamed or mixed up")
    if saved_num_epochs is not None:
      runfolder.check_continuation(self.workdir, saved_num_epochs, epoch, self.config)
    self.state = self.program.place(_state_from_tree(arrays['state']))
    self.best_params = arrays['best_params']
    self.loop = loop
    self._repair_best()
    self._truncate_log(epoch)
    log.info('resumed from %s at epoch %d (best %s %.4f at epoch %d)', self.workdir, epoch,
             self.select, loop['best_metric'], loop['best_epoch'])
    return epoch

  # ---------------------------------------------------------------- the log

  def _truncate_log(self, epoch: int) -> None:
    """Keep the log records up to `epoch` (-1: none); later ones are an interrupted tail."""
    records = runfolder.read_log(self.log_path) if is_primary_process() else []
    self.history = [r for r in records if r.get('epoch', math.inf) <= epoch]
    if is_primary_process() and os.path.exists(self.log_path) and (
        len(self.history) != len(records) or not _ends_with_newline(self.log_path)):
      runfolder.rewrite_log(self.log_path, self.history, epoch)

  def log_record(self, record: dict[str, Any]) -> None:
    self.history.append(record)
    if faults.armed('log_append', record['epoch']):
      self.checkpoints.wait()  # The crash test expects the checkpoints before it on disk.
    if is_primary_process():
      runfolder.append_log(self.log_path, record)

  # ---------------------------------------------------------------- the loop

  def validate(self, epoch: int) -> bool:
    """Evaluate, track the best, save it; True when patience is exhausted."""
    loop = self.loop
    val = evaluate_params(self.config, self.state.params, self.program.item_data,
                          self.dataset, 'val')
    improved = loop['best_metric'] is None or val[self.select] > loop['best_metric']
    if improved:
      loop.update(best_metric=val[self.select], best_epoch=epoch, evals_since_best=0,
                  best_val=val)
      self.best_params = jax.tree.map(jnp.copy, self.state.params)  # The next epoch donates.
      self.save_best()
    else:
      loop['evals_since_best'] += 1
    self.log_record({'epoch': epoch, 'kind': 'eval', 'val': val})
    log.info('eval epoch %d: val %s | best %s %.4f at epoch %d%s', epoch,
             _format_metrics(val, self.ks_shown), self.select, loop['best_metric'],
             loop['best_epoch'], ' (new best)' if improved else '')
    return loop['evals_since_best'] >= self.config.train.patience

  def _crash_point(self, name: str, epoch: int) -> None:
    if faults.armed(name, epoch):
      self.checkpoints.wait()  # What was saved before the crash point is on disk.
      faults.crash_point(name, epoch)

  def train_epoch(self, epoch: int) -> dict[str, float]:
    tic = time.perf_counter()
    self.state, metrics = self.program.run(self.state, epoch)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    compile_seconds = self.program.last_compile_seconds
    seconds = time.perf_counter() - tic - compile_seconds
    if compile_seconds:
      log.info('compiled the epoch program in %.1fs', compile_seconds)
    # Saved with the checkpoint: a resumed run keeps its totals.
    self.loop['train_seconds'] += seconds
    self.loop['compile_seconds'] += compile_seconds
    check_divergence(self.config, self.loop, epoch, metrics,
                     self.checkpoints.path(checkpoint.BEST))
    self.loop['epoch'] = epoch
    self.log_record({'epoch': epoch, 'kind': 'train', **metrics, 'seconds': seconds})
    steps = math.ceil(len(self.dataset.train_pairs) / self.config.train.batch_size)
    log.info('epoch %d/%d loss %.4f (bpr %.4f var %.2e align %.4f reg %.3f) '
             '%.2fs, %.0f triples/s', epoch, self.config.train.num_epochs, metrics['loss'],
             metrics['bpr'], metrics['env_variance'], metrics['alignment'],
             metrics['regulariser'], seconds,
             steps * self.config.train.batch_size / max(seconds, 1e-9))
    return metrics

  def run(self, start_epoch: int,
          epoch_callback: Callable[[int, dict[str, float]], None] | None) -> bool:
    """Train from `start_epoch` to the end or early stop; True when stopped early."""
    train_config = self.config.train
    stopped = self.loop['evals_since_best'] >= train_config.patience
    if self.loop['best_metric'] is None:  # The untrained model's evaluation comes first.
      stopped = self.validate(0)
    for epoch in range(start_epoch + 1, train_config.num_epochs + 1):
      if stopped:
        break
      if interrupt.requested():
        self._save_latest_once()
        self.checkpoints.wait()
        raise Interrupted(f"interrupted at epoch {self.loop['epoch']}; run the same command "
                          'to resume')
      metrics = self.train_epoch(epoch)
      evaluated = epoch % train_config.eval_every == 0 or epoch == train_config.num_epochs
      if evaluated:
        stopped = self.validate(epoch)
      self._crash_point('between_saves', epoch)
      every = train_config.checkpoint_every
      if stopped or epoch == train_config.num_epochs or (epoch % every == 0 if every
                                                         else evaluated):
        self.save_latest(epoch)
      self._crash_point('after_latest', epoch)
      if epoch_callback is not None:
        self.checkpoints.wait()
        epoch_callback(epoch, metrics)
    self._save_latest_once()
    return stopped

  def results(self, stopped_early: bool) -> dict[str, Any]:
    """The results contract, with test metrics of the best parameters."""
    loop, config, item_data = self.loop, self.config, self.program.item_data
    test = evaluate_params(config, self.best_params, item_data, self.dataset, 'test')
    test_by_group = evaluate_params(config, self.best_params, item_data, self.dataset, 'test',
                                    by_group=True)
    log.info('test at best epoch %d: %s', loop['best_epoch'],
             _format_metrics(test, self.ks_shown))
    return {
        'best_epoch': int(loop['best_epoch']),
        'epochs_run': int(loop['epoch']),
        'stopped_early': bool(stopped_early),
        'val': loop['best_val'],
        'test': test,
        'test_by_group': test_by_group,
        'missing': self.dataset.missing_report(),
        'train_seconds': loop['train_seconds'],
        'compile_seconds': loop['compile_seconds'],
        'history': [r for r in self.history if r['kind'] == 'eval'],
    }


def _ends_with_newline(path: str) -> bool:
  with open(path, 'rb') as f:
    f.seek(0, os.SEEK_END)
    if f.tell() == 0:
      return True
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'


def _workdir_lock(workdir: str):
  """The run folder's lock; other processes of a multi-host run share process 0's folder."""
  return runfolder.lock(workdir) if is_primary_process() else contextlib.nullcontext()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       epoch_callback: Callable[[int, dict[str, float]], None] | None = None
                       ) -> dict[str, Any]:
  """Train MILK with early stopping and write the results contract to `workdir`.

  Args:
    config: a config from `configs/`.
    workdir: where config.json, users.tsv, items.tsv, metrics.jsonl, checkpoints/ and
      results.json go.
    epoch_callback: called as f(epoch, train_metrics) after every epoch.
  Returns:
    The dict written to results.json.
  Raises:
    UserError subclasses (milk_jax.errors) for bad config or data, a workdir
    of another run or in use, damaged files, divergence and Ctrl-C.
  """
  check_config(config)
  dataset = data_lib.load_dataset(config)  # Raises DataError before anything is written.
  log.info('data: %s', dataset.summary())
  program = EpochProgram(config, dataset)  # Also raises DataError before any write.
  with _workdir_lock(workdir):
    saved = runfolder.saved_config(workdir)
    runfolder.check_same_run(workdir, saved, config)
    training = Training(config, workdir, dataset, program)
    try:
      if training.checkpoints.epochs(checkpoint.LATEST) and not config.train.resume:
        raise ConfigError(
            f'{workdir} already holds checkpoints and config.train.resume=False: pass '
            '--config.train.resume=True to continue that run, or use a fresh --workdir.')
      start_epoch = training.resume(None if saved is None else saved['train']['num_epochs'])
      _write_json(os.path.join(workdir, runfolder.CONFIG_FILE), json.loads(config.to_json()))
      if is_primary_process():
        data_ids.write_id_maps(workdir, dataset)
      stopped_early = training.run(start_epoch, epoch_callback)
    except BaseException:
      training.checkpoints.close(quietly=True)  # Saves in flight complete; the error wins.
      raise
    training.checkpoints.close()
    results = training.results(stopped_early)
    _write_json(os.path.join(workdir, 'results.json'), results)
  return results


def _restore_best_params(config: ml_collections.ConfigDict, workdir: str,
                         state: TrainState) -> tuple[int, model.Params]:
  """(epoch, params) of the best checkpoint, or of the latest one's copy when it is damaged."""
  checkpoints = checkpoint.Checkpoints(workdir)
  try:
    saved = checkpoints.epochs(checkpoint.BEST)
    try:
      if not saved:
        raise checkpoint.DamagedCheckpoint(f'{checkpoints.path(checkpoint.BEST)} is empty')
      arrays, _ = checkpoints.restore(checkpoint.BEST, saved[0], {'params': state.params})
      return saved[0], arrays['params']
    except checkpoint.DamagedCheckpoint as error:
      try:
        latest = checkpoints.restore_newest(
            checkpoint.LATEST, {'state': _state_tree(state), 'best_params': state.params})
      except RunFolderError as latest_error:
        raise RunFolderError(f'{error}, and no intact copy of the best parameters is left in '
                             f'{checkpoints.path(checkpoint.LATEST)} ({latest_error})') from None
      if latest is None:
        raise RunFolderError(f'{error}, and {checkpoints.path(checkpoint.LATEST)} holds no copy '
                             'of the best parameters: train the run again') from None
      _, arrays, loop = latest
      log.warning('%s; using the copy of the best parameters (epoch %d) in the latest '
                  'checkpoint', error, loop['best_epoch'])
      return loop['best_epoch'], arrays['best_params']
  finally:
    checkpoints.close()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Restore the best checkpoint of `workdir`, evaluate it, write eval.json."""
  check_config(config)
  dataset = data_lib.load_dataset(config)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise RunFolderError(f'no checkpoints under {workdir}: train first.')
  with _workdir_lock(workdir):
    runfolder.check_same_run(workdir, runfolder.saved_config(workdir), config)
    feature_dims = tuple(f.shape[1] for f in dataset.features)
    state = create_train_state(config, jax.random.key(0), dataset.num_users, feature_dims)
    epoch, params = _restore_best_params(config, workdir, state)
    item_data = item_data_on_device(dataset, config.train.feature_dtype)
    results = {
        'epoch': int(epoch),
        'val': evaluate_params(config, params, item_data, dataset, 'val'),
        'test': evaluate_params(config, params, item_data, dataset, 'test'),
        'test_by_group': evaluate_params(config, params, item_data, dataset, 'test',
                                         by_group=True),
    }
    path = os.path.join(workdir, 'eval.json')
    _write_json(path, results)
  log.info('best checkpoint (epoch %d): test %s; wrote %s', epoch,
           _format_metrics(results['test'], _shown_keys(config)), path)
  return results


def _state_tree(state: TrainState) -> dict[str, Any]:
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}


def _state_from_tree(tree: dict[str, Any]) -> TrainState:
  return TrainState(step=jnp.asarray(tree['step'], jnp.int32), params=tree['params'],
                    opt_state=tree['opt_state'])
