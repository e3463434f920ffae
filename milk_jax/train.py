"""Training: the state, the jitted train step, whole epochs, and the loop.

`train_and_evaluate(config, workdir)` is the one entry point: it loads and
checks the data, trains with early stopping on validation, resumes from the
latest checkpoint, and writes `config.json`, `metrics.jsonl` and
`results.json` into the workdir.
"""

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
from milk_jax import losses
from milk_jax import model
from milk_jax import sharding
from milk_jax.data import device_sampling

log = logging.getLogger('milk_jax')

# Config fields that may change between an interrupted run and its resumption
# (the benchmark section never affects training).
RESUMABLE_CHANGES = ('train.resume', 'train.num_epochs')
IGNORED_SECTIONS = ('benchmark.',)
# Fields added after runs were first saved, with the value those runs used.
ADDED_FIELDS = {'train.sampler': 'host', 'train.feature_dtype': 'float32',
                'train.data_parallel': False, 'train.shard_user_table': False}


class ConfigError(ValueError):
  """A config value the code cannot honour, or a workdir that belongs to another run."""


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
                                            train_config.variance_ddof)
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
  require(config.train.eval_every >= 1, 'train.eval_every', 'must be at least 1')
  require(config.train.patience >= 1, 'train.patience', 'must be at least 1')
  require(config.train.num_epochs >= 0, 'train.num_epochs', 'must be non-negative')
  require(config.train.checkpoint_every >= 1, 'train.checkpoint_every', 'must be at least 1')
  require(config.train.beta >= 0, 'train.beta', 'must be non-negative')
  require(config.train.reg_target in ('embeddings', 'params'), 'train.reg_target',
          "must be 'embeddings' or 'params'")
  require(config.train.variance_ddof in (0, 1), 'train.variance_ddof', 'must be 0 or 1')
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
  """Write atomically: a crash never leaves a half-written file behind."""
  if not is_primary_process():
    return
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def _flatten(d: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in d.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def changed_fields(config_path: str, config: ml_collections.ConfigDict) -> list[str]:
  """Dotted fields where `config` differs from the saved config.json, besides RESUMABLE_CHANGES."""
  with open(config_path) as f:
    previous = _flatten(json.load(f))
  current = _flatten(json.loads(config.to_json()))
  for key, value in ADDED_FIELDS.items():  # Saved by an older version: it ran with `value`.
    previous.setdefault(key, value)
  return sorted(k for k in previous.keys() | current.keys()
                if k not in RESUMABLE_CHANGES and not k.startswith(IGNORED_SECTIONS)
                and previous.get(k) != current.get(k))


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuse to mix runs in one workdir, then record the config.

  A workdir that already holds a run may only be resumed with the same config
  (up to RESUMABLE_CHANGES); nothing already written is overwritten otherwise.
  """
  os.makedirs(workdir, exist_ok=True)
  config_path = os.path.join(workdir, 'config.json')
  has_checkpoints = os.path.isdir(os.path.join(workdir, 'checkpoints'))
  if os.path.exists(config_path):
    differing = changed_fields(config_path, config)
    if differing:
      raise ConfigError(
          f'{config_path} holds a run with a different config (fields: {", ".join(differing)}); '
          'use a fresh --workdir for a new run.')
    if has_checkpoints and not config.train.resume:
      raise ConfigError(
          f'{workdir} already holds checkpoints and config.train.resume=False: pass '
          '--config.train.resume=True to continue that run, or use a fresh --workdir.')
  _write_json(config_path, json.loads(config.to_json()))


def initial_loop_state(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Loop counters saved with every checkpoint; fixed keys so orbax can restore them."""
  best_val = {key: 0.0 for key in evaluate.metric_keys(config.eval.ks)}
  best_val['num_users'] = 0
  return {'epoch': 0, 'best_metric': -math.inf, 'best_epoch': 0, 'evals_since_best': 0,
          'best_val': best_val, 'train_seconds': 0.0}


def _read_history(path: str, up_to_epoch: int) -> list[dict[str, Any]]:
  """Log records of epochs <= up_to_epoch; later ones belong to an interrupted tail."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r for r in records if r['epoch'] <= up_to_epoch]


def _format_metrics(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
  return ' '.join(f'{k} {metrics[k]:.4f}' for k in keys if k in metrics)


class EpochProgram:
  """One training epoch as the config asks: sampler, feature dtype and devices.

  `run(state, epoch)` samples the epoch's triples (on the host with numpy, or
  inside the device program) and applies all of its updates. Epoch e's
  triples depend on (seed, e) only, and step s's weights on (seed, s), so a
  resumed run repeats an uninterrupted one exactly.
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
      return self.epoch_fn(state, jax.random.fold_in(self.sample_key, epoch), self.train_key,
                           self.item_data, self.tables)
    return self.epoch_fn(state, self.triples(epoch), self.train_key, self.item_data)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       epoch_callback: Callable[[int, dict[str, float]], None] | None = None
                       ) -> dict[str, Any]:
  """Train MILK with early stopping and write the results contract to `workdir`.

  Args:
    config: a config from `configs/`.
    workdir: where config.json, metrics.jsonl, checkpoints/ and results.json go.
    epoch_callback: called as f(epoch, train_metrics) after every epoch.
  Returns:
    The dict written to results.json.
  """
  check_config(config)
  dataset = data_lib.load_dataset(config)  # Raises DataError before anything is written.
  log.info('data: %s', dataset.summary())
  program = EpochProgram(config, dataset)  # Also raises DataError before any write.
  prepare_workdir(config, workdir)

  feature_dims = tuple(f.shape[1] for f in dataset.features)
  root_key = jax.random.key(config.seed)
  state = program.place(create_train_state(config, jax.random.fold_in(root_key, 0),
                                           dataset.num_users, feature_dims))
  item_data = program.item_data
  select = config.train.select_metric
  ks_shown = tuple(f'{m}@{k}' for m in ('recall', 'ndcg') for k in config.eval.ks)
  log_path = os.path.join(workdir, 'metrics.jsonl')

  checkpoints = checkpoint.Checkpoints(workdir)
  loop = initial_loop_state(config)
  best_params = None
  start_epoch = 0
  restored = None
  if config.train.resume:
    restored = checkpoints.restore(checkpoint.LATEST, {'state': _state_tree(state), 'loop': loop})
  if restored is not None:
    _, tree = restored
    state = program.place(_state_from_tree(tree['state']))
    loop = jax.tree.map(lambda x: x.item() if hasattr(x, 'item') else x, tree['loop'])
    start_epoch = int(loop['epoch'])
    best = checkpoints.restore(checkpoint.BEST, {'state': _state_tree(state), 'loop': loop})
    if best is not None:
      best_params = _state_from_tree(best[1]['state']).params
    log.info('resumed from %s at epoch %d (best %s %.4f at epoch %d)', workdir,
             start_epoch, select, loop['best_metric'], loop['best_epoch'])
  else:
    # Starting over (nothing to resume, or resume is off in an empty workdir): a best
    # checkpoint left by an attempt that died before its first latest one is stale.
    checkpoints.discard(checkpoint.BEST)
  history = _read_history(log_path, start_epoch) if restored is not None else []
  if is_primary_process():
    with open(log_path, 'w') as f:  # Drop records of an interrupted tail, if any.
      f.writelines(json.dumps(r) + '\n' for r in history)

  def log_record(record: dict[str, Any]) -> None:
    history.append(record)
    if not is_primary_process():
      return
    with open(log_path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def run_validation(epoch: int) -> bool:
    """Evaluate, track the best, save it; True when patience is exhausted."""
    nonlocal best_params
    val = evaluate_params(config, state.params, item_data, dataset, 'val')
    improved = val[select] > loop['best_metric']
    if improved:
      loop.update(best_metric=val[select], best_epoch=epoch, evals_since_best=0, best_val=val)
      best_params = jax.tree.map(jnp.copy, state.params)  # The next epoch donates state.
    else:
      loop['evals_since_best'] += 1
    log_record({'epoch': epoch, 'kind': 'eval', 'val': val})
    log.info('eval epoch %d: val %s | best %s %.4f at epoch %d%s', epoch,
             _format_metrics(val, ks_shown), select, loop['best_metric'],
             loop['best_epoch'], ' (new best)' if improved else '')
    if improved:
      checkpoints.save(checkpoint.BEST, epoch, {'state': _state_tree(state), 'loop': loop})
    return loop['evals_since_best'] >= config.train.patience

  stopped_early = False
  if start_epoch == 0:
    stopped_early = run_validation(0)
  steps_per_epoch = math.ceil(len(dataset.train_pairs) / config.train.batch_size)
  for epoch in range(start_epoch + 1, config.train.num_epochs + 1):
    if stopped_early or loop['evals_since_best'] >= config.train.patience:
      stopped_early = True
      break
    tic = time.perf_counter()
    state, metrics = program.run(state, epoch)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    seconds = time.perf_counter() - tic
    loop['train_seconds'] += seconds  # Saved with the checkpoint: a resumed run keeps its total.
    if not all(math.isfinite(v) for v in metrics.values()):
      raise FloatingPointError(
          f'non-finite training loss at epoch {epoch}: {metrics}; lower '
          'config.train.learning_rate or config.train.beta.')
    loop['epoch'] = epoch
    log_record({'epoch': epoch, 'kind': 'train', **metrics, 'seconds': seconds})
    log.info('epoch %d/%d loss %.4f (bpr %.4f var %.2e align %.4f reg %.3f) '
             '%.2fs, %.0f triples/s', epoch, config.train.num_epochs, metrics['loss'],
             metrics['bpr'], metrics['env_variance'], metrics['alignment'],
             metrics['regulariser'], seconds,
             steps_per_epoch * config.train.batch_size / seconds)
    if epoch % config.train.eval_every == 0 or epoch == config.train.num_epochs:
      stopped_early = run_validation(epoch)
    if epoch % config.train.checkpoint_every == 0 or stopped_early:
      checkpoints.save(checkpoint.LATEST, epoch, {'state': _state_tree(state), 'loop': loop})
    if epoch_callback is not None:
      checkpoints.wait()
      epoch_callback(epoch, metrics)
  if checkpoints.latest_epoch(checkpoint.LATEST) != loop['epoch']:
    checkpoints.save(checkpoint.LATEST, loop['epoch'],
                     {'state': _state_tree(state), 'loop': loop})
  checkpoints.close()

  if best_params is None:  # Resumed a run whose best checkpoint is gone.
    raise FileNotFoundError(f'{workdir}/checkpoints/{checkpoint.BEST} is missing: '
                            'the best model cannot be evaluated; start a fresh --workdir.')
  test = evaluate_params(config, best_params, item_data, dataset, 'test')
  test_by_group = evaluate_params(config, best_params, item_data, dataset, 'test', by_group=True)
  log.info('test at best epoch %d: %s', loop['best_epoch'], _format_metrics(test, ks_shown))
  results = {
      'best_epoch': int(loop['best_epoch']),
      'epochs_run': int(loop['epoch']),
      'stopped_early': bool(stopped_early),
      'val': loop['best_val'],
      'test': test,
      'test_by_group': test_by_group,
      'train_seconds': loop['train_seconds'],
      'history': [r for r in history if r['kind'] == 'eval'],
  }
  _write_json(os.path.join(workdir, 'results.json'), results)
  return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Restore the best checkpoint of `workdir`, evaluate it, write eval.json."""
  check_config(config)
  dataset = data_lib.load_dataset(config)
  feature_dims = tuple(f.shape[1] for f in dataset.features)
  state = create_train_state(config, jax.random.key(0), dataset.num_users, feature_dims)
  loop = initial_loop_state(config)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints', checkpoint.BEST)):
    raise FileNotFoundError(f'no best checkpoint under {workdir}/checkpoints: train first.')
  checkpoints = checkpoint.Checkpoints(workdir)
  restored = checkpoints.restore(checkpoint.BEST, {'state': _state_tree(state), 'loop': loop})
  checkpoints.close()
  if restored is None:
    raise FileNotFoundError(f'no best checkpoint under {workdir}/checkpoints: train first.')
  epoch, tree = restored
  params = _state_from_tree(tree['state']).params
  item_data = item_data_on_device(dataset, config.train.feature_dtype)
  results = {
      'epoch': int(epoch),
      'val': evaluate_params(config, params, item_data, dataset, 'val'),
      'test': evaluate_params(config, params, item_data, dataset, 'test'),
      'test_by_group': evaluate_params(config, params, item_data, dataset, 'test',
                                       by_group=True),
  }
  _write_json(os.path.join(workdir, 'eval.json'), results)
  return results


def _state_tree(state: TrainState) -> dict[str, Any]:
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}


def _state_from_tree(tree: dict[str, Any]) -> TrainState:
  return TrainState(step=jnp.asarray(tree['step'], jnp.int32), params=tree['params'],
                    opt_state=tree['opt_state'])
