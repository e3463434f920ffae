"""Throughput of the jitted train step and of whole epochs.

  .venv/bin/python main.py --config=configs/baby_synthetic.py --mode=benchmark --workdir=runs/bench

Compiles once (timed apart), warms up, then times single steps (each waits
for the device with `block_until_ready`) and whole epochs with either
sampler, side by side in one process. `step_ms` is the step as the epoch
runs it: one update whose inputs (`Method.step_inputs`: MILK's environment
weights, one key per step for most methods) were drawn, with the rest of the
epoch's, in one vectorised call (`step_inputs_ms_per_epoch`);
`simple_step_ms` is the plain step that draws its own. A method with a
reference loss (`Method.reference_loss`: MILK's computes the same loss the
way the authors' code does, every item through every extractor once per
environment) has its reference step timed on the same inputs, so the
speed-up is a ratio measured on one machine. Writes `benchmark.json`; with
`config.benchmark.sweep` also `sweep.csv` and `sweep.png` (plots.plot_sweep).
"""

import copy
import csv
import logging
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from milk_jax import config as config_lib
from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax import plots
from milk_jax import runfolder
from milk_jax.data import sampling
from milk_jax.errors import ConfigError
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

log = logging.getLogger('milk_jax')
# benchmark.json's `reference_skipped` for a method whose Method has no reference_loss.
NO_REFERENCE = ('config.method={method!r} has no reference loss (Method.reference_loss): '
                'no reference step timed')


def _block(tree: Any) -> Any:
  return jax.block_until_ready(tree)


def _timed_calls(call: Callable[[int], Any], count: int) -> list[float]:
  """Seconds of each of `count` calls call(i), each waited for on the device."""
  seconds = []
  for i in range(count):
    tic = time.perf_counter()
    _block(call(i))
    seconds.append(time.perf_counter() - tic)
  return seconds


def _percentile_ms(seconds: list[float], q: float) -> float:
  return float(np.percentile(np.asarray(seconds) * 1e3, q))


def _cost(compiled) -> dict[str, float]:
  """XLA's own estimate of a compiled step's FLOPs and bytes moved (when it gives one)."""
  try:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return {'step_gflop': float(analysis.get('flops', float('nan'))) / 1e9,
            'step_mbytes': float(analysis.get('bytes accessed', float('nan'))) / 1e6}
  except Exception:  # Not every backend implements cost analysis.
    return {}


def time_steps(step_fn: Callable, state: state_lib.TrainState, batches: list[dict[str, jax.Array]],
               step_inputs: list[Any], tables: methods.Tables, warmup: int,
               count: int) -> tuple[dict[str, float], state_lib.TrainState]:
  """Compile step_fn(state, batch, step_input, tables) once, warm up, then time it.

  Steps cycle through `batches` and the matching `step_inputs` (weights or keys).
  """
  jitted = jax.jit(step_fn, donate_argnums=0)
  tic = time.perf_counter()
  compiled = jitted.lower(state, batches[0], step_inputs[0], tables).compile()
  compile_seconds = time.perf_counter() - tic
  holder = [state]

  def call(i):
    holder[0], metrics = compiled(holder[0], batches[i % len(batches)],
                                  step_inputs[i % len(batches)], tables)
    return metrics
  _timed_calls(call, warmup)
  seconds = _timed_calls(call, count)
  figures = {'compile_seconds': compile_seconds,
             'step_ms': _percentile_ms(seconds, 50), 'step_ms_p90': _percentile_ms(seconds, 90),
             'step_ms_min': _percentile_ms(seconds, 0), **_cost(compiled)}
  return figures, holder[0]


def _host_batches(program: step_lib.EpochProgram, count: int) -> list[dict[str, jax.Array]]:
  """Up to `count` real batches of epoch 1, on the device (transfers are not timed)."""
  triples = program.triples(1)
  steps = min(count, triples['users'].shape[0])
  batches = [jax.tree.map(lambda x: x[s], triples) for s in range(steps)]
  if program.mesh is not None:
    step_sharding = jax.sharding.NamedSharding(program.mesh, jax.sharding.PartitionSpec('data'))
    return jax.device_put(batches, step_sharding)
  return jax.device_put(batches)


def time_epochs(config: ml_collections.ConfigDict, dataset: data_lib.Dataset,
                sampler: str) -> dict[str, float]:
  """Compile, then time whole epochs with `sampler` ('host' or 'device'), sampling included."""
  config = copy.deepcopy(config)
  config.train.sampler = sampler
  program = _program(config, dataset)
  state = program.fresh_state()
  tic = time.perf_counter()
  state, metrics = program.run(state, 1)  # Compiles.
  _block(metrics)
  first = time.perf_counter() - tic
  holder = [state]

  def call(i):
    holder[0], metrics = program.run(holder[0], i + 2)
    return metrics
  seconds = _timed_calls(call, config.benchmark.num_epochs)
  return {f'epoch_seconds_{sampler}': statistics.median(seconds),
          f'epoch_first_seconds_{sampler}': first}


