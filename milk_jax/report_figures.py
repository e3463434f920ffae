"""The figures an experiment asks for, chosen from its summary rows as data.

milk_jax/plots.py draws them (`plots.draw_figures`); nothing here draws or
writes a file. The rows are those of `report.summary_rows`.
"""

import logging
from typing import Any, Mapping, NamedTuple, Sequence

import ml_collections

from milk_jax import report
from milk_jax import seed_statistics

log = logging.getLogger('milk_jax.report')


def group_keys(rows: Sequence[dict[str, Any]], exp: ml_collections.ConfigDict,
               groups: Mapping[str, str]) -> list[tuple[str, str, str]]:
  """(x label, setting, metric) of every group of report.group_settings; the label names the
  setting when the grid has several."""
  return [(f'{setting.upper()} {group}' if len(exp.settings) > 1 else group, setting, metric)
          for setting in report.group_settings(rows, exp, groups)
          for group, metric in groups.items()]


def paired_series(rows: Sequence[dict[str, Any]], exp: ml_collections.ConfigDict,
                  keys: Sequence[tuple[str, str]]
                  ) -> dict[str, tuple[list[float], list[float]]]:
  """{variant: (paired mean differences to the baseline, 95% CI half-widths)} per
  (setting, metric) of `keys`, for every variant but the baseline; nan where there is
  no pair (or, for the interval, fewer than two)."""
  index = {(r['setting'], r['variant'], r['metric']): r for r in rows}
  series = {}
  for variant, _ in exp.variants:
    if variant == exp.baseline:
      continue
    picked = [index[setting, variant, metric] for setting, metric in keys]
    series[variant] = ([r['diff_mean'] for r in picked],
                       [seed_statistics.confidence_half_width(r['diff_std'], r['diff_n'])
                        for r in picked])
  return series


def mean_series(rows: Sequence[dict[str, Any]], variant: str, keys: Sequence[tuple[str, str]]
                ) -> tuple[list[float], list[float]]:
  """(means, stds over seeds) of `variant` per (setting, metric) of `keys`."""
  index = {(r['setting'], r['variant'], r['metric']): r for r in rows}
  picked = [index[setting, variant, metric] for setting, metric in keys]
  return [r['mean'] for r in picked], [r['std'] for r in picked]


class Figure(NamedTuple):
  """One figure of an experiment, as data; plots.draw_figures draws it as <name>.png.

  kind 'bars': args are plots.bar_chart's (groups, series, ylabel, title and
  maybe skip_colour); 'lines': plots.line_panels' (panels, ylabel, title, reference).
  """
  name: str
  kind: str
  args: dict[str, Any]


def figures(results: report.Results, rows: Sequence[dict[str, Any]],
            exp: ml_collections.ConfigDict, metrics: Sequence[str]) -> list[Figure]:
  """The figures exp.plots asks for, in the order they are drawn.

  bars: plot_metric per setting, one bar per variant (Table 2, Figure 4); with a
    baseline also bars_paired: each variant minus the baseline, paired by seed, with
    its 95% confidence interval (the comparison the unpaired spreads of bars hide).
  drop: change of plot_metric from the first setting to each other one (Figure 5).
  groups: plot_metric per missing group of every setting that has groups, and the
    relative gain over the baseline (Figure 3), in one shared ranking (test_by_group);
    with test_within_group metrics also groups_within and group_gain_within, each
    group's users ranking only that group's items.
  sweep: plot_metric against each swept hyper-parameter (Figure 6).
  A figure that cannot be drawn from this grid is left out with a warning that says why.
  """
  variants = [name for name, _ in exp.variants]
  label = report.metric_label(exp.plot_metric)
  chosen = []
  # Figures without the baseline keep each variant's colour of the figures with it.
  skip = variants.index(exp.baseline) if exp.baseline in variants else None

  def add(name, kind, **args):
    chosen.append(Figure(name, kind, args))

  if 'bars' in exp.plots:
    keys = [(s, exp.plot_metric) for s in exp.settings]
    add('bars', 'bars', groups=[s.upper() for s in exp.settings],
        series={v: mean_series(rows, v, keys) for v in variants}, ylabel=label,
        title=f'{exp.name}: test {label}, mean +- std over seeds')
    if exp.baseline is not None and len(variants) > 1:
      add('bars_paired', 'bars', groups=[s.upper() for s in exp.settings],
          series=paired_series(rows, exp, keys), ylabel=f'{label} - {exp.baseline}',
          title=f'{exp.name}: test {label} minus {exp.baseline}, paired by seed (mean, 95% CI)',
          skip_colour=skip)
  if 'drop' in exp.plots and len(exp.settings) == 1:
    log.warning('drop.png skipped: it shows the change from the first setting to the others, '
                'and config.experiment.settings has one (%s)', exp.settings[0])
  if 'drop' in exp.plots and len(exp.settings) > 1:
    changes = report.setting_changes(results, exp)
    add('drop', 'bars',
        groups=[f'{s.upper()} - {exp.settings[0].upper()}' for s in exp.settings[1:]],
        series={v: ([d['mean'] for d in c.values()], [d['std'] for d in c.values()])
                for v, c in changes.items()},
        ylabel=f'change of {label}', title=f'{exp.name}: paired change between settings')
  if 'groups' in exp.plots:
    for view, name, _ in report.GROUP_VIEWS:
      groups = report.group_metrics(metrics, exp.plot_metric, view)
      within = view != report.GROUP_VIEWS[0][0]
      if within and len(groups) == 1:
        continue  # No within-group metric asked for: no second figure.
      if len(groups) == 1:
        log.warning("groups.png shows 'all' only: config.experiment.metrics has no "
                    "'test_by_group.*.%s'", exp.plot_metric.split('.')[-1])
      labelled = group_keys(rows, exp, groups)
      labels = [x for x, _, _ in labelled]
      keys = [(setting, metric) for _, setting, metric in labelled]
      how = ', each group ranking its own items' if within else ''
      add(name, 'bars', groups=labels, series={v: mean_series(rows, v, keys) for v in variants},
          ylabel=label, title=f'{exp.name}: test {label} per missing group{how}')
      if exp.baseline is not None and len(variants) > 1:
        gains = {v: [] for v in variants if v != exp.baseline}
        for setting in report.group_settings(rows, exp, groups):
          for variant, by_group in report.relative_gains(rows, exp, groups, setting).items():
            gains[variant] += list(by_group.values())
        add('group_gain' + name.removeprefix('groups'), 'bars', groups=labels,
            series={v: (g, None) for v, g in gains.items()},
            ylabel=f'gain over {exp.baseline} (%)',
            title=f'{exp.name}: relative gain per group{how}', skip_colour=skip)
  if 'sweep' in exp.plots:
    swept = report.sweeps(exp)
    if not swept:
      log.warning('sweep.png skipped: no variant but the baseline sets exactly one numeric '
                  'config key')
    if swept:
      panels = {}
      for key, points in swept.items():
        keys = [(exp.settings[0], exp.plot_metric)]
        columns = [mean_series(rows, variant, keys) for _, variant in points]
        panels[key] = ([x for x, _ in points],
                       ([c[0][0] for c in columns], [c[1][0] for c in columns]))
      reference = None
      if exp.baseline is not None:
        reference = (exp.baseline, mean_series(rows, exp.baseline,
                                               [(exp.settings[0], exp.plot_metric)])[0][0])
      add('sweep', 'lines', panels=panels, ylabel=label,
          title=f'{exp.name}: test {label} ({exp.settings[0].upper()})', reference=reference)
  return chosen
