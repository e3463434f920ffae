"""Time GAR's epoch, the original against `variant=coldrec`, side by side in one process.

  .venv/bin/python scripts/gar_epoch_times.py --config=configs/ml100k.py --seed=5 \
      --setting=ftft --negatives=all --epochs=3

Both variants' epoch programs are built on the same split (with random
backbone vectors of the backbone's shapes, as `--mode=benchmark` does: the
cost does not depend on their values), compiled by one untimed epoch, then
run in turns, epoch by epoch, so that both see the same load. Prints each
epoch's seconds with the load average, the medians and their ratio.
"""

import copy
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

from milk_jax import benchmark  # pylint: disable=g-import-not-at-top
from milk_jax import data as data_lib  # pylint: disable=g-import-not-at-top

VARIANTS = ('original', 'coldrec')


def main(argv):
  del argv
  args = flags.FLAGS
  config = copy.deepcopy(args.config)
  with config.unlocked():
    config.method, config.seed = 'gar', args.seed
    config.data.setting, config.data.negatives = args.setting, args.negatives
  dataset = data_lib.load_dataset(config)
  programs, states = {}, {}
  for variant in VARIANTS:
    variant_config = copy.deepcopy(config)
    variant_config.methods.gar.variant = variant
    programs[variant] = benchmark._program(variant_config, dataset)  # pylint: disable=protected-access
    tic = time.perf_counter()
    states[variant], metrics = programs[variant].run(programs[variant].fresh_state(), 1)
    jax.block_until_ready(metrics)
    print(f'{variant}: first epoch (compiles) {time.perf_counter() - tic:.1f} s', flush=True)
  seconds = {variant: [] for variant in VARIANTS}
  for epoch in range(2, 2 + args.epochs):
    for variant in VARIANTS:
      load = os.getloadavg()[0]
      tic = time.perf_counter()
      states[variant], metrics = programs[variant].run(states[variant], epoch)
      jax.block_until_ready(metrics)
      seconds[variant].append(time.perf_counter() - tic)
      print(f'{variant}: epoch {epoch} {seconds[variant][-1]:.2f} s (load {load:.1f})', flush=True)
  medians = {variant: statistics.median(seconds[variant]) for variant in VARIANTS}
  for variant in VARIANTS:
    print(f'{variant}: median {medians[variant]:.2f} s an epoch')
  print(f'original / coldrec: {medians["original"] / medians["coldrec"]:.1f}')


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'A dataset config.', lock_config=True)
  flags.DEFINE_integer('seed', 0, 'Seed of the split.')
  flags.DEFINE_enum('setting', 'ftft', ['ftft', 'ftmt', 'mtmt'], 'Missing setting.')
  flags.DEFINE_enum('negatives', 'all', ['all', 'warm'], 'Pool of sampled negatives.')
  flags.DEFINE_integer('epochs', 3, 'Timed epochs of each variant.')
  flags.mark_flags_as_required(['config'])
  app.run(main)