def time_step_inputs(method: methods.Method, seed: int, num_steps: int) -> float:
  """Milliseconds of one epoch's `method.step_inputs` draw (median of 20, after compiling)."""
  draw = jax.jit(lambda step: method.step_inputs(jax.random.key(seed), step, num_steps))
  _block(draw(jnp.zeros((), jnp.int32)))
  seconds = _timed_calls(lambda i: draw(jnp.asarray(i, jnp.int32)), 20)
  return _percentile_ms(seconds, 50)


def _program(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> step_lib.EpochProgram:
  """The run's epoch program; a method that reads a backbone gets random CF vectors of the
  backbone's shapes (the cost does not depend on their values, and nothing is trained first)."""
  extras = {}
  if methods.backbone_of(config) is not None:
    rng = np.random.default_rng(config.seed)
    d = config.model.embed_dim
    items = rng.normal(size=(dataset.num_items, d)).astype(np.float32)
    items[dataset.val_items] = items[dataset.test_items] = 0.0
    extras = {'cf_users': rng.normal(size=(dataset.num_users, d)).astype(np.float32),
              'cf_items': items}
  return step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset), extras)


def measure(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> dict[str, Any]:
  """All figures of one configuration, as the dict written to benchmark.json."""
  bench = config.benchmark
  num_modalities = len(dataset.features)
  program = _program(config, dataset)
  method = program.method
  steps_per_epoch = sampling.steps_per_epoch(len(dataset.train_pairs), config.train.batch_size)
  batches = _host_batches(program, min(steps_per_epoch, 16))
  # As the epoch runs it: one update per step, its inputs drawn for the whole epoch.
  drawn = method.step_inputs(program.train_key, jnp.zeros((), jnp.int32), len(batches))
  step_inputs = [jax.tree.map(lambda x, s=s: x[s], drawn) for s in range(len(batches))]
  # Item tables split by rows are padded; the method reads them without the padding.
  tables = (program.tables if program.method_tables is None
            else program.method_tables(program.tables))
  log.info('benchmark: compiling and timing %d train steps of %s', bench.num_steps,
           config.method)
  step, _ = time_steps(step_lib.make_update(config, method), program.fresh_state(), batches,
                       step_inputs, tables, bench.warmup_steps, bench.num_steps)
  # The step-by-step path draws its own inputs each step.
  keys = list(jax.random.split(jax.random.key(config.seed), len(batches)))
  simple, _ = time_steps(step_lib.make_train_step(config, method), program.fresh_state(),
                         batches, keys, tables, bench.warmup_steps, bench.num_steps)
  result = {
      **environment_summary(),
      'method': config.method,
      'num_users': dataset.num_users, 'num_items': dataset.num_items,
      'num_modalities': num_modalities,
      'feature_dims': [int(f.shape[1]) for f in dataset.features],
      'batch_size': config.train.batch_size, 'embed_dim': config.model.embed_dim,
      'feature_dtype': config.train.feature_dtype, 'sampler': config.train.sampler,
      'data_parallel': bool(config.train.data_parallel),
      'steps_per_epoch': steps_per_epoch,
      **step,
      'simple_step_ms': simple['step_ms'],
      'steps_per_second': 1e3 / step['step_ms'],
      'samples_per_second': config.train.batch_size * 1e3 / step['step_ms'],
  }
  result['step_inputs_ms_per_epoch'] = time_step_inputs(method, config.seed, steps_per_epoch)
  if 'step_gflop' in step:
    result['achieved_gflop_per_second'] = step['step_gflop'] / step['step_ms'] * 1e3
  samplers = config_lib.SAMPLERS if bench.both_samplers else (config.train.sampler,)
  log.info('benchmark: timing %d epochs with the %s sampler(s)', bench.num_epochs,
           ' and '.join(samplers))
  for sampler in samplers:
    result.update(time_epochs(config, dataset, sampler))
  result['epoch_seconds'] = result[f'epoch_seconds_{config.train.sampler}']
  # The steady-state cost of one step inside the fused epoch (sampling amortised).
  result['epoch_step_ms'] = result['epoch_seconds'] / steps_per_epoch * 1e3
  if bench.reference and method.reference_loss is None:
    result['reference_skipped'] = NO_REFERENCE.format(method=config.method)
    log.info('benchmark: %s', result['reference_skipped'])
  elif bench.reference:
    log.info('benchmark: timing the reference step')
    reference, _ = time_steps(step_lib.make_update(config, method, method.reference_loss),
                              program.fresh_state(), batches, step_inputs, tables, 1,
                              max(3, bench.num_steps // 10))
    result['reference_step_ms'] = reference['step_ms']
    result['reference_compile_seconds'] = reference['compile_seconds']
    result['speedup_vs_reference'] = reference['step_ms'] / step['step_ms']
  return result


def environment_summary() -> dict[str, Any]:
  device = jax.devices()[0]
  return {'backend': jax.default_backend(), 'device': device.device_kind,
          'num_devices': jax.device_count(), 'jax_version': jax.__version__,
          'host': platform.node(), 'cpu_count': os.cpu_count()}


def headline(result: dict[str, Any]) -> str:
  """One readable line of the main figures."""
  line = (f"{result.get('method', 'milk')} on {result['backend']} ({result['device']}): "
          f"batch {result['batch_size']}, "
          f"{result['num_items']} items, {result['feature_dtype']}: step "
          f"{result['step_ms']:.2f} ms median (p90 {result['step_ms_p90']:.2f}), "
          f"{result['samples_per_second']:,.0f} samples/s; epoch "
          + ', '.join(f"{result[f'epoch_seconds_{s}']:.3f} s {s}-sampled"
                      for s in config_lib.SAMPLERS if f'epoch_seconds_{s}' in result)
          + f"; compile {result['compile_seconds']:.1f} s")
  if 'reference_step_ms' in result:
    line += (f"; reference step {result['reference_step_ms']:.1f} ms "
             f"({result['speedup_vs_reference']:.1f}x slower)")
  return line


# ------------------------------------------------------------------- sweep

SWEEP_FIELDS = ('axis', 'batch_size', 'num_items', 'step', 'step_ms', 'step_ms_p90')


def random_inputs(key: jax.Array, num_users: int, num_items: int, feature_dims: tuple[int, ...],
                  batch_size: int, num_batches: int, dtype: str):
  """Unit-norm random features and uniform random batches: the cost, not the content."""
  feature_keys = jax.random.split(jax.random.fold_in(key, 0), len(feature_dims))
  features = []
  for k, dim in zip(feature_keys, feature_dims):
    x = jax.random.normal(k, (num_items, dim))
    features.append((x / jnp.linalg.norm(x, axis=1, keepdims=True)).astype(
        config_lib.FEATURE_DTYPES[dtype]))
  is_new = jnp.arange(num_items) >= num_items - num_items // 5  # The last fifth is new.
  tables = methods.Tables(features=tuple(features),
                          availability=jnp.ones((num_items, len(feature_dims)), bool),
                          warm_items=jnp.arange(num_items - num_items // 5, dtype=jnp.int32),
                          is_new=is_new, extras={})
  batch_keys = jax.random.split(jax.random.fold_in(key, 1), num_batches)
  batches = [{'users': jax.random.randint(jax.random.fold_in(k, 0), (batch_size,), 0, num_users),
              'positives': jax.random.randint(jax.random.fold_in(k, 1), (batch_size,), 0,
                                              num_items),
              'negatives': jax.random.randint(jax.random.fold_in(k, 2), (batch_size,), 0,
                                              num_items)}
             for k in batch_keys]
  return tables, batches


def sweep_point(config: ml_collections.ConfigDict, num_users: int, num_items: int,
                feature_dims: tuple[int, ...], batch_size: int, reference: bool
                ) -> dict[str, float]:
  """Median step time of the fused (and maybe reference) step at one shape."""
  config = copy.deepcopy(config)
  config.train.batch_size = batch_size
  tables, batches = random_inputs(jax.random.key(config.seed), num_users, num_items,
                                  feature_dims, batch_size, 4, config.train.feature_dtype)
  method = sweep_method(config, num_users, num_items, feature_dims)
  train_key = jax.random.fold_in(jax.random.key(config.seed), state_lib.TRAIN_STREAM)
  drawn = method.step_inputs(train_key, jnp.zeros((), jnp.int32), len(batches))
  step_inputs = [jax.tree.map(lambda x, s=s: x[s], drawn) for s in range(len(batches))]
  figures = {}
  updates = {'fused': step_lib.make_update(config, method)}
  if reference:
    updates['reference'] = step_lib.make_update(config, method, method.reference_loss)
  for name, update in updates.items():
    state = state_lib.create_train_state(config, method, jax.random.key(0), num_users)
    count = config.benchmark.sweep_steps if name == 'fused' else max(
        2, config.benchmark.sweep_steps // 4)
    figures[name], _ = time_steps(update, state, batches, step_inputs, tables, 2, count)
  return figures


def sweep_method(config: ml_collections.ConfigDict, num_users: int, num_items: int,
                 feature_dims: tuple[int, ...]) -> methods.Method:
  """config.method's Method for a random catalogue of this shape (`random_inputs`)."""
  spec = methods.DataSpec(num_users, num_items, feature_dims, num_items - num_items // 5)
  return methods.get(config.method).make(config, spec)


def run_sweep(config: ml_collections.ConfigDict, dataset: data_lib.Dataset,
              workdir: str) -> list[dict[str, Any]]:
  """Step time against batch size (dataset shape) and catalogue size (batch fixed)."""
  bench = config.benchmark
  dims = tuple(int(f.shape[1]) for f in dataset.features)
  rows = []
  for batch_size in bench.sweep_batch_sizes:
    log.info('sweep: batch size %d', batch_size)
    figures = sweep_point(config, dataset.num_users, dataset.num_items, dims, batch_size,
                          reference=False)
    rows.append(_sweep_row('batch_size', batch_size, dataset.num_items, figures))
  for num_items in bench.sweep_num_items:
    log.info('sweep: %d items', num_items)
    figures = sweep_point(config, dataset.num_users, num_items, dims, config.train.batch_size,
                          reference=bench.reference)
    rows.append(_sweep_row('num_items', config.train.batch_size, num_items, figures))
  rows = [row for group in rows for row in group]
  with open(os.path.join(workdir, 'sweep.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=SWEEP_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  title = (f'{headline_device()}; features {"+".join(map(str, dims))}, '
           f'batch {config.train.batch_size} (right), {dataset.num_items} items (left)')
  plots.plot_sweep(rows, os.path.join(workdir, 'sweep.png'), title=title)
  return rows


def _sweep_row(axis: str, batch_size: int, num_items: int,
               figures: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
  return [{'axis': axis, 'batch_size': batch_size, 'num_items': num_items, 'step': name,
           'step_ms': round(f['step_ms'], 4), 'step_ms_p90': round(f['step_ms_p90'], 4)}
          for name, f in figures.items()]


def headline_device() -> str:
  return f'{jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}'


# ---------------------------------------------------------------- entry point

def benchmark(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Measure, write `workdir/benchmark.json` (and the sweep files), print the headline."""
  config_lib.check_config(config)
  _check_benchmark_config(config)
  dataset = data_lib.load_dataset(config)  # Raises DataError before anything is written.
  log.info('data: %s', dataset.summary())
  _check_sweep_method(config, dataset)
  os.makedirs(workdir, exist_ok=True)
  result = measure(config, dataset)
  if config.benchmark.sweep:
    result['sweep'] = run_sweep(config, dataset, workdir)
  path = os.path.join(workdir, 'benchmark.json')
  _keep_previous(path)
  runfolder.write_json(path, result)
  print(headline(result), flush=True)
  return result


def _keep_previous(path: str) -> None:
  """Move an earlier benchmark.json aside (benchmark.1.json, ...) instead of overwriting it."""
  if not os.path.exists(path):
    return
  stem, suffix = os.path.splitext(path)
  n = 1
  while os.path.exists(f'{stem}.{n}{suffix}'):
    n += 1
  os.replace(path, f'{stem}.{n}{suffix}')


def _check_sweep_method(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> None:
  """ConfigError when the sweep is asked of a method without a reference loss."""
  if not config.benchmark.sweep:
    return
  dims = tuple(int(f.shape[1]) for f in dataset.features)
  if sweep_method(config, dataset.num_users, dataset.num_items, dims).reference_loss is None:
    raise ConfigError(f'config.benchmark.sweep=True: the sweep times a method\'s step beside '
                      f'its reference step on random catalogues; config.method='
                      f'{config.method!r} has no reference loss (drop the sweep)')


def _check_benchmark_config(config: ml_collections.ConfigDict) -> None:
  bench = config.benchmark
  for field in ('num_steps', 'num_epochs', 'sweep_steps'):
    if bench[field] < 1:
      raise ConfigError(f'config.benchmark.{field}={bench[field]}: must be at least 1')
  if bench.warmup_steps < 0:
    raise ConfigError(f'config.benchmark.warmup_steps={bench.warmup_steps}: '
                            'must be non-negative')
  for field in ('sweep_batch_sizes', 'sweep_num_items'):
    if bench.sweep and (not bench[field] or min(bench[field]) < 1):
      raise ConfigError(f'config.benchmark.{field}={bench[field]}: needs positive sizes')
