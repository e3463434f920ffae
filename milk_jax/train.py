"""Training: the state, the jitted train step, whole epochs, and `train_and_evaluate`.

`train_and_evaluate(config, workdir)` is the one entry point: it loads and
checks the data, gets the warm backbone's vectors when the method needs them,
trains with early stopping on validation, resumes from the latest checkpoint,
and writes `config.json`, the id maps `users.tsv` and `items.tsv`,
`metrics.jsonl` and `results.json` into the workdir. What is trained is
`config.method`'s `Method` (milk_jax/methods/); nothing here is method-specific.
"""

import contextlib
import json
import logging
import os
import time
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import calibration as calibration_lib
from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import evaluate
from milk_jax import loop as loop_lib
from milk_jax import methods
from milk_jax import plots
from milk_jax import runfolder
from milk_jax import serving
from milk_jax import sharding
from milk_jax.config import FEATURE_DTYPES
from milk_jax.config import check_config
from milk_jax.data import device_sampling
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError
from milk_jax.methods import Method
from milk_jax.methods import Tables

log = logging.getLogger('milk_jax')

# Streams of the run's root key (fold_in(key(seed), n)): the parameters' init,
# the per-step draws, and the device sampler's shuffles and negatives.
INIT_STREAM, TRAIN_STREAM, SAMPLE_STREAM = 0, 1, 2


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Updates applied so far: the per-step keys fold it in.
  params: Any
  opt_state: optax.OptState


