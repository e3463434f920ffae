"""Tests for milk_jax.report: statistics over seeds, an experiment's summary (rows, CSV,
Markdown, the figures it chooses) and the command line's table over run folders."""

import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from milk_jax import report
from milk_jax import report_figures
from milk_jax import seed_statistics

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


def test_one_run_has_no_spread(tmp_path):
  mean, std = seed_statistics.mean_std([0.25])
  assert mean == 0.25 and math.isnan(std)
  assert seed_statistics.format_mean_std(mean, std) == '0.2500 +- n/a'
  _write(tmp_path / 'milk', '0', 0.2, 0.1)
  table = report.summary_table([str(tmp_path / 'milk')], ('test.recall@20',))
  assert table.splitlines()[2].endswith('| 1 | 0.2000 +- n/a |')
  one = seed_statistics.paired_difference({0: 0.3}, {0: 0.2})
  assert seed_statistics.format_difference(one) == '+0.1000 +- n/a (p n/a)'


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


def test_a_folder_that_is_its_own_baseline_differs_by_zero(tmp_path):
  _write(tmp_path / 'erm', '0', 0.20, 0.1)
  _write(tmp_path / 'erm', '1', 0.40, 0.3)
  table = report.summary_table([str(tmp_path / 'erm')], ('test.recall@20',),
                               baseline=str(tmp_path / 'erm'))
  assert table.splitlines()[2].endswith('| 2 | 0.3000 +- 0.1414 | 0.0000 +- 0.0000 |')


def test_summary_csv_leaves_nan_and_absent_cells_empty():
  rows = [{'setting': 'ftmt', 'variant': 'ERM', 'metric': 'test.ndcg@20', 'n': 1,
           'mean': 0.123456789, 'std': math.nan},
          {'setting': 'ftmt', 'variant': 'MILK', 'metric': 'test.ndcg@20', 'n': 2,
           'mean': 0.25, 'std': 0.01, 'diff_n': 1, 'diff_mean': 0.05, 'diff_std': math.nan,
           'p_value': math.nan}]
  lines = list(csv.reader(io.StringIO(report.summary_csv(rows))))
  assert lines == [list(report.CSV_COLUMNS),
                   ['ftmt', 'ERM', 'test.ndcg@20', '1', '0.123457', '', '', '', '', ''],
                   ['ftmt', 'MILK', 'test.ndcg@20', '2', '0.25', '0.01', '1', '0.05', '', '']]


def _fake_results(values):
  """{(setting, variant): {seed: results.json}} from {variant: [(all, full, missing_1)]}."""
  return {('groups', variant): {
      seed: {'test': {'ndcg@20': a},
             'test_by_group': {'full': {'ndcg@20': f}, 'missing_1': {'ndcg@20': m}}}
      for seed, (a, f, m) in enumerate(by_seed)} for variant, by_seed in values.items()}


def test_group_gains_and_bold_best_hand_computed(experiment_grid):
  exp = experiment_grid(('groups',), ('groups',), 5)
  results = _fake_results({'ERM': [(0.20, 0.40, 0.10), (0.20, 0.20, 0.10)],
                           'MILK': [(0.25, 0.30, 0.09), (0.25, 0.30, 0.13)]})
  metrics = report.expand_metrics(exp.metrics, results)
  assert metrics == ['test.ndcg@20', 'test_by_group.full.ndcg@20',
                     'test_by_group.missing_1.ndcg@20']
  rows = report.summary_rows(results, exp, metrics)
  groups = report.group_metrics(metrics, exp.plot_metric)
  gains = report.relative_gains(rows, exp, groups)
  # Means: ERM 0.20 / 0.30 / 0.10, MILK 0.25 / 0.30 / 0.11.
  np.testing.assert_allclose(list(gains['MILK'].values()), [25.0, 0.0, 10.0], atol=1e-9)
  table = report.setting_tables(rows, exp, metrics, 'groups')
  milk_line = next(line for line in table if line.startswith('| MILK | 2 |'))
  assert '**0.2500 +- 0.0000**' in milk_line and '**0.1100 +- 0.0283**' in milk_line
  erm_line = next(line for line in table if line.startswith('| ERM | 2 |'))
  assert '**0.3000 +- 0.1414**' in erm_line  # The tie on 'full' is bold in both rows.
  figures = report_figures.figures(results, rows, exp, metrics)
  assert sorted(f.name for f in figures) == ['group_gain', 'groups']


def test_sweeps_group_variants_by_their_one_numeric_key():
  from configs.experiments import sensitivity  # pylint: disable=import-outside-toplevel
  config = sensitivity.get_config('default')
  swept = report.sweeps(config.experiment)
  assert list(swept) == ['model.alpha', 'train.beta', 'train.align_weight']
  assert [x for x, _ in swept['train.beta']] == [0.0, 1.0, 10.0, 100.0, 1000.0]
  assert swept['model.alpha'][0] == (0.01, 'alpha=0.01')


