import json
import math
import os
import subprocess
import sys

import pytest

from milk_jax import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(folder, name, recall, ndcg, groups=True):
  run = folder / name
  run.mkdir(parents=True)
  result = {'test': {'recall@20': recall, 'ndcg@20': ndcg}, 'val': {'ndcg@20': ndcg}}
  if groups:
    result['test_by_group'] = {'missing_1': {'ndcg@20': 2 * ndcg}}
  (run / 'results.json').write_text(json.dumps(result))


def test_summary_table_mean_and_std(tmp_path):
  _write(tmp_path / 'milk', '0', 0.2, 0.1)
  _write(tmp_path / 'milk', '1', 0.4, 0.3)
  (tmp_path / 'milk' / 'unfinished').mkdir()
  table = report.summary_table([str(tmp_path / 'milk')], ('test.recall@20', 'test.ndcg@20'))
  row = table.splitlines()[2]
  # mean 0.3, sample std sqrt(0.02) = 0.1414.
  assert '| 2 | 0.3000 +- 0.1414 | 0.2000 +- 0.1414 |' in row


def test_paired_differences_against_a_baseline(tmp_path):
  _write(tmp_path / 'milk', '0', 0.25, 0.1)
  _write(tmp_path / 'milk', '1', 0.50, 0.3)
  _write(tmp_path / 'erm', '0', 0.20, 0.1)
  _write(tmp_path / 'erm', '1', 0.40, 0.3)
  _write(tmp_path / 'erm', '2', 0.90, 0.9)  # No partner in 'milk': left out of the pairs.
  table = report.summary_table([str(tmp_path / 'milk')], ('test.recall@20',),
                               baseline=str(tmp_path / 'erm'))
  # Differences 0.05 and 0.10: mean 0.075, sample std 0.0354.
  assert table.splitlines()[2].endswith('| 0.0750 +- 0.0354 |')


def test_missing_values_show_as_not_available(tmp_path):
  _write(tmp_path / 'ftft', '0', 0.2, 0.1, groups=False)
  result = report.collect(str(tmp_path / 'ftft'))['0']
  assert report.metric(result, 'test_by_group.missing_1.ndcg@20') is None
  table = report.summary_table([str(tmp_path / 'ftft')], ('test_by_group.missing_1.ndcg@20',))
  assert '| n/a |' in table


def test_empty_folder_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='results.json'):
    report.collect(str(tmp_path))


def test_paired_difference_hand_computed():
  mine = {0: 0.30, 1: 0.50, 2: 0.40, 3: 0.9, 4: None}
  baseline = {0: 0.20, 1: 0.30, 2: 0.35, 4: 0.1}  # Seeds 3 and 4 have no pair.
  diff = report.paired_difference(mine, baseline)
  # Differences 0.1, 0.2, 0.05: mean 0.11667, sample std sqrt(0.011667 / 2) = 0.076376,
  # t = mean / (std / sqrt 3) = sqrt 7; with 2 degrees of freedom the two-sided
  # p-value is 1 - t / sqrt(2 + t^2) = 1 - sqrt(7) / 3.
  assert diff['n'] == 3
  assert diff['mean'] == pytest.approx(0.116667, abs=1e-6)
  assert diff['std'] == pytest.approx(0.076376, abs=1e-6)
  assert diff['p_value'] == pytest.approx(1 - 7 ** 0.5 / 3, rel=1e-9)
  assert report.format_difference(diff) == '+0.1167 +- 0.0764 (p 0.12)'


def test_paired_difference_without_spread_has_no_p_value():
  diff = report.paired_difference({0: 0.3, 1: 0.4}, {0: 0.2, 1: 0.3})
  assert diff['mean'] == pytest.approx(0.1) and diff['std'] == pytest.approx(0.0, abs=1e-12)
  assert math.isnan(diff['p_value'])
  one = report.paired_difference({0: 0.3}, {0: 0.2})
  assert one['n'] == 1 and math.isnan(one['p_value'])
  assert report.format_difference(report.paired_difference({0: 0.3}, {1: 0.2})) == 'n/a'


def test_one_run_has_no_spread(tmp_path):
  mean, std = report.mean_std([0.25])
  assert mean == 0.25 and math.isnan(std)
  assert report.format_mean_std(mean, std) == '0.2500 +- n/a'
  _write(tmp_path / 'milk', '0', 0.2, 0.1)
  table = report.summary_table([str(tmp_path / 'milk')], ('test.recall@20',))
  assert table.splitlines()[2].endswith('| 1 | 0.2000 +- n/a |')
  one = report.paired_difference({0: 0.3}, {0: 0.2})
  assert report.format_difference(one) == '+0.1000 +- n/a (p n/a)'


def test_confidence_half_width_hand_computed():
  # t(0.975, 3) = 3.182446; 3.182446 * 0.02 / sqrt(4) = 0.0318245.
  assert report.confidence_half_width(0.02, 4) == pytest.approx(0.0318245, abs=1e-7)
  assert math.isnan(report.confidence_half_width(float('nan'), 1))
  assert math.isnan(report.confidence_half_width(0.0, 1))


def test_the_command_line_help_and_mistakes_are_one_line(tmp_path, capsys):
  done = subprocess.run([sys.executable, '-m', 'milk_jax.report', '--help'], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and done.stderr == '' and '--baseline' in done.stdout
  for argv, code, line in (
      ([str(tmp_path / 'absent')], 1, f'error: {tmp_path / "absent"}: no such folder'),
      ([str(tmp_path)], 1, f'error: no */results.json under {tmp_path}'),
      (['--metric=x', str(tmp_path)], 2, "error: unknown flag '--metric=x'; the flags are "
       '--metrics=A,B and --baseline=DIR (--help)'),
      ([], 2, 'error: no run folder given (--help shows the usage)')):
    assert report.main(argv) == code
    assert capsys.readouterr() == ('', line + '\n')
  _write(tmp_path / 'milk', '0', 0.2, 0.1)
  assert report.main(['--metrics=test.ndcg@20', str(tmp_path / 'milk')]) == 0
  assert '| 1 | 0.1000 +- ' in capsys.readouterr().out