def make_method(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> Method:
  """config.method's Method, built for the dataset's shapes."""
  spec = methods.DataSpec(num_users=dataset.num_users, num_items=dataset.num_items,
                          feature_dims=tuple(f.shape[1] for f in dataset.features),
                          num_warm_items=int(dataset.warm_items.size))
  return methods.get(config.method).make(config, spec)


def create_train_state(config: ml_collections.ConfigDict, method: Method, key: jax.Array,
                       num_users: int) -> TrainState:
  """Fresh parameters and optimiser state; the user table is padded when it is sharded."""
  params = method.init(key)
  padding = sharding.num_user_rows(config, num_users) - num_users
  if padding and 'user_embedding' in params:
    # Zero rows appended after the draw: the real rows match an unsharded run.
    params['user_embedding'] = jnp.pad(params['user_embedding'], ((0, padding), (0, 0)))
  opt_state = methods.optimizer(method, config).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def tables_on_device(dataset: data_lib.Dataset, feature_dtype: str = 'float32',
                     extras: Mapping[str, np.ndarray] | None = None,
                     placement: jax.sharding.Sharding | None = None) -> Tables:
  """Features (in `feature_dtype`), availability, item groups and extras on device."""
  dtype = FEATURE_DTYPES[feature_dtype]
  is_new = np.zeros(dataset.num_items, bool)
  is_new[dataset.val_items] = True
  is_new[dataset.test_items] = True
  tables = Tables(features=tuple(jnp.asarray(f, dtype) for f in dataset.features),
                  availability=jnp.asarray(dataset.availability),
                  warm_items=jnp.asarray(dataset.warm_items, jnp.int32),
                  is_new=jnp.asarray(is_new),
                  extras={k: jnp.asarray(v) for k, v in (extras or {}).items()})
  return tables if placement is None else jax.device_put(tables, placement)


def make_update(config: ml_collections.ConfigDict, method: Method,
                loss_fn: Callable | None = None) -> Callable:
  """update(state, batch, step_input, tables) -> (state, metrics): one optimiser step; pure.

  `loss_fn` defaults to the method's; the benchmark passes MILK's reference.
  """
  if method.update is not None and loss_fn is None:
    return method.update
  optimizer = methods.optimizer(method, config)
  grad_fn = jax.grad(loss_fn or method.loss, has_aux=True)

  def update(state: TrainState, batch, step_input, tables):
    grads, metrics = grad_fn(state.params, batch, step_input, tables)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return update


def make_train_step(config: ml_collections.ConfigDict, method: Method,
                    loss_fn: Callable | None = None) -> Callable:
  """train_step(state, batch, train_key, tables) -> (state, metrics); pure, not jitted.

  The step-by-step path, an oracle for tests and the benchmark (training runs
  whole epochs): the step's inputs come from fold_in(train_key, state.step),
  exactly as the scanned epoch draws them.
  """
  update = make_update(config, method, loss_fn)

  def train_step(state: TrainState, batch, train_key, tables):
    drawn = method.step_inputs(train_key, state.step, 1)
    return update(state, batch, jax.tree.map(lambda x: x[0], drawn), tables)

  return train_step


def _scan_updates(config: ml_collections.ConfigDict, method: Method) -> Callable:
  """scan_epoch(state, triples, train_key, tables): the epoch's updates as one lax.scan."""
  update = make_update(config, method)

  def scan_epoch(state, triples, train_key, tables):
    num_steps = triples['users'].shape[0]
    step_inputs = method.step_inputs(train_key, state.step, num_steps)
    def body(state, inputs):
      batch, step_input = inputs
      return update(state, batch, step_input, tables)
    state, metrics = jax.lax.scan(body, state, (triples, step_inputs))
    return state, jax.tree.map(jnp.mean, metrics)

  return scan_epoch


def make_train_epoch(config: ml_collections.ConfigDict, method: Method,
                     batch_sharding: jax.sharding.Sharding | None = None) -> Callable:
  """Jitted train_epoch(state, triples, train_key, tables) -> (state, mean metrics).

  One `lax.scan` over host-sampled batches: a single device program per epoch.
  `triples` holds 'users', 'positives', 'negatives' of shape (steps, B); step
  s's inputs come from fold_in(train_key, global step), as in a step-by-step loop.
  With `batch_sharding` (of the (steps, B) arrays) the batch axis is split
  over devices; the state keeps whatever sharding it comes with.
  """
  scan_epoch = _scan_updates(config, method)

  def train_epoch(state, triples, train_key, tables):
    if batch_sharding is not None:
      triples = jax.lax.with_sharding_constraint(triples, batch_sharding)
    return scan_epoch(state, triples, train_key, tables)

  return jax.jit(train_epoch, donate_argnums=0)


def make_device_epoch(config: ml_collections.ConfigDict, method: Method, num_search_steps: int,
                      batch_sharding: jax.sharding.Sharding | None = None) -> Callable:
  """Jitted epoch(state, sample_key, train_key, tables, sampler_tables) -> (state, metrics).

  Shuffling, negative sampling and every update in one device program;
  `sampler_tables` is `device_sampling.sampler_tables(dataset, pool)`.
  """
  scan_epoch = _scan_updates(config, method)
  batch_size = config.train.batch_size

  def train_epoch(state, sample_key, train_key, tables, sampler_tables):
    triples = device_sampling.epoch_triples(sample_key, sampler_tables, batch_size,
                                            num_search_steps)
    if batch_sharding is not None:
      triples = jax.lax.with_sharding_constraint(triples, batch_sharding)
    return scan_epoch(state, triples, train_key, tables)

  return jax.jit(train_epoch, donate_argnums=0)


class EpochProgram:
  """One training epoch as the config asks: method, sampler, feature dtype and devices.

  `run(state, epoch)` samples the epoch's triples (on the host with numpy, or
  inside the device program) and applies all of its updates. Epoch e's
  triples depend on (seed, e) only, and step s's inputs on (seed, s), so a
  resumed run repeats an uninterrupted one exactly. The program is compiled
  ahead of its first run, so that `last_compile_seconds` tells compile time
  apart from training time.
  """

  def __init__(self, config: ml_collections.ConfigDict, dataset: data_lib.Dataset,
               method: Method, extras: Mapping[str, np.ndarray] | None = None):
    self.config = config
    self.dataset = dataset
    self.method = method
    root_key = jax.random.key(config.seed)
    self.train_key = jax.random.fold_in(root_key, TRAIN_STREAM)
    self.sample_key = jax.random.fold_in(root_key, SAMPLE_STREAM)
    self.mesh = sharding.mesh_from_config(config)
    batch_sharding = replicated = None
    if self.mesh is not None:
      batch_sharding = sharding.batch_sharding(self.mesh)
      replicated = sharding.replicated(self.mesh)
    self.batch_sharding = batch_sharding
    self.extras = method.prepare(dataset, extras or {})  # Host copies, saved for serving.
    self.tables = tables_on_device(dataset, config.train.feature_dtype, self.extras, replicated)
    self.sampler_tables = None
    if config.train.sampler == 'device':
      sampler_tables = device_sampling.sampler_tables(dataset, config.data.negatives)
      self.sampler_tables = (sampler_tables if replicated is None
                             else jax.device_put(sampler_tables, replicated))
      self.epoch_fn = make_device_epoch(config, method, device_sampling.search_steps(dataset),
                                        batch_sharding)
    else:
      self.epoch_fn = make_train_epoch(config, method, batch_sharding)
    self.embed = jax.jit(method.embed)
    self._compiled = None
    self.last_compile_seconds = 0.0  # Compile time within the last `run`.

  def fresh_state(self) -> TrainState:
    key = jax.random.fold_in(jax.random.key(self.config.seed), INIT_STREAM)
    return self.place(create_train_state(self.config, self.method, key, self.dataset.num_users))

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
    if self.sampler_tables is not None:
      args = (state, jax.random.fold_in(self.sample_key, epoch), self.train_key,
              self.tables, self.sampler_tables)
    else:
      args = (state, self.triples(epoch), self.train_key, self.tables)
    self.last_compile_seconds = 0.0
    if self._compiled is None:  # Every epoch has the same shapes: one compilation.
      tic = time.perf_counter()
      self._compiled = self.epoch_fn.lower(*args).compile()
      self.last_compile_seconds = time.perf_counter() - tic
    return self._compiled(*args)

  def vectors(self, params) -> tuple[jax.Array, jax.Array]:
    """(users (U, d), items (I, d)) that the evaluation ranks with."""
    return self.embed(params, self.tables)

  def evaluate(self, params, split: str, by_group: bool = False) -> dict[str, Any]:
    return evaluate.evaluate_split(self.config.eval, *self.vectors(params), self.dataset, split,
                                   by_group)


def _workdir_lock(workdir: str):
  """The run folder's lock; other processes of a multi-host run share process 0's folder."""
  return (runfolder.lock(workdir) if loop_lib.is_primary_process()
          else contextlib.nullcontext())


def _write_json(path: str, payload: Any) -> None:
  if loop_lib.is_primary_process():
    runfolder.write_json(path, payload)


def _program(config: ml_collections.ConfigDict, dataset: data_lib.Dataset, workdir: str,
             train_backbone: bool = True) -> EpochProgram:
  """The method's epoch program, with its backbone's vectors when it reads them."""
  from milk_jax import backbone  # The backbone is itself trained by this module.
  extras = backbone.cf_vectors(config, workdir, dataset, train_backbone)
  return EpochProgram(config, dataset, make_method(config, dataset), extras)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
                       held_out: bool = True) -> dict[str, Any]:
  """Train config.method with early stopping and write the results contract to `workdir`.

  Args:
    config: a config from `configs/`.
    workdir: where config.json, users.tsv, items.tsv, metrics.jsonl, checkpoints/ and
      results.json go.
    epoch_callback: called as f(epoch, train_metrics) after every epoch.
    held_out: False for a warm backbone (milk_jax/backbone.py), which has no vector
      for a new item: nothing is ranked, its last epoch is kept, and results.json
      holds no validation or test metrics.
  Returns:
    The dict written to results.json.
  Raises:
    UserError subclasses (milk_jax.errors) for bad config or data, a workdir
    of another run or in use, damaged files, divergence and Ctrl-C.
  """
  check_config(config)
  dataset = data_lib.load_dataset(config)  # Raises DataError before anything is written.
  log.info('data: %s', dataset.summary())
  saved = runfolder.saved_config(workdir)
  runfolder.check_same_run(workdir, saved, config)  # Before a backbone is trained for it.
  program = _program(config, dataset, workdir)  # Also raises DataError before any write.
  with _workdir_lock(workdir):
    saved = runfolder.saved_config(workdir)
    runfolder.check_same_run(workdir, saved, config)
    training = loop_lib.Training(config, workdir, dataset, program, held_out)
    try:
      if training.checkpoints.epochs(checkpoint.LATEST) and not config.train.resume:
        raise ConfigError(
            f'{workdir} already holds checkpoints and config.train.resume=False: pass '
            '--config.train.resume=True to continue that run, or use a fresh --workdir.')
      start_epoch = training.resume(None if saved is None else saved['train']['num_epochs'])
      _write_json(os.path.join(workdir, runfolder.CONFIG_FILE), json.loads(config.to_json()))
      if loop_lib.is_primary_process():
        serving.write_run_files(workdir, dataset, program.extras, config)
      stopped_early = training.run(start_epoch, epoch_callback)
    except BaseException:
      training.checkpoints.close(quietly=True)  # Saves in flight complete; the error wins.
      raise
    training.checkpoints.close()
    best_vectors = program.vectors(training.best_params)  # Evaluated, then saved for serving.
    calibration = (calibration_lib.fit_validation(config.eval, *best_vectors, dataset,
                                                  training.loop['best_epoch'])
                   if held_out else None)
    results = training.results(stopped_early, best_vectors, calibration)
    _write_vectors(workdir, program, best_vectors, results['best_epoch'], calibration)
    results_path = os.path.join(workdir, 'results.json')
    _write_json(results_path, results)
    _write_curves(workdir, config, training.history, results['best_epoch'])
  log.info('results: %s (%s)', results_path, results_summary(results, config.train.select_metric))
  return results


