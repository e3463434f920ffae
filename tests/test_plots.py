"""Tests for milk_jax.plots: the experiment figures and a run's training curves."""

import json
import os

import numpy as np

from milk_jax import plots
from milk_jax import report_figures


def test_up_to_ten_series_take_the_default_cycle():
  tab10 = plots.pyplot().get_cmap('tab10')
  assert plots.series_colours(3) == [tab10(0), tab10(1), tab10(2)]


def test_more_than_ten_series_get_distinct_colours():
  # Table 2 draws 13 variants: the default cycle would repeat three colours.
  assert len(set(plots.series_colours(13))) == 13
  assert len(set(plots.series_colours(20))) == 20


def test_bar_chart_writes_a_png(tmp_path):
  path = os.path.join(tmp_path, 'bars.png')
  series = {f'v{i}': ([0.1 * i, 0.2], [0.01, 0.02]) for i in range(13)}
  series['v0'] = ([0.1, float('nan')], None)  # A missing bar and no error bars.
  plots.bar_chart(path, ['FTMT', 'MTMT'], series, 'ndcg@20', 'test')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def _axes():
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure().subplots()


def _error_bars(ax):
  from matplotlib.container import ErrorbarContainer  # pylint: disable=import-outside-toplevel
  return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_unknown_spreads_draw_no_error_bars():
  nan = float('nan')
  assert plots.error_bars([nan, nan]) is None and plots.error_bars(None) is None
  ax = _axes()
  plots.draw_bars(ax, ['FTFT', 'FTMT'], {'one seed': ([0.1, 0.2], [nan, nan])})
  assert not _error_bars(ax)
  ax = _axes()
  plots.draw_bars(ax, ['FTFT', 'FTMT'], {'mixed': ([0.1, 0.2], [nan, 0.05])})
  bar, = _error_bars(ax)
  segments = [s for s in bar.lines[2][0].get_segments() if len(s)]
  assert len(segments) == 1  # FTMT's 0.2 +- 0.05; FTFT's unknown spread draws nothing.
  np.testing.assert_allclose(segments[0], [[1.0, 0.15], [1.0, 0.25]])


RECORDS = [{'epoch': 0, 'kind': 'eval', 'val': {'recall@20': 0.1, 'ndcg@20': 0.05}},
           {'epoch': 1, 'kind': 'train', 'loss': 0.7, 'bpr': 0.69, 'seconds': 0.1},
           {'epoch': 2, 'kind': 'train', 'loss': 0.5, 'bpr': 0.49, 'seconds': 0.1},
           {'epoch': 2, 'kind': 'eval', 'val': {'recall@20': 0.3, 'ndcg@20': 0.15}}]


def test_curve_data_of_a_log():
  assert plots.curve_data(RECORDS, ['recall@20', 'ndcg@20']) == (
      [1, 2], [0.7, 0.5], [0, 2], {'recall@20': [0.1, 0.3], 'ndcg@20': [0.05, 0.15]})


