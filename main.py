"""Command line for milk-jax: parses flags and dispatches; no logic lives here.

  .venv/bin/python main.py --config=configs/default.py --workdir=runs/default
  .venv/bin/python main.py --config=configs/ml100k.py --workdir=runs/ml100k --config.train.beta=50
  .venv/bin/python main.py --config=configs/ml100k.py --workdir=runs/ml100k_heater --config.method=heater
  .venv/bin/python main.py --workdir=runs/ml100k --mode=eval
  .venv/bin/python main.py --workdir=runs/ml100k --mode=recommend --config.recommend.new_items=new_items/
  .venv/bin/python main.py --workdir=runs/ml100k --mode=export
  .venv/bin/python main.py --config=configs/baby_synthetic.py --workdir=runs/bench --mode=benchmark
  .venv/bin/python main.py --config=configs/experiments/overall.py:ml100k --workdir=runs/overall --mode=experiment
  .venv/bin/python main.py --config=configs/ml100k.py --mode=fields
  .venv/bin/python main.py --config=configs/default.py --workdir=runs/dp --config.train.data_parallel=True --jax_distributed  # on each host

Progress goes to stdout; warnings and errors to stderr. A user's mistake
(bad config or data, a run folder of another run, damaged or in use, a
divergence, a full disk) ends in one `error: ...` line and exit code 1; a
bad flag, a --config that names no config file or dataset, exit code 2.
Ctrl-C stops after the current epoch's checkpoint (exit 130). --verbose
shows the traceback.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from milk_jax import cli
from milk_jax import interrupt

# eval, recommend and export default to the run's own config (configs/run.py).
_RUN_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'run.py')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/NAME.py); for eval, recommend, export and '
    "fields the run's own config.json (in --workdir) when left out.", lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints and results (all modes but fields).')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval', 'recommend', 'export', 'benchmark', 'experiment', 'fields'],
    'train: train and evaluate; eval: evaluate the best checkpoint; '
    'recommend: top-k new items per user from a trained run (config.recommend); '
    'export: user and item vectors of a trained run (config.export); '
    'benchmark: time the train step and epochs, write benchmark.json; '
    'experiment: run the grid of a configs/experiments/ config; '
    'fields: print every field of the config, its value and its comment.')
# Each mode's (config, workdir) entry, imported on use: --help and a bad flag answer at once.
_RUNS = {'train': 'milk_jax.run:train_and_evaluate',
         'eval': 'milk_jax.run:evaluate_checkpoint',
         'recommend': 'milk_jax.recommend:recommend',
         'export': 'milk_jax.recommend:export',
         'benchmark': 'milk_jax.benchmark:benchmark',
         'experiment': 'milk_jax.experiment:run_experiment',
         'fields': 'milk_jax.config_fields:print_fields'}
_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', False,
    'One process of a multi-process run (one per host; docs/reliability.md): join the others '
    'first (jax.distributed.initialize), all their devices in one mesh.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'With --jax_distributed: HOST:PORT of process 0, the '
    "coordinator (default $JAX_COORDINATOR_ADDRESS, else the cluster's, e.g. SLURM's).")
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'With --jax_distributed: how many processes the run has (default '
    "$JAX_NUM_PROCESSES, else the cluster's).")
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'With --jax_distributed: this process\'s index, 0 to num_processes-1 '
    "(default $JAX_PROCESS_ID, else the cluster's).")
_HEARTBEAT = flags.DEFINE_integer(
    'heartbeat_timeout', 60, 'With --jax_distributed: seconds without a heartbeat after which '
    'a process is taken as dead and the others stop with an error.')
_DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id', 'heartbeat_timeout')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show the traceback of an error.')


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments.
  if _WORKDIR.value is None and _MODE.value != 'fields':
    cli.exit_with(cli.usage_error(f'--workdir is required for --mode={_MODE.value}'))
  if _CONFIG.value is None:
    cli.exit_with(cli.usage_error('--config is required for --mode=' + _MODE.value +
                                  ' (eval, recommend, export and fields read the run\'s own '
                                  'from --workdir)'))
  cli.configure_output(_VERBOSE.value)
  if not _VERBOSE.value:
    cli.quiet_background_errors()
  if _DISTRIBUTED.value:
    start = cli.entry_point('milk_jax.distributed:start')
    code = cli.run_reporting_errors(lambda: start(_COORDINATOR.value, _NUM_PROCESSES.value,
                                                  _PROCESS_ID.value, _HEARTBEAT.value),
                                    verbose=_VERBOSE.value)
    if code:
      cli.exit_with(code)
  elif any(flags.FLAGS[name].present for name in _DISTRIBUTED_FLAGS):
    cli.exit_with(cli.usage_error(f'--{", --".join(_DISTRIBUTED_FLAGS)} need --jax_distributed'))
  with interrupt.graceful():
    code = cli.run_reporting_errors(
        lambda: cli.entry_point(_RUNS[_MODE.value])(_CONFIG.value, _WORKDIR.value),
        verbose=_VERBOSE.value, folder=_WORKDIR.value, distributed=_DISTRIBUTED.value)
  cli.exit_with(code)


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: cli.parse_flags(cli.with_run_config(argv, _RUN_CONFIG)))
