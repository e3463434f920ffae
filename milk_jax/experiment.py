"""Experiments: a grid of training runs (settings x variants x seeds) and its summary.

An experiment config is a dataset config (configs/ml100k.py, ...) with an
`experiment` field added by configs/experiments/base.py:

  settings    missing-modality settings (data.setting) of the grid.
  variants    (name, {dotted config key: value}) pairs, e.g.
              ('ERM', {'model.use_alignment': False, 'model.use_invariance': False}).
  num_seeds   seeds 0 .. num_seeds - 1; each seed has its own split, masks and init.
  runs_dir    folder of the run folders (None: the experiment's workdir); experiments
              that share it train a run they have in common once.
  baseline    the variant every other one is compared with, paired by seed.
  only        names of the variants to run and summarise (empty: all of them); the
              baseline is always kept, e.g. --config.experiment.only="('MILK_cal',)".
  metrics     results.json keys; '*' stands for every group, 'test_by_group.*.ndcg@20'
              (one shared ranking) or 'test_within_group.*.ndcg@20' (each group ranks
              its own items); a calibrated run also has test*_uncalibrated.
  plots       figures: bars, drop, groups, sweep (see `write_plots`).
  plot_metric the metric the figures show.

`run_experiment(config, workdir)` checks the whole grid first (unknown keys,
bad values, a folder holding a run of another config), then trains each run
in <runs_dir or workdir>/<setting>/<variant>/seed_<n>/ through `train.train_and_evaluate`:
a run whose results.json was written with the grid's config is skipped, a
half-finished one resumes from its checkpoints, and a finished one saved with
another num_epochs is continued (or refused when that cannot be exact). It
then writes summary.csv, summary.md and the PNG figures.
"""

import copy
import csv
import dataclasses
import io
import logging
import math
import os
import re
import time
from typing import Any, Mapping, Sequence

import ml_collections

from milk_jax import backbone
from milk_jax import config as config_lib
from milk_jax import methods
from milk_jax import interrupt
from milk_jax import loop as loop_lib
from milk_jax import plots
from milk_jax import report
from milk_jax import runfolder
from milk_jax import train
from milk_jax.data import dataset as dataset_lib
from milk_jax.errors import ConfigError
from milk_jax.errors import Interrupted

log = logging.getLogger('milk_jax.experiment')

PLOTS = ('bars', 'drop', 'groups', 'sweep')
CSV_COLUMNS = ('setting', 'variant', 'metric', 'n', 'mean', 'std',
               'diff_n', 'diff_mean', 'diff_std', 'p_value')
# The grid itself sets these; a variant changing them would mislabel its folder.
GRID_KEYS = ('seed', 'data.setting')
BACKBONE_FOLDER = '_backbone'  # <runs_dir>/<setting>/_backbone/seed_<n>: the shared BPR-MF runs.
_SAFE_NAME = re.compile(r'^[A-Za-z0-9_.=+-]+$')

Results = dict[tuple[str, str], dict[int, dict[str, Any]]]  # (setting, variant) -> seed -> results.


@dataclasses.dataclass(frozen=True)
class Run:
  setting: str
  variant: str
  seed: int
  config: ml_collections.ConfigDict  # A plain training config, no `experiment` field.
  workdir: str


def with_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                   where: str) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted keys set; ConfigError names an unknown key or bad value."""
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(f'{where}: unknown config key {key!r}')
    try:
      node[leaf] = value
    except (TypeError, ValueError) as error:
      raise ConfigError(f'{where}: {key}={value!r}: {error}') from error
  return config


def with_method_variants(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy whose variants end with one per name in experiment.methods, e.g. 'heater' ->
  ('Heater', {'method': 'heater'}): the method with the dataset config's hyper-parameters.

  A name also in experiment.own_cadence adds a second variant right after it,
  '<Display>_own_cadence': the same method validated as its original code does
  (its INFO.original_cadence, train overrides), the shared protocol left alone.
  """
  names = tuple(config.experiment.get('methods', ())) if 'experiment' in config else ()
  if not names:
    return config
  own_cadence = tuple(config.experiment.get('own_cadence', ()))
  config = copy.deepcopy(config)
  added = []
  for name in names:
    display = methods.info(name).display_name
    added.append((display, {'method': name}))
    if name in own_cadence:
      cadence = methods.info(name).original_cadence
      if not cadence:
        raise ConfigError(f'config.experiment.own_cadence: {name!r} declares no original '
                          f'cadence (INFO.original_cadence in milk_jax/methods/{name}.py)')
      added.append((f'{display}_own_cadence', {'method': name, **cadence}))
  with config.unlocked():
    config.experiment.variants = tuple(config.experiment.variants) + tuple(added)
    config.experiment.methods = ()
    config.experiment.own_cadence = ()
  return config