def results_summary(results: Mapping[str, Any], select: str) -> str:
  """'best epoch 40, val ndcg@20 0.1234, test ndcg@20 0.1111' (the splits a run has)."""
  parts = [f"best epoch {results['best_epoch']}"]
  for split in ('val', 'test'):
    value = (results.get(split) or {}).get(select)
    if value is not None:
      parts.append(f'{split} {select} {value:.4f}')
  return ', '.join(parts)


def _write_curves(workdir: str, config: ml_collections.ConfigDict,
                  records: list[dict[str, Any]], best_epoch: int) -> None:
  """curves.png: loss and validation metrics per epoch. Drawing never fails a run: a warning."""
  if not loop_lib.is_primary_process():
    return
  path = os.path.join(workdir, 'curves.png')
  try:
    plots.training_curves(path, records, loop_lib.shown_keys(config), best_epoch,
                          plots.curves_title(workdir, config.method))
  except Exception as error:  # pylint: disable=broad-except
    log.warning('could not draw %s (%s: %s); the results are written', path,
                type(error).__name__, error)
    return
  log.info('training curves: %s', path)


def _write_vectors(workdir: str, program: EpochProgram, vectors, epoch: int,
                   calibration: calibration_lib.Calibration | None = None) -> None:
  """vectors.npz: the (users, items) the evaluation ranks with, for export and recommend;
  calibration.json: their score maps per modality pattern, when the run fits them."""
  if loop_lib.is_primary_process():
    users, items = (np.asarray(v, np.float32) for v in vectors)
    serving.write_vectors(workdir, users[:program.dataset.num_users], items, epoch)
    if calibration is not None:
      calibration_lib.write(workdir, calibration)


