"""A run's test NDCG@20 under both candidate pools, from its saved best vectors.

Under eval.candidates=all_new the validation users rank the test items as
negatives, so the epoch chosen on validation may push test items down. This
reranks each run's best vectors (vectors.npz) with the test users ranking
all new items and with them ranking the test items only; given the folder
of the same runs trained with eval.candidates=split, it adds the epoch that
those chose and its test NDCG@20.

  .venv/bin/python scripts/candidate_pools.py runs/fusion_ml100k/ftmt/ERM \
      --split=runs/fusion_ml100k/ftmt/ERM_split
"""

import argparse
import json
import os
import sys

import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from milk_jax import data as data_lib  # pylint: disable=wrong-import-position
from milk_jax import evaluate  # pylint: disable=wrong-import-position

METRIC = 'ndcg@20'


def pool_metrics(run: str) -> tuple[int, float, float]:
  """(best epoch, test NDCG@20 ranking all new items, ranking the test items only)."""
  with open(os.path.join(run, 'config.json'), encoding='utf-8') as f:
    config = ml_collections.ConfigDict(json.load(f))
  dataset = data_lib.load_dataset(config)
  with np.load(os.path.join(run, 'vectors.npz')) as saved:
    users, items, epoch = saved['users'], saved['items'], int(saved['epoch'])
  values = []
  for pool in ('all_new', 'split'):
    config.eval.candidates = pool
    values.append(evaluate.evaluate_split(config.eval, users, items, dataset, 'test')[METRIC])
  return epoch, values[0], values[1]


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('runs', help='folder of seed_* run folders trained with all_new')
  parser.add_argument('--split', help='folder of the same runs trained with eval.candidates=split')
  args = parser.parse_args()
  seeds = sorted(s for s in os.listdir(args.runs)
                 if os.path.exists(os.path.join(args.runs, s, 'vectors.npz')))
  if not seeds:
    print(f'error: {args.runs}: no run folder with vectors.npz', file=sys.stderr)
    return 1
  print(f'| run | epoch (all_new) | test {METRIC}: all_new / split pool | epoch (split) | '
        f'test {METRIC}, split pool |')
  print('|---|---|---|---|---|')
  rows = []
  for seed in seeds:
    epoch, all_new, split = pool_metrics(os.path.join(args.runs, seed))
    chosen = (None, np.nan)
    results = os.path.join(args.split or '', seed, 'results.json')
    if args.split and os.path.exists(results):
      with open(results, encoding='utf-8') as f:
        saved = json.load(f)
      chosen = (saved['best_epoch'], saved['test'][METRIC])
    rows.append((all_new, split, chosen[1]))
    print(f'| {seed} | {epoch} | {all_new:.4f} / {split:.4f} | {chosen[0] or "-"} | '
          f'{chosen[1]:.4f} |')
  rows = np.asarray(rows, float)
  chosen = rows[~np.isnan(rows[:, 2]), 2]
  print(f'| mean | | {rows[:, 0].mean():.4f} / {rows[:, 1].mean():.4f} | | '
        f'{chosen.mean() if chosen.size else np.nan:.4f} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
