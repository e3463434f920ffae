"""Tests for milk_jax.plots: the experiment figures."""

import os

from milk_jax import plots


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
