"""One optimiser step of any method, and a whole epoch as one scanned, donated device program.

`EpochProgram` is what a run trains with: the epoch the config asks for
(method, sampler, feature dtype and devices), compiled once. The step-by-step
`make_train_step` is its oracle in tests and the benchmark.
"""

import functools
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import data as data_lib
from milk_jax import evaluate
from milk_jax import methods
from milk_jax import sharding
from milk_jax.data import device_sampling
from milk_jax.methods import Method
from milk_jax.training.state import INIT_STREAM
from milk_jax.training.state import SAMPLE_STREAM
from milk_jax.training.state import TRAIN_STREAM
from milk_jax.training.state import TrainState
from milk_jax.training.state import create_train_state
from milk_jax.training.state import tables_by_item_rows
from milk_jax.training.state import tables_on_device


def make_update(config: ml_collections.ConfigDict, method: Method,
                loss_fn: Callable | None = None) -> Callable:
  """update(state, batch, step_input, tables) -> (state, metrics): one optimiser step; pure.

  The loss reads the variables (params merged with the model state); the
  gradient is the params' only, and the optimiser steps them. Then the method's
  `update_model_state` (if any) turns the model state and what the loss measured
  (its aux's second part, e.g. BatchNorm's batch moments) into the next model
  state. A method's own `update` replaces all of this. `loss_fn` defaults to the
  method's; the benchmark passes MILK's reference.
  """
  if method.update is not None and loss_fn is None:
    return method.update
  optimizer = methods.optimizer(method, config)
  loss_fn = loss_fn or method.loss
  update_model_state = method.update_model_state

  def objective(params, model_state, batch, step_input, tables):
    return loss_fn(methods.merge_variables(params, model_state), batch, step_input, tables)

  grad_fn = jax.grad(objective, has_aux=True)

  def update(state: TrainState, batch, step_input, tables):
    grads, aux = grad_fn(state.params, state.model_state, batch, step_input, tables)
    metrics, measured = aux if update_model_state is not None else (aux, None)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = (state.model_state if update_model_state is None
                   else update_model_state(state.model_state, measured))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state), metrics

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
                     batch_sharding: jax.sharding.Sharding | None = None,
                     method_tables: Callable | None = None) -> Callable:
  """Jitted train_epoch(state, triples, train_key, tables) -> (state, mean metrics).

  One `lax.scan` over host-sampled batches: a single device program per epoch.
  `triples` holds 'users', 'positives', 'negatives' of shape (steps, B); step
  s's inputs come from fold_in(train_key, global step), as in a step-by-step loop.
  With `batch_sharding` (of the (steps, B) arrays) the batch axis is split
  over devices; the state keeps whatever sharding it comes with.
  `method_tables` maps the tables passed in to those the method reads (the
  padding rows of item tables split by rows dropped, `EpochProgram`).
  """
  scan_epoch = _scan_updates(config, method)

  def train_epoch(state, triples, train_key, tables):
    if batch_sharding is not None:
      triples = jax.lax.with_sharding_constraint(triples, batch_sharding)
    if method_tables is not None:
      tables = method_tables(tables)
    return scan_epoch(state, triples, train_key, tables)

  return jax.jit(train_epoch, donate_argnums=0)


def make_device_epoch(config: ml_collections.ConfigDict, method: Method, num_search_steps: int,
                      batch_sharding: jax.sharding.Sharding | None = None,
                      method_tables: Callable | None = None) -> Callable:
  """Jitted epoch(state, sample_key, train_key, tables, sampler_tables) -> (state, metrics).

  Shuffling, negative sampling and every update in one device program;
  `sampler_tables` is `device_sampling.sampler_tables(dataset, pool)`;
  `batch_sharding` and `method_tables` as in `make_train_epoch`.
  """
  scan_epoch = _scan_updates(config, method)
  batch_size = config.train.batch_size

  def train_epoch(state, sample_key, train_key, tables, sampler_tables):
    triples = device_sampling.epoch_triples(sample_key, sampler_tables, batch_size,
                                            num_search_steps)
    if batch_sharding is not None:
      triples = jax.lax.with_sharding_constraint(triples, batch_sharding)
    if method_tables is not None:
      tables = method_tables(tables)
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
    # With train.shard_item_features the per-item tables are split by rows, padded to a
    # multiple of the devices; `method_tables` drops the padding inside the jitted programs.
    self.method_tables = None
    if self.mesh is not None and config.train.shard_item_features:
      self.tables, per_item = tables_by_item_rows(dataset, self.mesh, config.train.feature_dtype,
                                                  self.extras)
      self.method_tables = functools.partial(sharding.drop_item_padding, per_item=per_item,
                                             num_items=dataset.num_items)
    else:
      self.tables = tables_on_device(dataset, config.train.feature_dtype, self.extras,
                                     replicated)
    self.sampler_tables = None
    if config.train.sampler == 'device':
      sampler_tables = device_sampling.sampler_tables(dataset, config.data.negatives)
      self.sampler_tables = (sampler_tables if replicated is None
                             else jax.device_put(sampler_tables, replicated))
      self.epoch_fn = make_device_epoch(config, method, device_sampling.search_steps(dataset),
                                        batch_sharding, self.method_tables)
    else:
      self.epoch_fn = make_train_epoch(config, method, batch_sharding, self.method_tables)
    embed = method.embed
    if self.method_tables is not None:
      def embed(variables, tables):  # The method's embed, of the tables without padding.
        return method.embed(variables, self.method_tables(tables))
    # Across several processes the evaluation and vectors.npz read the vectors on every
    # host: a row-sharded user table's vectors come back replicated, whole in each process.
    self.embed = (jax.jit(embed, out_shardings=replicated)
                  if self.mesh is not None and jax.process_count() > 1
                  else jax.jit(embed))
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

  def compiled_epoch(self) -> jax.stages.Compiled:
    """The epoch's compiled program, after the first `run`: its HLO (`as_text()`) and
    per-device `memory_analysis()`, e.g. to see what a data-parallel layout moves."""
    if self._compiled is None:
      raise RuntimeError('the epoch is compiled by its first run')
    return self._compiled

  def vectors(self, variables) -> tuple[jax.Array, jax.Array]:
    """(users (U, d), items (I, d)) that the evaluation ranks with, from a state's `variables`
    (params and model state, as the best checkpoint holds them)."""
    return self.embed(variables, self.tables)

  def evaluate(self, variables, split: str, by_group: bool = False) -> dict[str, Any]:
    return evaluate.evaluate_split(self.config.eval, *self.vectors(variables), self.dataset,
                                   split, by_group)
