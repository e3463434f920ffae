"""Command line for milk-jax: parses flags and dispatches; no logic lives here.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --config=configs/ml100k.py --workdir=runs/ml100k --config.train.beta=50
  python main.py --config=configs/ml100k.py --workdir=runs/ml100k_heater --config.method=heater
  python main.py --workdir=runs/ml100k --mode=eval
  python main.py --workdir=runs/ml100k --mode=recommend --config.recommend.new_items=new_items/
  python main.py --workdir=runs/ml100k --mode=export
  python main.py --config=configs/baby_synthetic.py --workdir=runs/bench --mode=benchmark
  python main.py --config=configs/experiments/overall.py:ml100k --workdir=runs/overall --mode=experiment

A user's mistake (bad config or data, a run folder of another run or in use,
a damaged file, divergence, a full disk) ends in one `error: ...` line and
exit code 1; Ctrl-C stops after the current epoch's checkpoint (exit 130).
--verbose shows the traceback.
"""

import logging
import os

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

from milk_jax import benchmark
from milk_jax import cli
from milk_jax import experiment
from milk_jax import interrupt
from milk_jax import recommend
from milk_jax import train

# eval, recommend and export default to the run's own config (configs/run.py).
_RUN_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'run.py')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/NAME.py); for eval, recommend and export '
    "the run's own config.json when left out.", lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval', 'recommend', 'export', 'benchmark', 'experiment'],
    'train: train and evaluate; eval: evaluate the best checkpoint; '
    'recommend: top-k new items per user from a trained run (config.recommend); '
    'export: user and item vectors of a trained run (config.export); '
    'benchmark: time the train step and epochs, write benchmark.json; '
    'experiment: run the grid of a configs/experiments/ config.')
_RUNS = {'train': train.train_and_evaluate, 'eval': train.evaluate_checkpoint,
         'recommend': recommend.recommend, 'export': recommend.export,
         'benchmark': benchmark.benchmark, 'experiment': experiment.run_experiment}
_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', False,
    'Call jax.distributed.initialize() first: one process per host, all hosts in one mesh.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show the traceback of an error.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None:
    cli.exit_with(cli.usage_error('--config is required for --mode=' + _MODE.value +
                                  ' (eval, recommend and export read the run\'s own)'))
  absl_logging.set_verbosity(absl_logging.INFO)
  # Progress comes from the 'milk_jax' logger; orbax's own lines are noise here.
  for name in ('absl', 'asyncio'):  # asyncio: orbax's failed writer tasks, told once as an error.
    logging.getLogger(name).setLevel(logging.INFO if _VERBOSE.value else logging.CRITICAL)
  logging.getLogger('milk_jax').setLevel(logging.INFO)
  if not _VERBOSE.value:
    cli.quiet_background_errors()
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # Reads the coordinator from the cluster's environment.
  with interrupt.graceful():
    code = cli.run_reporting_errors(lambda: _RUNS[_MODE.value](_CONFIG.value, _WORKDIR.value),
                                    verbose=_VERBOSE.value, folder=_WORKDIR.value)
  cli.exit_with(code)


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: cli.parse_flags(cli.with_run_config(argv, _RUN_CONFIG)))
