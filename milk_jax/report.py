"""Summaries of finished runs: statistics over seeds and an experiment's summary.

Read-only over the runs' results (results.json): nothing here trains, writes
a file or draws.
  statistics   over seeds, in milk_jax/seed_statistics.py; `metric` reads a value
               of a run's results by its dotted path.
  experiments  of a grid that milk_jax/experiment.py ran: summary_rows (one row
               per setting x variant x metric), summary_csv (summary.csv),
               summary_markdown (summary.md); the figures the grid asks for are
               chosen in milk_jax/report_figures.py, drawn by milk_jax/plots.py.
  folders      summary_table, the command line's Markdown table over folders of
               runs (USAGE below).
"""

import csv
import io
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

import ml_collections

from milk_jax import seed_statistics

USAGE = """Summaries of finished runs: mean and standard deviation over seeds.

  .venv/bin/python -m milk_jax.report runs/ml100k/milk runs/ml100k/erm
  .venv/bin/python -m milk_jax.report --metrics=test.ndcg@20,test_by_group.missing_1.ndcg@20 \
      --baseline=runs/ml100k/erm runs/ml100k/milk

Each folder holds run workdirs (one per seed, each with a results.json); a
row of the printed Markdown table summarises one folder. With --baseline,
each metric also gets the paired difference against the baseline's run of
the same name (same seed, same split), which removes the split-to-split
spread that dominates the plain standard deviation.
"""

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


# An experiment's results: each run's results.json, by (setting, variant) then seed.
Results = dict[tuple[str, str], dict[int, dict[str, Any]]]

PLOTS = ('bars', 'drop', 'groups', 'sweep')  # The figures an experiment can ask for.
CSV_COLUMNS = ('setting', 'variant', 'metric', 'n', 'mean', 'std',
               'diff_n', 'diff_mean', 'diff_std', 'p_value')


def _matching_keys(result: Any, pattern: Sequence[str], prefix: str = '') -> list[str]:
  """Dotted keys of `result` that match the pattern parts; '*' matches any key."""
  if not pattern:
    return [prefix[:-1]] if not isinstance(result, dict) else []
  if not isinstance(result, dict):
    return []
  head, rest = pattern[0], pattern[1:]
  keys = sorted(result) if head == '*' else [head] if head in result else []
  return [k for key in keys for k in _matching_keys(result[key], rest, f'{prefix}{key}.')]


def expand_metrics(patterns: Sequence[str], results: Results) -> list[str]:
  """The metric keys: plain keys as given, '*' patterns expanded over all results."""
  metrics = []
  for pattern in patterns:
    found = [pattern] if '*' not in pattern else sorted(
        {k for by_seed in results.values() for r in by_seed.values()
         for k in _matching_keys(r, pattern.split('.'))})
    metrics.extend(k for k in found if k not in metrics)
  return metrics


def _values(results: Results, setting: str, variant: str, key: str) -> dict[int, float | None]:
  """{seed: the value of metric `key`} of one setting and variant (None where absent)."""
  return {seed: metric(r, key) for seed, r in results.get((setting, variant), {}).items()}


def summary_row(values: Mapping[Any, float | None],
                baseline: Mapping[Any, float | None] | None = None) -> dict[str, Any]:
  """n, mean and std over the values present; with `baseline` (values under the same
  keys, e.g. seeds), also diff_n, diff_mean, diff_std and p_value of paired_difference.

  One cell of summary.csv, and of the command line's table.
  """
  present = [v for v in values.values() if v is not None]
  mean, std = seed_statistics.mean_std(present)
  row = {'n': len(present), 'mean': mean, 'std': std}
  if baseline is not None:
    diff = seed_statistics.paired_difference(values, baseline)
    row.update(diff_n=diff['n'], diff_mean=diff['mean'], diff_std=diff['std'],
               p_value=diff['p_value'])
  return row


def summary_rows(results: Results, exp: ml_collections.ConfigDict,
                 metrics: Sequence[str]) -> list[dict[str, Any]]:
  """One row per setting x variant x metric (the summary.csv layout).

  mean/std over seeds; for variants other than the baseline, diff_* is the
  paired difference variant minus baseline over seeds and p_value its paired t-test.
  """
  rows = []
  for setting in exp.settings:
    for variant, _ in exp.variants:
      for metric in metrics:
        baseline = None
        if exp.baseline is not None and variant != exp.baseline:
          baseline = _values(results, setting, exp.baseline, metric)
        rows.append({'setting': setting, 'variant': variant, 'metric': metric,
                     **summary_row(_values(results, setting, variant, metric), baseline)})
  return rows


def summary_csv(rows: Sequence[dict[str, Any]]) -> str:
  """summary.csv's text: CSV_COLUMNS, nan and absent values as empty cells."""
  def cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
      return ''
    return f'{value:.6g}' if isinstance(value, float) else value

  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(CSV_COLUMNS)
  for row in rows:
    writer.writerow([cell(row.get(column)) for column in CSV_COLUMNS])
  return text.getvalue()