def test_one_seed_has_no_spread_in_the_summary(experiment_grid, grid_results, summarise,
                                               caplog):
  exp = experiment_grid(('ftmt',), ('bars', 'drop'), 1)
  results = grid_results('ftmt', {'ERM': [(0.20, {})], 'MILK': [(0.25, {})]})
  rows, metrics = summarise(results, exp)
  table = report.setting_tables(rows, exp, metrics, 'ftmt')
  assert '| ERM | 1 | 0.2000 +- n/a |' in table
  assert '| MILK | +0.0500 +- n/a (p n/a) |' in table
  # One setting has no change between settings to draw: said, not silently skipped.
  figures = report_figures.figures(results, rows, exp, metrics)
  assert [f.name for f in figures] == ['bars', 'bars_paired']
  assert 'drop.png skipped' in caplog.text and 'has one (ftmt)' in caplog.text


def test_the_group_view_covers_every_setting_with_missing_groups(experiment_grid, grid_results,
                                                                 summarise):
  exp = experiment_grid(('ftft', 'ftmt'), ('groups',), 2)
  results = {
      **grid_results('ftft', {'ERM': [(0.30, {'full': 0.30})] * 2,
                              'MILK': [(0.32, {'full': 0.32})] * 2}),
      **grid_results('ftmt', {'ERM': [(0.20, {'full': 0.40, 'missing_1': 0.10})] * 2,
                              'MILK': [(0.25, {'full': 0.40, 'missing_1': 0.15})] * 2})}
  rows, metrics = summarise(results, exp)
  groups = report.group_metrics(metrics, exp.plot_metric)
  # FTFT's new items are all complete: one group, no per-group view.
  assert report_figures.group_keys(rows, exp, groups) == [
      ('FTMT all', 'ftmt', 'test.ndcg@20'), ('FTMT full', 'ftmt', 'test_by_group.full.ndcg@20'),
      ('FTMT missing_1', 'ftmt', 'test_by_group.missing_1.ndcg@20')]
  gains = report.relative_gains(rows, exp, groups, 'ftmt')
  np.testing.assert_allclose(list(gains['MILK'].values()), [25.0, 0.0, 50.0], atol=1e-9)
  sections = '\n'.join(report.extra_sections(results, rows, exp, metrics))
  assert '(ndcg@20, FTMT)' in sections and '(ndcg@20, FTFT)' not in sections
  figures = report_figures.figures(results, rows, exp, metrics)
  assert [f.name for f in figures] == ['groups', 'group_gain']


def test_within_group_metrics_get_their_own_columns_sections_and_figures(
    experiment_grid, grid_results, summarise):
  exp = experiment_grid(('ftmt',), ('groups',), 2)
  exp.metrics = exp.metrics + ('test_within_group.*.ndcg@20',)
  results = grid_results('ftmt', {'ERM': [(0.20, {'full': 0.40, 'missing_1': 0.10})] * 2,
                                  'MILK': [(0.25, {'full': 0.40, 'missing_1': 0.15})] * 2})
  within = {'ERM': (0.50, 0.20), 'MILK': (0.45, 0.30)}  # full, missing_1 in their own rankings.
  for (_, variant), by_seed in results.items():
    for result in by_seed.values():
      full, missing = within[variant]
      result['test_within_group'] = {'full': {'ndcg@20': full}, 'missing_1': {'ndcg@20': missing}}
  rows, metrics = summarise(results, exp)
  assert metrics[-2:] == ['test_within_group.full.ndcg@20', 'test_within_group.missing_1.ndcg@20']
  assert [report.metric_label(m) for m in metrics] == [
      'ndcg@20', 'full.ndcg@20', 'missing_1.ndcg@20', 'within.full.ndcg@20',
      'within.missing_1.ndcg@20']
  assert report.metric_label('test_within_group_uncalibrated.full.ndcg@20') == (
      'uncalibrated.within.full.ndcg@20')
  table = '\n'.join(report.setting_tables(rows, exp, metrics, 'ftmt'))
  assert '| within.full.ndcg@20 | within.missing_1.ndcg@20 |' in table
  groups = report.group_metrics(metrics, exp.plot_metric, 'test_within_group')
  assert groups == {'all': 'test.ndcg@20', 'full': 'test_within_group.full.ndcg@20',
                    'missing_1': 'test_within_group.missing_1.ndcg@20'}
  gains = report.relative_gains(rows, exp, groups)
  np.testing.assert_allclose(list(gains['MILK'].values()), [25.0, -10.0, 50.0], atol=1e-9)
  sections = '\n'.join(report.extra_sections(results, rows, exp, metrics))
  assert 'per group, within-group ranking (ndcg@20, FTMT)' in sections
  assert '| MILK | +25.0% | -10.0% | +50.0% |' in sections
  figures = report_figures.figures(results, rows, exp, metrics)
  assert [f.name for f in figures] == ['groups', 'group_gain', 'groups_within',
                                       'group_gain_within']