def _run_folder(folder, records, results=None):
  folder.mkdir()
  (folder / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  (folder / 'config.json').write_text(json.dumps({'method': 'milk'}))
  if results is not None:
    (folder / 'results.json').write_text(json.dumps(results))


def _is_png(path):
  with open(path, 'rb') as f:
    return f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_the_command_line_draws_a_runs_curves(tmp_path, capsys):
  _run_folder(tmp_path / 'run', RECORDS, {'best_epoch': 2})
  # A warm backbone's log has no evaluation: one panel.
  _run_folder(tmp_path / 'backbone', RECORDS[1:3])
  assert plots.main([str(tmp_path / 'run'), str(tmp_path / 'backbone')]) == 0
  assert capsys.readouterr().out.split() == [str(tmp_path / 'run' / 'curves.png'),
                                             str(tmp_path / 'backbone' / 'curves.png')]
  assert _is_png(tmp_path / 'run' / 'curves.png') and _is_png(tmp_path / 'backbone' / 'curves.png')
  assert sorted(os.listdir(tmp_path / 'run')) == [
      'config.json', 'curves.png', 'metrics.jsonl', 'results.json']  # No temporary left.


def test_the_command_line_mistakes_are_one_line(tmp_path, capsys):
  assert plots.main([]) == 2
  assert capsys.readouterr().err == f'error: {plots.USAGE}\n'
  assert plots.main(['--help']) == 0 and capsys.readouterr().out.startswith(plots.USAGE)
  assert plots.main([str(tmp_path)]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'no metrics.jsonl' in err and err.count('\n') == 1
  (tmp_path / 'metrics.jsonl').write_text('[1, 2]\n{}\n')
  assert plots.main([str(tmp_path)]) == 1
  assert 'not a JSON object' in capsys.readouterr().err


def test_paired_differences_are_plotted_with_their_interval(tmp_path, experiment_grid,
                                                            grid_results, summarise):
  exp = experiment_grid(('ftmt',), ('bars',), 3)
  results = grid_results('ftmt', {'ERM': [(0.20, {}), (0.30, {}), (0.10, {})],
                                  'MILK': [(0.21, {}), (0.33, {}), (0.12, {})]})
  rows, metrics = summarise(results, exp)
  series = report_figures.paired_series(rows, exp, [('ftmt', 'test.ndcg@20')])
  # Differences 0.01, 0.03, 0.02: mean 0.02, std 0.01, 95% half-width
  # t(0.975, 2) * 0.01 / sqrt(3) = 4.302653 * 0.01 / 1.732051 = 0.024841.
  assert list(series) == ['MILK']
  np.testing.assert_allclose(series['MILK'][0], [0.02], atol=1e-12)
  np.testing.assert_allclose(series['MILK'][1], [0.024841], atol=1e-6)
  paths = plots.draw_figures(str(tmp_path), report_figures.figures(results, rows, exp, metrics))
  assert [os.path.basename(p) for p in paths] == ['bars.png', 'bars_paired.png']
  for path in paths:
    assert _is_png(path)


def test_one_seed_draws_no_error_bars(experiment_grid, grid_results, summarise):
  exp = experiment_grid(('ftmt',), ('bars', 'drop'), 1)
  results = grid_results('ftmt', {'ERM': [(0.20, {})], 'MILK': [(0.25, {})]})
  rows, _ = summarise(results, exp)
  keys = [('ftmt', 'test.ndcg@20')]
  ax = _axes()
  plots.draw_bars(ax, ['FTMT'], {v: report_figures.mean_series(rows, v, keys) for v in ('ERM', 'MILK')})
  plots.draw_bars(ax, ['FTMT'], report_figures.paired_series(rows, exp, keys))
  assert not _error_bars(ax)


def test_an_experiments_group_figures_are_drawn(tmp_path, experiment_grid, grid_results,
                                                summarise):
  exp = experiment_grid(('ftft', 'ftmt'), ('groups', 'drop'), 2)
  results = {
      **grid_results('ftft', {'ERM': [(0.30, {'full': 0.30})] * 2,
                              'MILK': [(0.32, {'full': 0.32})] * 2}),
      **grid_results('ftmt', {'ERM': [(0.20, {'full': 0.40, 'missing_1': 0.10})] * 2,
                              'MILK': [(0.25, {'full': 0.40, 'missing_1': 0.15})] * 2})}
  rows, metrics = summarise(results, exp)
  paths = plots.draw_figures(str(tmp_path), report_figures.figures(results, rows, exp, metrics))
  assert [os.path.basename(p) for p in paths] == ['drop.png', 'groups.png', 'group_gain.png']
  assert all(_is_png(path) for path in paths)


def test_draw_figures_draws_bars_and_line_panels(tmp_path):
  figures = [('gain', 'bars', {'groups': ['FTMT'], 'series': {'MILK': ([0.1], None)},
                               'ylabel': 'gain', 'title': 't', 'skip_colour': 0}),
             ('sweep', 'lines', {'panels': {'train.beta': ([0.0, 10.0, 1000.0],
                                                           ([0.1, 0.2, 0.15], [0.01, 0.01, 0.02]))},
                                 'ylabel': 'ndcg@20', 'title': 't', 'reference': ('ERM', 0.1)})]
  paths = plots.draw_figures(str(tmp_path), figures)
  assert paths == [str(tmp_path / 'gain.png'), str(tmp_path / 'sweep.png')]
  assert all(_is_png(path) for path in paths)


def _scale_rows():
  """A made-up scale grid: base point on every axis, one more point per axis, one cut point."""
  base = {'axes': 'users+items+interactions', 'users': 100, 'items': 50, 'interactions': 1000,
          'epoch_seconds': 1.0, 'data_seconds': 0.5, 'peak_rss_mib': 512}
  return [base,
          {**base, 'axes': 'interactions', 'interactions': 4000, 'epoch_seconds': 4.0},
          {**base, 'axes': 'users', 'users': 400, 'epoch_seconds': 1.1, 'data_seconds': 0.8},
          # Cut before its epoch: no epoch point.
          {'axes': 'items', 'users': 100, 'items': 500, 'interactions': 1000, 'data_seconds': 0.6}]


def test_scale_lines_follow_each_axis_with_the_fitted_slopes():
  slopes = {'interactions': {'epoch': 1.0, 'data': float('nan')}}
  lines = plots.scale_lines(_scale_rows(), slopes, 'interactions')
  assert lines == {'data': [(1000, 0.5), (4000, 0.5)],  # NaN: not fitted.
                   'epoch (slope 1.00)': [(1000, 1.0), (4000, 4.0)]}
  items = plots.scale_lines(_scale_rows(), {}, 'items')
  assert items == {'data': [(50, 0.5), (500, 0.6)], 'epoch': [(50, 1.0)]}


def test_plot_scale_writes_a_png(tmp_path):
  path = os.path.join(tmp_path, 'scale.png')
  plots.plot_scale(_scale_rows(), {'users': {'epoch': 0.07, 'data': None}}, path, 'made up')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
