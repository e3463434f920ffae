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

log = logging.getLogger('milk_jax')

# Config fields that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ('train.resume', 'train.num_epochs')


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
  params = model.init_params(key, num_users, feature_dims, config.model.embed_dim,
                             config.model.user_init_std)
  opt_state = make_optimizer(config).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def item_data_on_device(dataset: data_lib.Dataset) -> dict[str, Any]:
  """Item features and availability as device arrays, passed to every step."""
  return {'features': tuple(jnp.asarray(f) for f in dataset.features),
          'availability': jnp.asarray(dataset.availability)}


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


def make_loss_fn(config: ml_collections.ConfigDict, num_modalities: int) -> Callable:
  """loss_fn(params, batch, key, item_data) -> (loss, metrics), Eq. 16."""
  train_config = config.train

  def loss_fn(params, batch, key, item_data):
    users, positives, negatives = batch['users'], batch['positives'], batch['negatives']
    batch_size = users.shape[0]
    items = jnp.concatenate([positives, negatives])
    features = [f[items] for f in item_data['features']]
    representations = model.modality_representations(params['extractors'], features)
    pos_reps, neg_reps = representations[:batch_size], representations[batch_size:]
    user_vectors = params['user_embedding'][users]

    weights = step_weights(config, key, num_modalities)
    env_losses = losses.bpr_per_env(model.env_scores(user_vectors, pos_reps, weights),
                                    model.env_scores(user_vectors, neg_reps, weights))
    task_loss, env_variance = losses.rex_loss(env_losses, train_config.beta,
                                              train_config.variance_ddof)

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

  return loss_fn


def make_train_step(config: ml_collections.ConfigDict, num_modalities: int) -> Callable:
  """train_step(state, batch, key, item_data) -> (state, metrics); pure, not jitted.

  `batch` holds 'users', 'positives', 'negatives', each (B,) int32;
  `item_data` is `item_data_on_device(dataset)`.
  """
  optimizer = make_optimizer(config)
  grad_fn = jax.grad(make_loss_fn(config, num_modalities), has_aux=True)

  def train_step(state: TrainState, batch, key, item_data):
    grads, metrics = grad_fn(state.params, batch, key, item_data)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_train_epoch(config: ml_collections.ConfigDict, num_modalities: int) -> Callable:
  """Jitted train_epoch(state, triples, train_key, item_data) -> (state, mean metrics).

  One `lax.scan` over the epoch's batches: a single device program per epoch.
  `triples` holds 'users', 'positives', 'negatives' of shape (steps, B); step
  s uses the key fold_in(train_key, global step), the same as a step-by-step loop.
  """
  train_step = make_train_step(config, num_modalities)

  def train_epoch(state, triples, train_key, item_data):
    def body(state, batch):
      return train_step(state, batch, jax.random.fold_in(train_key, state.step), item_data)
    state, metrics = jax.lax.scan(body, state, triples)
    return state, jax.tree.map(jnp.mean, metrics)

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


def _write_json(path: str, payload: Any) -> None:
  """Write atomically: a crash never leaves a half-written file behind."""
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
  return sorted(k for k in previous.keys() | current.keys()
                if k not in RESUMABLE_CHANGES and previous.get(k) != current.get(k))


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
  prepare_workdir(config, workdir)

  num_modalities = len(dataset.features)
  feature_dims = tuple(f.shape[1] for f in dataset.features)
  root_key = jax.random.key(config.seed)
  train_key = jax.random.fold_in(root_key, 1)
  state = create_train_state(config, jax.random.fold_in(root_key, 0),
                             dataset.num_users, feature_dims)
  item_data = item_data_on_device(dataset)
  train_epoch = make_train_epoch(config, num_modalities)
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
    state = _state_from_tree(tree['state'])
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
  with open(log_path, 'w') as f:  # Drop records of an interrupted tail, if any.
    f.writelines(json.dumps(r) + '\n' for r in history)

  def log_record(record: dict[str, Any]) -> None:
    history.append(record)
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
    rng = np.random.default_rng([config.seed, 1, epoch])
    users, positives, negatives = data_lib.epoch_triples(
        rng, dataset, config.train.batch_size, config.data.negatives)
    triples = {'users': users, 'positives': positives, 'negatives': negatives}
    state, metrics = train_epoch(state, triples, train_key, item_data)
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
  item_data = item_data_on_device(dataset)
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
