"""Command line for milk-jax: parses flags and dispatches; no logic lives here.

  python main.py --config=configs/default.py --workdir=runs/default
  python main.py --config=configs/ml100k.py --workdir=runs/ml100k --config.train.beta=50
  python main.py --config=configs/ml100k.py --workdir=runs/ml100k --mode=eval
  python main.py --config=configs/baby_synthetic.py --workdir=runs/bench --mode=benchmark
  python main.py --config=configs/experiments/overall.py:ml100k --workdir=runs/overall --mode=experiment
"""

import logging
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

from milk_jax import benchmark
from milk_jax import data
from milk_jax import experiment
from milk_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/NAME.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval', 'benchmark', 'experiment'],
    'train: train and evaluate; eval: evaluate the best checkpoint; '
    'benchmark: time the train step and epochs, write benchmark.json; '
    'experiment: run the grid of a configs/experiments/ config.')
_RUNS = {'train': train.train_and_evaluate, 'eval': train.evaluate_checkpoint,
         'benchmark': benchmark.benchmark, 'experiment': experiment.run_experiment}
_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed', False,
    'Call jax.distributed.initialize() first: one process per host, all hosts in one mesh.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  absl_logging.set_verbosity(absl_logging.INFO)
  # Progress comes from the 'milk_jax' logger; orbax's own INFO lines are noise here.
  logging.getLogger('absl').setLevel(logging.WARNING)
  logging.getLogger('milk_jax').setLevel(logging.INFO)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # Reads the coordinator from the cluster's environment.
  run = _RUNS[_MODE.value]
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except (data.DataError, train.ConfigError, FileNotFoundError) as error:
    # Bad input, found before anything is written: the message names what is wrong.
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main)
