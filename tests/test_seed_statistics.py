"""milk_jax/seed_statistics.py: hand-computed paired differences and confidence intervals."""

import math

import pytest

from milk_jax import seed_statistics


def test_paired_difference_hand_computed():
  mine = {0: 0.30, 1: 0.50, 2: 0.40, 3: 0.9, 4: None}
  baseline = {0: 0.20, 1: 0.30, 2: 0.35, 4: 0.1}  # Seeds 3 and 4 have no pair.
  diff = seed_statistics.paired_difference(mine, baseline)
  # Differences 0.1, 0.2, 0.05: mean 0.11667, sample std sqrt(0.011667 / 2) = 0.076376,
  # t = mean / (std / sqrt 3) = sqrt 7; with 2 degrees of freedom the two-sided
  # p-value is 1 - t / sqrt(2 + t^2) = 1 - sqrt(7) / 3.
  assert diff['n'] == 3
  assert diff['mean'] == pytest.approx(0.116667, abs=1e-6)
  assert diff['std'] == pytest.approx(0.076376, abs=1e-6)
  assert diff['p_value'] == pytest.approx(1 - 7 ** 0.5 / 3, rel=1e-9)
  assert seed_statistics.format_difference(diff) == '+0.1167 +- 0.0764 (p 0.12)'


def test_paired_difference_without_spread_has_no_p_value():
  diff = seed_statistics.paired_difference({0: 0.3, 1: 0.4}, {0: 0.2, 1: 0.3})
  assert diff['mean'] == pytest.approx(0.1) and diff['std'] == pytest.approx(0.0, abs=1e-12)
  assert math.isnan(diff['p_value'])
  one = seed_statistics.paired_difference({0: 0.3}, {0: 0.2})
  assert one['n'] == 1 and math.isnan(one['p_value'])
  assert seed_statistics.format_difference(seed_statistics.paired_difference({0: 0.3}, {1: 0.2})) == 'n/a'


def test_confidence_half_width_hand_computed():
  # t(0.975, 3) = 3.182446; 3.182446 * 0.02 / sqrt(4) = 0.0318245.
  assert seed_statistics.confidence_half_width(0.02, 4) == pytest.approx(0.0318245, abs=1e-7)
  assert math.isnan(seed_statistics.confidence_half_width(float('nan'), 1))
  assert math.isnan(seed_statistics.confidence_half_width(0.0, 1))