# Column labels of results.json's test sections (the longest prefix applies).
_LABEL_PREFIXES = {'test.': '', 'test_by_group.': '', 'test_within_group.': 'within.',
                   'test_uncalibrated.': 'uncalibrated.',
                   'test_by_group_uncalibrated.': 'uncalibrated.',
                   'test_within_group_uncalibrated.': 'uncalibrated.within.'}
# The per-group views of the 'groups' study: (results.json key, figure name, what it ranks).
GROUP_VIEWS = (('test_by_group', 'groups', 'one shared ranking of all new items'),
               ('test_within_group', 'groups_within',
                "each group's users rank only that group's items"))


def metric_label(metric: str) -> str:
  """'test.ndcg@20' -> 'ndcg@20', 'test_by_group.full.ndcg@20' -> 'full.ndcg@20',
  'test_within_group.full.ndcg@20' -> 'within.full.ndcg@20'."""
  prefix = max((p for p in _LABEL_PREFIXES if metric.startswith(p)), key=len, default='')
  return _LABEL_PREFIXES.get(prefix, '') + metric[len(prefix):]


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
  return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
          + ['| ' + ' | '.join(cells) + ' |' for cells in body])


def setting_tables(rows: Sequence[dict[str, Any]], exp: ml_collections.ConfigDict,
                   metrics: Sequence[str], setting: str) -> list[str]:
  """Markdown for one setting: mean +- std (best mean per column in bold), then paired diffs."""
  index = {(r['variant'], r['metric']): r for r in rows if r['setting'] == setting}
  variants = [name for name, _ in exp.variants]
  best = {}
  for metric in metrics:
    means = [index[v, metric]['mean'] for v in variants if not math.isnan(index[v, metric]['mean'])]
    best[metric] = max(means) if means else None
  body = []
  for variant in variants:
    cells = []
    for metric in metrics:
      row = index[variant, metric]
      text = seed_statistics.format_mean_std(row['mean'], row['std'])
      cells.append(f'**{text}**' if row['mean'] == best[metric] else text)
    body.append([variant, str(max(index[variant, m]['n'] for m in metrics))] + cells)
  lines = [f'## {setting.upper()}', '']
  lines += _markdown_table(['variant', 'n'] + [metric_label(m) for m in metrics], body)
  if exp.baseline is not None and len(variants) > 1:
    paired = [[v] + [seed_statistics.format_difference({'n': index[v, m]['diff_n'],
                                         'mean': index[v, m]['diff_mean'],
                                         'std': index[v, m]['diff_std'],
                                         'p_value': index[v, m]['p_value']})
                     for m in metrics]
              for v in variants if v != exp.baseline]
    lines += ['', f'Paired difference to {exp.baseline} (same seed, same split): '
              'mean +- std over seeds, two-sided paired t-test p.', '']
    lines += _markdown_table(['variant'] + [metric_label(m) for m in metrics], paired)
  return lines + ['']


def setting_changes(results: Results, exp: ml_collections.ConfigDict) -> dict[str, dict]:
  """{variant: {setting: paired diff of plot_metric, setting minus the first setting}}."""
  first = exp.settings[0]
  return {variant: {setting: seed_statistics.paired_difference(
      _values(results, setting, variant, exp.plot_metric),
      _values(results, first, variant, exp.plot_metric)) for setting in exp.settings[1:]}
          for variant, _ in exp.variants}


def group_metrics(metrics: Sequence[str], plot_metric: str,
                  view: str = 'test_by_group') -> dict[str, str]:
  """{group label: metric key}: 'all' for the plot metric, then its per-group keys of
  `view` (a GROUP_VIEWS key)."""
  suffix = plot_metric.split('.')[-1]
  groups = {'all': plot_metric}
  for metric in metrics:
    parts = metric.split('.')
    if parts[0] == view and parts[-1] == suffix:
      groups[parts[1]] = metric
  return groups


def relative_gains(rows: Sequence[dict[str, Any]], exp: ml_collections.ConfigDict,
                   groups: Mapping[str, str], setting: str | None = None
                   ) -> dict[str, dict[str, float]]:
  """{variant: {group: 100 * (mean - baseline mean) / baseline mean}} in `setting`
  (default the first)."""
  setting = setting or exp.settings[0]
  index = {(r['variant'], r['metric']): r['mean'] for r in rows if r['setting'] == setting}
  gains = {}
  for variant, _ in exp.variants:
    if variant == exp.baseline:
      continue
    gains[variant] = {}
    for group, metric in groups.items():
      base = index.get((exp.baseline, metric), math.nan)
      gains[variant][group] = (100 * (index[variant, metric] - base) / base
                               if base and not math.isnan(base) else math.nan)
  return gains


def sweeps(exp: ml_collections.ConfigDict) -> dict[str, list[tuple[float, str]]]:
  """{config key: [(value, variant)] sorted}: variants that set one numeric key."""
  found = {}
  for variant, overrides in exp.variants:
    if variant == exp.baseline or len(overrides) != 1:
      continue
    (key, value), = overrides.items()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      found.setdefault(key, []).append((float(value), variant))
  return {key: sorted(points) for key, points in found.items()}