def only_variants(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy whose variants are those of experiment.only and the baseline (all when empty)."""
  only = tuple(config.experiment.get('only', ()) or ()) if 'experiment' in config else ()
  if not only:
    return config
  names = [name for name, _ in config.experiment.variants]
  unknown = [name for name in only if name not in names]
  if unknown:
    raise ConfigError(f'config.experiment.only: unknown variants {unknown}; the grid has '
                      f'{names}')
  keep = set(only) | {config.experiment.get('baseline')}
  config = copy.deepcopy(config)
  with config.unlocked():
    config.experiment.variants = tuple(v for v in config.experiment.variants if v[0] in keep)
  return config


def check_experiment(exp: ml_collections.ConfigDict) -> None:
  """ConfigError on a malformed grid, before anything runs."""
  def require(ok: bool, message: str):
    if not ok:
      raise ConfigError(f'config.experiment: {message}')

  names = [name for name, _ in exp.variants]
  require(len(names) > 0, 'needs at least one variant')
  require(len(set(names)) == len(names), f'variant names repeat: {names}')
  for name, overrides in exp.variants:
    require(bool(_SAFE_NAME.match(name)),
            f'variant name {name!r} must be letters, digits and _ . = + - (it names a folder)')
    for key in overrides:
      require(key not in GRID_KEYS, f'variant {name!r} sets {key!r}, which the grid chooses')
  require(len(exp.settings) > 0, 'needs at least one setting')
  require(len(set(exp.settings)) == len(exp.settings), f'settings repeat: {exp.settings}')
  require(exp.num_seeds >= 1, f'num_seeds={exp.num_seeds} must be at least 1')
  require(exp.baseline is None or exp.baseline in names,
          f'baseline {exp.baseline!r} is not one of the variants {names}')
  unknown = [p for p in exp.plots if p not in PLOTS]
  require(not unknown, f'unknown plots {unknown}; expected some of {PLOTS}')


def runs_dir(exp: ml_collections.ConfigDict, workdir: str) -> str:
  """Where the run folders go: exp.runs_dir, else the experiment's workdir."""
  return exp.get('runs_dir') or workdir  # get: grids built without base.experiment_config.


def plan_runs(config: ml_collections.ConfigDict, workdir: str) -> list[Run]:
  """Every run of the grid, each config checked; raises before any training."""
  if 'experiment' not in config:
    raise ConfigError('the config has no `experiment` field: pass an experiment config, '
                            'configs/experiments/NAME.py')
  exp = config.experiment
  check_experiment(exp)
  root = runs_dir(exp, workdir)
  base = copy.deepcopy(config)
  with base.unlocked():
    del base['experiment']
  runs = []
  for setting in exp.settings:
    for variant, overrides in exp.variants:
      variant_config = with_overrides(base, overrides, f'variant {variant!r}')
      for seed in range(exp.num_seeds):
        run_config = with_overrides(variant_config, {'data.setting': setting, 'seed': seed},
                                    f'setting {setting!r}')
        try:
          config_lib.check_config(run_config)
          dataset_lib.check_config(run_config)
        except (ConfigError, dataset_lib.DataError) as error:
          raise ConfigError(f'{setting}/{variant}: {error}') from error
        if methods.backbone_of(run_config) is not None and not run_config.backbone.run_dir:
          # One warm backbone per setting and seed, shared by every variant that reads it.
          run_config = with_overrides(run_config, {'backbone.run_dir': os.path.join(
              root, setting, BACKBONE_FOLDER, f'seed_{seed}')}, f'variant {variant!r}')
        runs.append(Run(setting, variant, seed, run_config,
                        os.path.join(root, setting, variant, f'seed_{seed}')))
  return runs


def check_existing(runs: Sequence[Run]) -> None:
  """ConfigError when a run folder holds a run of another config (a changed experiment)."""
  for run in runs:
    runfolder.check_same_run(run.workdir, runfolder.saved_config(run.workdir), run.config)
    backbone.check_backbone_folder(run.config, run.workdir)


def _read_results(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, 'results.json')
  return runfolder.read_json(path, "the run's results") if os.path.exists(path) else None


def finished_results(run: Run) -> dict[str, Any] | None:
  """The run's results when they describe the grid's config; None when it must (re)train.

  A finished run saved with another num_epochs is continued (or refused, when
  that cannot match a run of the grid's length) by `train.train_and_evaluate`.
  """
  result = _read_results(run.workdir)
  if result is None:
    return None
  saved = runfolder.saved_config(run.workdir)
  if saved is None or saved['train']['num_epochs'] != run.config.train.num_epochs:
    return None
  return result


def execute(runs: Sequence[Run], plot_metric: str, train_missing: bool = True) -> Results:
  """Train every run whose results are missing or stale; logs one progress line per run.

  With `train_missing` False, such runs are left out of the results instead. After
  each run trained, the line gives the time left: the runs still to train (as
  found at the start) times the mean training time of this grid's runs so far.
  """
  results: Results = {}
  # For the eta only: each run is checked again just before it, as an experiment sharing
  # runs_dir may have finished it meanwhile.
  to_train = [train_missing and finished_results(run) is None for run in runs]
  run_seconds = []
  for i, run in enumerate(runs, 1):
    name = f'[{i}/{len(runs)}] {run.setting}/{run.variant}/seed_{run.seed}'
    result = finished_results(run)
    if result is not None:
      status = 'finished earlier'
    elif not train_missing:
      log.info('%s: not finished, left out (experiment.train_missing=False)', name)
      continue
    else:
      if interrupt.requested():
        raise Interrupted(f'interrupted before run {name}; run the same command to resume')
      log.info('%s: training in %s', name, run.workdir)
      tic = time.perf_counter()
      result = train.train_and_evaluate(run.config, run.workdir)
      run_seconds.append(time.perf_counter() - tic)
      status = f'trained in {run_seconds[-1]:.1f}s'
    value = report.metric(result, plot_metric)
    left = sum(to_train[i:])
    eta = ''
    if run_seconds and left:
      eta = (f'; eta {loop_lib.format_duration(left * sum(run_seconds) / len(run_seconds))} '
             f'for {left} more run{"s" if left > 1 else ""}')
    log.info('%s: %s, best epoch %d, %s %s%s', name, status, result['best_epoch'], plot_metric,
             'n/a' if value is None else f'{value:.4f}', eta)
    results.setdefault((run.setting, run.variant), {})[run.seed] = result
  return results


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


def _values(results: Results, setting: str, variant: str, metric: str) -> dict[int, float | None]:
  return {seed: report.metric(r, metric)
          for seed, r in results.get((setting, variant), {}).items()}


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
        values = _values(results, setting, variant, metric)
        present = [v for v in values.values() if v is not None]
        mean, std = report.mean_std(present)
        row = {'setting': setting, 'variant': variant, 'metric': metric, 'n': len(present),
               'mean': mean, 'std': std}
        if exp.baseline is not None and variant != exp.baseline:
          diff = report.paired_difference(values, _values(results, setting, exp.baseline, metric))
          row.update(diff_n=diff['n'], diff_mean=diff['mean'], diff_std=diff['std'],
                     p_value=diff['p_value'])
        rows.append(row)
  return rows


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
  """summary.csv (written atomically): CSV_COLUMNS, nan and absent values as empty cells."""
  def cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
      return ''
    return f'{value:.6g}' if isinstance(value, float) else value

  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(CSV_COLUMNS)
  for row in rows:
    writer.writerow([cell(row.get(column)) for column in CSV_COLUMNS])
  runfolder.write_text(path, text.getvalue())


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
      text = report.format_mean_std(row['mean'], row['std'])
      cells.append(f'**{text}**' if row['mean'] == best[metric] else text)
    body.append([variant, str(max(index[variant, m]['n'] for m in metrics))] + cells)
  lines = [f'## {setting.upper()}', '']
  lines += _markdown_table(['variant', 'n'] + [metric_label(m) for m in metrics], body)
  if exp.baseline is not None and len(variants) > 1:
    paired = [[v] + [report.format_difference({'n': index[v, m]['diff_n'],
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
  return {variant: {setting: report.paired_difference(
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
        [[v] + [report.format_difference(d) for d in by_setting.values()]
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


def group_keys(rows: Sequence[dict[str, Any]], exp: ml_collections.ConfigDict,
               groups: Mapping[str, str]) -> list[tuple[str, str, str]]:
  """(x label, setting, metric) of every group of group_settings; the label names the
  setting when the grid has several."""
  return [(f'{setting.upper()} {group}' if len(exp.settings) > 1 else group, setting, metric)
          for setting in group_settings(rows, exp, groups) for group, metric in groups.items()]


def paired_series(rows: Sequence[dict[str, Any]], exp: ml_collections.ConfigDict,
                  keys: Sequence[tuple[str, str]]) -> dict[str, plots.Series]:
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
                       [report.confidence_half_width(r['diff_std'], r['diff_n']) for r in picked])
  return series


def dataset_description(config: ml_collections.ConfigDict) -> str:
  data = config.data
  if data.format == 'synthetic':
    syn = data.synthetic
    return (f'synthetic data ({syn.num_users} users, {syn.num_items} items, '
            f'{len(syn.feature_dims)} modalities {tuple(syn.feature_dims)})')
  return f'{os.path.basename(os.path.normpath(data.path))} ({", ".join(data.modalities)})'


def summary_markdown(config: ml_collections.ConfigDict, results: Results,
                     rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
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


def _series(rows: Sequence[dict[str, Any]], variant: str, keys: Sequence[tuple[str, str]]):
  index = {(r['setting'], r['variant'], r['metric']): r for r in rows}
  picked = [index[setting, variant, metric] for setting, metric in keys]
  return [r['mean'] for r in picked], [r['std'] for r in picked]


def write_plots(workdir: str, results: Results, rows: Sequence[dict[str, Any]],
                exp: ml_collections.ConfigDict, metrics: Sequence[str]) -> list[str]:
  """The figures exp.plots asks for; returns their paths.

  bars: plot_metric per setting, one bar per variant (Table 2, Figure 4); with a
    baseline also bars_paired: each variant minus the baseline, paired by seed, with
    its 95% confidence interval (the comparison the unpaired spreads of bars hide).
  drop: change of plot_metric from the first setting to each other one (Figure 5).
  groups: plot_metric per missing group of every setting that has groups, and the
    relative gain over the baseline (Figure 3), in one shared ranking (test_by_group);
    with test_within_group metrics also groups_within and group_gain_within, each
    group's users ranking only that group's items.
  sweep: plot_metric against each swept hyper-parameter (Figure 6).
  A figure that cannot be drawn from this grid is skipped with a warning that says why.
  """
  variants = [name for name, _ in exp.variants]
  label = metric_label(exp.plot_metric)
  paths = []
  # Figures without the baseline keep each variant's colour of the figures with it.
  others = [c for v, c in zip(variants, plots.series_colours(len(variants)))
            if v != exp.baseline]

  def path(name):
    paths.append(os.path.join(workdir, f'{name}.png'))
    return paths[-1]

  if 'bars' in exp.plots:
    keys = [(s, exp.plot_metric) for s in exp.settings]
    plots.bar_chart(path('bars'), [s.upper() for s in exp.settings],
                    {v: _series(rows, v, keys) for v in variants}, label,
                    f'{exp.name}: test {label}, mean +- std over seeds')
    if exp.baseline is not None and len(variants) > 1:
      plots.bar_chart(path('bars_paired'), [s.upper() for s in exp.settings],
                      paired_series(rows, exp, keys), f'{label} - {exp.baseline}',
                      f'{exp.name}: test {label} minus {exp.baseline}, paired by seed '
                      '(mean, 95% CI)', others)
  if 'drop' in exp.plots and len(exp.settings) == 1:
    log.warning('drop.png skipped: it shows the change from the first setting to the others, '
                'and config.experiment.settings has one (%s)', exp.settings[0])
  if 'drop' in exp.plots and len(exp.settings) > 1:
    changes = setting_changes(results, exp)
    plots.bar_chart(
        path('drop'), [f'{s.upper()} - {exp.settings[0].upper()}' for s in exp.settings[1:]],
        {v: ([d['mean'] for d in c.values()], [d['std'] for d in c.values()])
         for v, c in changes.items()},
        f'change of {label}', f'{exp.name}: paired change between settings')
  if 'groups' in exp.plots:
    for view, name, _ in GROUP_VIEWS:
      groups = group_metrics(metrics, exp.plot_metric, view)
      within = view != GROUP_VIEWS[0][0]
      if within and len(groups) == 1:
        continue  # No within-group metric asked for: no second figure.
      if len(groups) == 1:
        log.warning("groups.png shows 'all' only: config.experiment.metrics has no "
                    "'test_by_group.*.%s'", exp.plot_metric.split('.')[-1])
      labelled = group_keys(rows, exp, groups)
      labels = [x for x, _, _ in labelled]
      keys = [(setting, metric) for _, setting, metric in labelled]
      how = ', each group ranking its own items' if within else ''
      plots.bar_chart(path(name), labels, {v: _series(rows, v, keys) for v in variants},
                      label, f'{exp.name}: test {label} per missing group{how}')
      if exp.baseline is not None and len(variants) > 1:
        gains = {v: [] for v in variants if v != exp.baseline}
        for setting in group_settings(rows, exp, groups):
          for variant, by_group in relative_gains(rows, exp, groups, setting).items():
            gains[variant] += list(by_group.values())
        plots.bar_chart(path('group_gain' + name.removeprefix('groups')), labels,
                        {v: (g, None) for v, g in gains.items()},
                        f'gain over {exp.baseline} (%)',
                        f'{exp.name}: relative gain per group{how}', others)
  if 'sweep' in exp.plots:
    swept = sweeps(exp)
    if not swept:
      log.warning('sweep.png skipped: no variant but the baseline sets exactly one numeric '
                  'config key')
    if swept:
      panels = {}
      for key, points in swept.items():
        keys = [(exp.settings[0], exp.plot_metric)]
        columns = [_series(rows, variant, keys) for _, variant in points]
        panels[key] = ([x for x, _ in points],
                       ([c[0][0] for c in columns], [c[1][0] for c in columns]))
      reference = None
      if exp.baseline is not None:
        reference = (exp.baseline, _series(rows, exp.baseline,
                                           [(exp.settings[0], exp.plot_metric)])[0][0])
      plots.line_panels(path('sweep'), panels, label,
                        f'{exp.name}: test {label} ({exp.settings[0].upper()})', reference)
  return paths


def run_experiment(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Run (or resume) the grid of config.experiment in `workdir` and summarise it.

  Returns:
    The summary rows (the content of summary.csv).
  """
  config = only_variants(with_method_variants(config))
  runs = plan_runs(config, workdir)
  check_existing(runs)
  exp = config.experiment
  with runfolder.lock(workdir):  # Each run's folder is locked by its training, too.
    runfolder.write_text(os.path.join(workdir, 'experiment.json'), config.to_json(indent=2))
    log.info('experiment %s: %d runs (%d settings x %d variants x %d seeds) in %s', exp.name,
             len(runs), len(exp.settings), len(exp.variants), exp.num_seeds,
             runs_dir(exp, workdir))
    results = execute(runs, exp.plot_metric, exp.get('train_missing', True))
    metrics = expand_metrics(exp.metrics, results)
    rows = summary_rows(results, exp, metrics)
    write_csv(os.path.join(workdir, 'summary.csv'), rows)
    runfolder.write_text(os.path.join(workdir, 'summary.md'),
                         summary_markdown(config, results, rows, metrics))
    for path in write_plots(workdir, results, rows, exp, metrics):
      log.info('wrote %s', path)
  log.info('wrote %s and %s', os.path.join(workdir, 'summary.csv'),
           os.path.join(workdir, 'summary.md'))
  return rows
