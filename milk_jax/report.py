"""Summaries of finished runs: mean and standard deviation over seeds.

  python -m milk_jax.report runs/ml100k/milk runs/ml100k/erm
  python -m milk_jax.report --metrics=test.ndcg@20,test_by_group.missing_1.ndcg@20 \
      --baseline=runs/ml100k/erm runs/ml100k/milk

Each folder holds run workdirs (one per seed, each with a results.json); a
row of the printed Markdown table summarises one folder. With --baseline,
each metric also gets the paired difference against the baseline's run of
the same name (same seed, same split), which removes the split-to-split
spread that dominates the plain standard deviation.
"""

import json
import os
import sys
from typing import Sequence

import numpy as np

DEFAULT_METRICS = ('test.recall@20', 'test.ndcg@20', 'val.ndcg@20')


def collect(folder: str) -> dict[str, dict]:
  """{run name: results.json} for every finished run directly under `folder`."""
  results = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name, 'results.json')
    if os.path.isfile(path):
      with open(path) as f:
        results[name] = json.load(f)
  if not results:
    raise FileNotFoundError(f'no */results.json under {folder}')
  return results


def metric(result: dict, dotted: str) -> float | None:
  """A value by its path, e.g. 'test.ndcg@20' or 'test_by_group.missing_1.ndcg@20'.

  None where the run has no such value (an ftft run has no 'missing_1' group).
  """
  for key in dotted.split('.'):
    if not isinstance(result, dict) or key not in result:
      return None
    result = result[key]
  return float(result)


def _mean_std(values: Sequence[float]) -> str:
  if not values:
    return 'n/a'
  values = np.asarray(values)
  spread = values.std(ddof=1) if values.size > 1 else 0.0
  return f'{values.mean():.4f} +- {spread:.4f}'


def summary_table(folders: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS,
                  baseline: str | None = None) -> str:
  """Markdown table: one row per folder, mean +- std (ddof 1) over its runs."""
  base = collect(baseline) if baseline else None
  header = list(metrics) + ([f'{m} - baseline (paired)' for m in metrics] if base else [])
  lines = ['| runs | n | ' + ' | '.join(header) + ' |', '|---|---|' + '---|' * len(header)]
  for folder in folders:
    results = collect(folder)
    cells = []
    for key in metrics:
      cells.append(_mean_std([v for r in results.values()
                              if (v := metric(r, key)) is not None]))
    if base:
      for key in metrics:
        pairs = [(metric(r, key), metric(base[name], key))
                 for name, r in results.items() if name in base]
        cells.append(_mean_std([mine - theirs for mine, theirs in pairs
                                if mine is not None and theirs is not None]))
    lines.append(f'| {folder} | {len(results)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> int:
  metrics, baseline, folders = DEFAULT_METRICS, None, []
  for arg in argv:
    if arg.startswith('--metrics='):
      metrics = tuple(arg.split('=', 1)[1].split(','))
    elif arg.startswith('--baseline='):
      baseline = arg.split('=', 1)[1]
    else:
      folders.append(arg)
  if not folders:
    print(__doc__.strip(), file=sys.stderr)
    return 2
  print(summary_table(folders, metrics, baseline))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