def extra_sections(results: Results, rows: Sequence[dict[str, Any]],
                   exp: ml_collections.ConfigDict, metrics: Sequence[str]) -> list[str]:
  """Markdown for the 'drop' and 'groups' studies, when the experiment asks for them."""
  lines = []
  label = metric_label(exp.plot_metric)
  if 'drop' in exp.plots and len(exp.settings) > 1:
    changes = setting_changes(results, exp)
    lines += [f'## Change of {label} from {exp.settings[0].upper()}', '',
              'Per variant, the other setting minus the first, paired by seed: '
              'mean +- std, paired t-test p.', '']
    lines += _markdown_table(
        ['variant'] + [f'{s.upper()} - {exp.settings[0].upper()}' for s in exp.settings[1:]],
        [[v] + [seed_statistics.format_difference(d) for d in by_setting.values()]
         for v, by_setting in changes.items()])
    lines.append('')
  if 'groups' in exp.plots and exp.baseline is not None:
    for view, _, ranking in GROUP_VIEWS:
      groups = group_metrics(metrics, exp.plot_metric, view)
      if view != GROUP_VIEWS[0][0] and len(groups) == 1:
        continue  # No within-group metric asked for.
      title = '' if view == GROUP_VIEWS[0][0] else ', within-group ranking'
      for setting in group_settings(rows, exp, groups):
        gains = relative_gains(rows, exp, groups, setting)
        lines += [f'## Relative gain over {exp.baseline} per group{title} ({label}, '
                  f'{setting.upper()})', '',
                  f'100 * (variant - {exp.baseline}) / {exp.baseline}, on the means over '
                  'seeds; "all" is every test item, the others the held-out items of one '
                  f'group, in {ranking}.', '']
        lines += _markdown_table(['variant'] + list(groups),
                                 [[v] + ['n/a' if math.isnan(g) else f'{g:+.1f}%'
                                         for g in by_group.values()]
                                  for v, by_group in gains.items()])
        lines.append('')
  return lines


def group_settings(rows: Sequence[dict[str, Any]], exp: ml_collections.ConfigDict,
                   groups: Mapping[str, str]) -> list[str]:
  """The settings whose new items fall into two groups or more (FTFT's are all complete);
  the first setting when none does."""
  present = {(r['setting'], r['metric']) for r in rows if r['n'] > 0}
  found = [s for s in exp.settings
           if sum((s, m) in present for g, m in groups.items() if g != 'all') >= 2]
  return found or [exp.settings[0]]


def dataset_description(config: ml_collections.ConfigDict) -> str:
  """The data of the summary's title: its folder and modalities, or the synthetic shape."""
  data = config.data
  if data.format == 'synthetic':
    syn = data.synthetic
    return (f'synthetic data ({syn.num_users} users, {syn.num_items} items, '
            f'{len(syn.feature_dims)} modalities {tuple(syn.feature_dims)})')
  return f'{os.path.basename(os.path.normpath(data.path))} ({", ".join(data.modalities)})'


def summary_markdown(config: ml_collections.ConfigDict, results: Results,
                     rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
  """summary.md: per setting the tables of setting_tables, then the extra_sections."""
  exp = config.experiment
  lines = [f'# {exp.name}: {dataset_description(config)}', '',
           f'Mean +- sample std over seeds 0-{exp.num_seeds - 1} (n = finished runs; '
           'the std is n/a for one run); '
           'the best mean of each column is in bold. Metrics at the best validation epoch, '
           'on the split each column names (test unless it says val).', '']
  for setting in exp.settings:
    lines += setting_tables(rows, exp, metrics, setting)
  lines += extra_sections(results, rows, exp, metrics)
  return '\n'.join(lines)


def summary_table(folders: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS,
                  baseline: str | None = None) -> str:
  """Markdown table: one row per folder, mean +- std (ddof 1) over its runs, with `baseline`
  also the paired difference to its run of the same name; each cell is a summary_row."""
  base = collect(baseline) if baseline else None
  header = list(metrics) + ([f'{m} - baseline (paired)' for m in metrics] if base else [])
  lines = ['| runs | n | ' + ' | '.join(header) + ' |', '|---|---|' + '---|' * len(header)]
  for folder in folders:
    results = collect(folder)
    rows = [summary_row({name: metric(r, key) for name, r in results.items()},
                        {name: metric(r, key) for name, r in base.items()} if base else None)
            for key in metrics]
    cells = [seed_statistics.format_mean_std(row['mean'], row['std']) for row in rows]
    if base:
      cells += [seed_statistics.format_mean_std(row['diff_mean'], row['diff_std']) for row in rows]
    lines.append(f'| {folder} | {len(results)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> int:
  """The command line: prints the table; a mistake is one `error:` line (exit 2 for a bad
  argument, 1 for a folder without finished runs)."""
  metrics, baseline, folders = DEFAULT_METRICS, None, []
  for arg in argv:
    if arg in ('-h', '--help'):
      print(USAGE.strip())
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