def restore_best_params(workdir: str, state: TrainState) -> tuple[int, Any]:
  """(epoch, params) of the best checkpoint, or of the latest one's copy when it is damaged.

  Reads only (checkpoint.read_newest): no lock, nothing created, repaired or
  deleted, so serving may call it on a folder that a training process is
  still writing.
  """
  root = os.path.join(workdir, 'checkpoints')
  best, latest = os.path.join(root, checkpoint.BEST), os.path.join(root, checkpoint.LATEST)
  try:
    found = checkpoint.read_newest(best, {'params': state.params})
    if found is None:
      raise RunFolderError(f'{best} is empty')
    epoch, arrays, _ = found
    return epoch, arrays['params']
  except RunFolderError as error:
    try:
      found = checkpoint.read_newest(
          latest, {'state': loop_lib.state_tree(state), 'best_params': state.params})
    except RunFolderError as latest_error:
      raise RunFolderError(f'{error}, and no intact copy of the best parameters is left in '
                           f'{latest} ({latest_error})') from None
    if found is None:
      raise RunFolderError(f'{error}, and {latest} holds no copy of the best parameters: train '
                           'the run again') from None
    _, arrays, loop = found
    log.warning('%s; using the copy of the best parameters (epoch %d) in the latest '
                'checkpoint', error, loop['best_epoch'])
    return loop['best_epoch'], arrays['best_params']


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Restore the best checkpoint of `workdir`, evaluate it, write eval.json."""
  check_config(config)
  dataset = data_lib.load_dataset(config)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise RunFolderError(f'no checkpoints under {workdir}: train first.')
  runfolder.check_same_run(workdir, runfolder.saved_config(workdir), config)
  program = _program(config, dataset, workdir, train_backbone=False)
  with _workdir_lock(workdir):
    runfolder.check_same_run(workdir, runfolder.saved_config(workdir), config)
    epoch, params = restore_best_params(workdir, program.fresh_state())
    users, items = program.vectors(params)
    if loop_lib.is_primary_process():  # Brings a run trained before serving files up to date.
      serving.write_run_files(workdir, dataset, program.extras, config)
    calibration = calibration_lib.fit_validation(config.eval, users, items, dataset, epoch)
    _write_vectors(workdir, program, (users, items), epoch, calibration)
    item_maps = None if calibration is None else calibration.item_maps(dataset.availability)
    results = {'epoch': int(epoch),
               'val': evaluate.evaluate_split(config.eval, users, items, dataset, 'val'),
               **({} if calibration is None else {'val_calibrated': evaluate.evaluate_split(
                   config.eval, users, items, dataset, 'val', item_maps=item_maps)}),
               **evaluate.held_out_metrics(config.eval, users, items, dataset, item_maps)}
    if calibration is not None:
      results['calibration'] = calibration.report()
    path = os.path.join(workdir, 'eval.json')
    _write_json(path, results)
  log.info('best checkpoint (epoch %d): test %s; wrote %s', epoch,
           loop_lib.format_metrics(results['test'], loop_lib.shown_keys(config)), path)
  return results
