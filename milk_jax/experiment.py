"""Experiments: plan and run a grid of training runs (settings x variants x seeds).

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
  plots       figures: bars, drop, groups, sweep (see `report_figures.figures`).
  plot_metric the metric the figures show.

`run_experiment(config, workdir)` checks the whole grid first (unknown keys,
bad values, a folder holding a run of another config), then trains each run
in <runs_dir or workdir>/<setting>/<variant>/seed_<n>/ through `run.train_and_evaluate`:
a run whose results.json was written with the grid's config is skipped, a
half-finished one resumes from its checkpoints, and a finished one saved with
another num_epochs is continued (or refused when that cannot be exact). It
then writes the summary that milk_jax/report.py makes of the results
(summary.csv, summary.md) and the figures it chooses, drawn by milk_jax/plots.py.
"""

import copy
import dataclasses
import logging
import os
import re
import time
from typing import Any, Mapping, Sequence

import ml_collections

from milk_jax import config as config_lib
from milk_jax import methods
from milk_jax import interrupt
from milk_jax import plots
from milk_jax import report
from milk_jax import report_figures
from milk_jax import run as run_lib
from milk_jax import runfolder
from milk_jax.data import dataset as dataset_lib
from milk_jax.errors import ConfigError
from milk_jax.errors import Interrupted
from milk_jax.training import backbone
from milk_jax.training import loop as loop_lib

log = logging.getLogger('milk_jax.experiment')

# The grid itself sets these; a variant changing them would mislabel its folder.
GRID_KEYS = ('seed', 'data.setting')
BACKBONE_FOLDER = '_backbone'  # <runs_dir>/<setting>/_backbone/seed_<n>: the shared BPR-MF runs.
_SAFE_NAME = re.compile(r'^[A-Za-z0-9_.=+-]+$')


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
  unknown = [p for p in exp.plots if p not in report.PLOTS]
  require(not unknown, f'unknown plots {unknown}; expected some of {report.PLOTS}')


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
  that cannot match a run of the grid's length) by `run.train_and_evaluate`.
  """
  result = _read_results(run.workdir)
  if result is None:
    return None
  saved = runfolder.saved_config(run.workdir)
  if saved is None or saved['train']['num_epochs'] != run.config.train.num_epochs:
    return None
  return result


def execute(runs: Sequence[Run], plot_metric: str,
            train_missing: bool = True) -> report.Results:
  """Train every run whose results are missing or stale; logs one progress line per run.

  With `train_missing` False, such runs are left out of the results instead. After
  each run trained, the line gives the time left: the runs still to train (as
  found at the start) times the mean training time of this grid's runs so far.
  """
  results: report.Results = {}
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
      result = run_lib.train_and_evaluate(run.config, run.workdir)
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
    metrics = report.expand_metrics(exp.metrics, results)
    rows = report.summary_rows(results, exp, metrics)
    runfolder.write_text(os.path.join(workdir, 'summary.csv'), report.summary_csv(rows))
    runfolder.write_text(os.path.join(workdir, 'summary.md'),
                         report.summary_markdown(config, results, rows, metrics))
    for path in plots.draw_figures(workdir, report_figures.figures(results, rows, exp, metrics)):
      log.info('wrote %s', path)
  log.info('wrote %s and %s', os.path.join(workdir, 'summary.csv'),
           os.path.join(workdir, 'summary.md'))
  return rows
