"""Summaries of finished runs: mean and standard deviation over seeds.

  python -m milk_jax.report runs/ml100k/milk runs/ml100k/erm
  python -m milk_jax.report --metrics=test_by_group.missing_1.ndcg@20 runs/ml100k/milk

Each argument is a folder of run workdirs (one per seed, each holding a
results.json); a row of the printed Markdown table summarises one folder.
"""

import json
import os
import sys
from typing import Sequence

import numpy as np

DEFAULT_METRICS = ('test.recall@20', 'test.ndcg@20', 'val.ndcg@20')


def collect(folder: str) -> list[dict]:
  """results.json of every run directly under `folder`, sorted by run name."""
  results = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name, 'results.json')
    if os.path.isfile(path):
      with open(path) as f:
        results.append(json.load(f))
  if not results:
    raise FileNotFoundError(f'no */results.json under {folder}')
  return results


def metric(result: dict, dotted: str) -> float:
  """A value by its path, e.g. 'test.ndcg@20' or 'test_by_group.missing_1.ndcg@20'."""
  for key in dotted.split('.'):
    result = result[key]
  return float(result)


def summary_table(folders: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
  """Markdown table: one row per folder, mean +- std (ddof 1) over its runs."""
  lines = ['| runs | n | ' + ' | '.join(metrics) + ' |',
           '|---|---|' + '---|' * len(metrics)]
  for folder in folders:
    results = collect(folder)
    cells = []
    for key in metrics:
      values = np.array([metric(r, key) for r in results])
      spread = values.std(ddof=1) if values.size > 1 else 0.0
      cells.append(f'{values.mean():.4f} +- {spread:.4f}')
    lines.append(f'| {folder} | {len(results)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> int:
  if not argv:
    print(__doc__.strip(), file=sys.stderr)
    return 2
  metrics = DEFAULT_METRICS
  if argv[0].startswith('--metrics='):
    metrics = tuple(argv[0].split('=', 1)[1].split(','))
    argv = argv[1:]
  print(summary_table(argv, metrics))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
