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
import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof 1); the std is nan for one value, both for none.

  One seed says nothing about the spread: nan shows as n/a, not as a spread of 0.
  """
  if len(values) == 0:
    return math.nan, math.nan
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan


def confidence_half_width(std: float, n: int, level: float = 0.95) -> float:
  """Half-width of the Student-t confidence interval of a mean of n values; nan for n < 2."""
  if n < 2 or math.isnan(std):
    return math.nan
  return float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def paired_difference(values: Mapping[Any, float | None],
                      baseline: Mapping[Any, float | None]) -> dict[str, float]:
  """values[k] - baseline[k] over the keys (seeds) both have a value for.

  Pairing by seed compares runs on the same split, which removes the
  split-to-split spread. The p-value is the two-sided paired t-test
  (scipy.stats.ttest_rel); nan with fewer than two pairs or identical differences.

  Returns:
    {'n': pairs, 'mean': mean difference, 'std': its sample std, 'p_value': p}.
  """
  keys = sorted(k for k, v in values.items()
                if v is not None and baseline.get(k) is not None)
  mine = np.array([values[k] for k in keys], np.float64)
  theirs = np.array([baseline[k] for k in keys], np.float64)
  mean, std = mean_std(mine - theirs)
  p_value = math.nan
  # Differences equal up to rounding have no spread to test (and make scipy warn).
  if len(keys) >= 2 and std > 1e-12 * max(1.0, abs(mean)):
    p_value = float(stats.ttest_rel(mine, theirs).pvalue)
  return {'n': len(keys), 'mean': mean, 'std': std, 'p_value': p_value}


def _spread(std: float) -> str:
  return 'n/a' if math.isnan(std) else f'{std:.4f}'


def format_mean_std(mean: float, std: float) -> str:
  """'0.1234 +- 0.0100'; '0.1234 +- n/a' for one value (no spread), 'n/a' for none."""
  return 'n/a' if math.isnan(mean) else f'{mean:.4f} +- {_spread(std)}'


def format_difference(diff: Mapping[str, float]) -> str:
  """'+0.0012 +- 0.0100 (p 0.81)': a signed paired difference and its p-value."""
  if diff['n'] == 0:
    return 'n/a'
  p_value = 'n/a' if math.isnan(diff['p_value']) else f'{diff["p_value"]:.2f}'
  return f'{diff["mean"]:+.4f} +- {_spread(diff["std"])} (p {p_value})'


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
      cells.append(format_mean_std(*mean_std([v for r in results.values()
                                              if (v := metric(r, key)) is not None])))
    if base:
      for key in metrics:
        diff = paired_difference({name: metric(r, key) for name, r in results.items()},
                                 {name: metric(r, key) for name, r in base.items()})
        cells.append(format_mean_std(diff['mean'], diff['std']))
    lines.append(f'| {folder} | {len(results)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> int:
  """The command line: prints the table; a mistake is one `error:` line (exit 2 for a bad
  argument, 1 for a folder without finished runs)."""
  metrics, baseline, folders = DEFAULT_METRICS, None, []
  for arg in argv:
    if arg in ('-h', '--help'):
      print(__doc__.strip())
      return 0
    if arg.startswith('--metrics='):
      metrics = tuple(arg.split('=', 1)[1].split(','))
    elif arg.startswith('--baseline='):
      baseline = arg.split('=', 1)[1]
    elif arg.startswith('-'):
      print(f'error: unknown flag {arg!r}; the flags are --metrics=A,B and --baseline=DIR '
            '(--help)', file=sys.stderr)
      return 2
    else:
      folders.append(arg)
  if not folders:
    print('error: no run folder given (--help shows the usage)', file=sys.stderr)
    return 2
  for folder in folders + ([baseline] if baseline else []):
    if not os.path.isdir(folder):
      print(f'error: {folder}: no such folder', file=sys.stderr)
      return 1
  try:
    table = summary_table(folders, metrics, baseline)
  except (OSError, ValueError) as error:  # No finished run in a folder, an unreadable file.
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(table)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
