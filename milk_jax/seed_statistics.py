"""Statistics over seeds: means, spreads, paired differences and their formats.

Pure functions of numbers, shared by every summary (milk_jax/report.py) and
scripts/study_table.py. A mean over seeds comes with its sample standard
deviation; two variants are compared seed by seed (paired), which removes the
split-to-split spread.
"""

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats


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


def spread(std: float) -> str:
  return 'n/a' if math.isnan(std) else f'{std:.4f}'


def format_mean_std(mean: float, std: float) -> str:
  """'0.1234 +- 0.0100'; '0.1234 +- n/a' for one value (no spread), 'n/a' for none."""
  return 'n/a' if math.isnan(mean) else f'{mean:.4f} +- {spread(std)}'


def format_difference(diff: Mapping[str, float]) -> str:
  """'+0.0012 +- 0.0100 (p 0.81)': a signed paired difference and its p-value."""
  if diff['n'] == 0:
    return 'n/a'
  p_value = 'n/a' if math.isnan(diff['p_value']) else f'{diff["p_value"]:.2f}'
  return f'{diff["mean"]:+.4f} +- {spread(diff["std"])} (p {p_value})'
