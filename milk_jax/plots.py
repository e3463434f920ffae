"""Figures of an experiment summary and of one run, drawn headless (matplotlib's Agg backend).

Two shapes cover the paper's figures: grouped bars (variants side by side
within each group: a setting, a missing-modality group, a change between
settings) and line panels (one panel per swept hyper-parameter); which
figures an experiment gets, and their data, is milk_jax/report.py's choice
(`report_figures.figures`), drawn here by `draw_figures`; the
benchmark's sweep is two log-log panels of step time (`plot_sweep`), and
scripts/scale_benchmark.py's grid six of time and memory (`plot_scale`). A run's
training curves (loss and validation metrics per epoch) are drawn from its
metrics.jsonl at the end of training, or again by

  .venv/bin/python -m milk_jax.plots RUN_DIR [RUN_DIR ...]   # writes RUN_DIR/curves.png
"""

import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from milk_jax import runfolder
from milk_jax.errors import UserError

Series = tuple[Sequence[float], Sequence[float] | None]  # Means and error bars (or None).


def pyplot():
  """matplotlib's pyplot on the headless Agg backend, imported on first use.

  Training runs never draw, so `import milk_jax.experiment` (which every
  command line run does) does not pay for matplotlib.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # No display on servers and CI; must precede pyplot.
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def series_colours(n: int) -> list:
  """n distinct colours: tab10's for up to 10 series, else tab20's (up to 20).

  matplotlib's default cycle is tab10's, so a chart of 13 variants (Table 2)
  would give three pairs of bars one colour.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps['tab10' if n <= 10 else 'tab20']  # No pyplot: see training_curves.
  return [cmap(i % cmap.N) for i in range(n)]


def error_bars(errors: Sequence[float] | None) -> list[float] | None:
  """Error half-widths to draw: None when there are none or none is finite.

  A spread of one seed is nan (unknown): it gets no error bar, not one of height 0.
  """
  if errors is None:
    return None
  errors = [float(e) if e is not None else math.nan for e in errors]
  return errors if any(math.isfinite(e) for e in errors) else None


def bar_chart(path: str, groups: Sequence[str], series: Mapping[str, Series],
              ylabel: str, title: str, skip_colour: int | None = None) -> None:
  """Grouped bars: for each group, one bar per series, with error bars if given.

  Args:
    groups: G labels along the x axis.
    series: {legend label: (G means, G error half-widths or None)}; nan = no bar
      (or no error bar).
    skip_colour: a place of the palette (series_colours of one more series) left
      out, e.g. the baseline's in a figure of the other variants, so that each
      variant keeps its colour of the figures with the baseline.
  """
  colours = None
  if skip_colour is not None:
    colours = series_colours(len(series) + 1)
    del colours[skip_colour]
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 0.5 * len(groups) * len(series)), 3.2))
  draw_bars(ax, groups, series, colours)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  # Beside the axes: inside, the legend can hide bars and their error bars.
  ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=90, bbox_inches='tight')
  plt.close(fig)


def draw_bars(ax, groups: Sequence[str], series: Mapping[str, Series],
              colours: Sequence | None = None) -> None:
  """bar_chart's bars on `ax`: one BarContainer per series, error bars where finite."""
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(groups))
  colours = colours or series_colours(len(series))
  for i, (label, (means, errors)) in enumerate(series.items()):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, label=label,
           color=colours[i], yerr=error_bars(errors), capsize=2, error_kw={'elinewidth': 0.8})
  ax.set_xticks(x, groups)
  ax.axhline(0.0, color='black', linewidth=0.6)


def line_panels(path: str, panels: Mapping[str, tuple[Sequence[float], Series]],
                ylabel: str, title: str,
                reference: tuple[str, float] | None = None) -> None:
  """One panel per swept parameter: mean +- error against its value.

  Args:
    panels: {parameter: (x values, (means, error half-widths))}.
    reference: (label, value) drawn as a dashed line in every panel (the baseline).
  """
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
  for ax, (name, (xs, (means, errors))) in zip(axes[0], panels.items()):
    ax.errorbar(xs, means, yerr=error_bars(errors), marker='o', capsize=2)
    positive = [x for x in xs if x > 0]
    if positive and max(xs) / min(positive) >= 100:
      # Sweeps span decades and may include 0, which a plain log axis cannot show.
      ax.set_xscale('symlog', linthresh=min(positive))
    if reference is not None and not math.isnan(reference[1]):
      ax.axhline(reference[1], color='gray', linestyle='--', linewidth=1, label=reference[0])
      ax.legend(fontsize=7)
    ax.set_xlabel(name)
    ax.set_ylabel(ylabel)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def draw_figures(workdir: str, figures: Sequence[tuple[str, str, Mapping[str, Any]]]
                 ) -> list[str]:
  """Draw each (name, kind, arguments) of report_figures.figures as workdir/<name>.png.

  kind 'bars' is drawn by bar_chart, 'lines' by line_panels, with those arguments.

  Returns:
    The paths written, in order.
  """
  draw = {'bars': bar_chart, 'lines': line_panels}
  paths = []
  for name, kind, args in figures:
    paths.append(os.path.join(workdir, f'{name}.png'))
    draw[kind](paths[-1], **args)
  return paths


def curve_data(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]
               ) -> tuple[list[int], list[float], list[int], dict[str, list[float]]]:
  """(train epochs, their losses, evaluated epochs, {metric: validation values}) of a log.

  `records` are metrics.jsonl's: {'kind': 'train', 'epoch', 'loss', ...} and
  {'kind': 'eval', 'epoch', 'val': {metric: value}}; a metric an evaluation
  lacks is nan there.
  """
  train = [r for r in records if r.get('kind') == 'train']
  evals = [r for r in records if r.get('kind') == 'eval']
  return ([r.get('epoch') for r in train], [r.get('loss', math.nan) for r in train],
          [r.get('epoch') for r in evals],
          {m: [r.get('val', {}).get(m, math.nan) for r in evals] for m in metrics})


def training_curves(path: str, records: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                    best_epoch: int | None = None, title: str = '') -> None:
  """Two panels: the training loss per epoch, and the validation `metrics` per evaluation.

  A dotted line marks `best_epoch`. Drawn on a bare Figure (no pyplot), which is
  cheaper to import at the end of every training run; written atomically.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  train_epochs, losses, eval_epochs, values = curve_data(records, metrics)
  fig = Figure(figsize=(9.0 if eval_epochs else 4.5, 3.2), layout='constrained')
  # A warm backbone ranks nothing: its log has no evaluation, its figure no second panel.
  loss_ax, *val_axes = fig.subplots(1, 2 if eval_epochs else 1, squeeze=False)[0]
  loss_ax.plot(train_epochs, losses, linewidth=1)
  loss_ax.set_xlabel('epoch')
  loss_ax.set_ylabel('training loss')
  cutoffs = sorted({m.split('@')[-1] for m in values}, key=lambda k: (len(k), k))
  colours = series_colours(len(cutoffs))
  for val_ax in val_axes:
    for metric, ys in values.items():  # One colour per cut-off; NDCG dashed.
      val_ax.plot(eval_epochs, ys, marker='o', markersize=2, linewidth=1, label=metric,
                  color=colours[cutoffs.index(metric.split('@')[-1])],
                  linestyle='--' if metric.startswith('ndcg') else '-')
    val_ax.set_xlabel('epoch')
    val_ax.set_ylabel('validation')
    if values:
      val_ax.legend(fontsize=7, title=None if best_epoch is None else f'best epoch {best_epoch}',
                    title_fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0),
                    frameon=False)
  if best_epoch is not None:
    for ax in (loss_ax, *val_axes):
      ax.axvline(best_epoch, color='gray', linestyle=':', linewidth=1)
  fig.suptitle(title, fontsize=10)
  tmp = f'{path}.{os.getpid()}.tmp'
  try:
    fig.savefig(tmp, dpi=80, format='png')
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def run_curves(workdir: str) -> str:
  """Draw `workdir`/curves.png from its metrics.jsonl; returns the path.

  The validation panel shows the Recall@k and NDCG@k that the run evaluated.
  """
  log_path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(log_path):
    raise UserError(f'{workdir}: no metrics.jsonl (not a run folder, or it has not trained yet)')
  records = runfolder.read_log(log_path)
  if not all(isinstance(r, dict) for r in records):
    raise UserError(f'{log_path}: a line is not a JSON object; the training log is damaged')
  evals = [r.get('val') for r in records if r.get('kind') == 'eval']
  last = evals[-1] if evals and isinstance(evals[-1], dict) else {}
  metrics = [k for k in last if k.startswith(('recall@', 'ndcg@'))]
  results_path = os.path.join(workdir, 'results.json')
  best_epoch = None
  if os.path.isfile(results_path):
    results = runfolder.read_json(results_path, "the run's results")
    best_epoch = results.get('best_epoch') if isinstance(results, dict) else None
  saved = runfolder.saved_config(workdir) or {}
  path = os.path.join(workdir, 'curves.png')
  training_curves(path, records, metrics, best_epoch,
                  curves_title(workdir, str(saved.get('method', 'run'))))
  return path


def curves_title(workdir: str, method: str) -> str:
  return f'{method}: {os.path.basename(os.path.normpath(workdir))}'


def plot_sweep(rows: Sequence[Mapping[str, Any]], path: str, title: str) -> None:
  """The benchmark's sweep (sweep.csv's rows): step time against batch size and against
  catalogue size, one line per step timed ('fused', 'reference'), log-log."""
  plt = pyplot()
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top

  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, axis, label in ((axes[0], 'batch_size', 'batch size'),
                          (axes[1], 'num_items', 'items in the catalogue')):
    for step in sorted({r['step'] for r in rows if r['axis'] == axis}):
      points = sorted((r[axis], r['step_ms']) for r in rows
                      if r['axis'] == axis and r['step'] == step)
      ax.plot(*zip(*points), marker='o', label=step)
    sizes = sorted({r[axis] for r in rows if r['axis'] == axis})
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xticks(sizes, [str(v) for v in sizes], rotation=45)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(label)
    ax.set_ylabel('train step (ms, median)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
  figure.suptitle(title)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


SCALE_AXES = ('users', 'items', 'interactions')  # The columns, left to right.
SCALE_PHASES = ('data', 'compile', 'epoch', 'val', 'test', 'recommend')


def scale_lines(rows: Sequence[Mapping[str, Any]], slopes: Mapping[str, Mapping[str, float]],
                axis: str) -> dict[str, list[tuple[float, float]]]:
  """{'epoch (slope 1.02)': [(size, seconds), ...], ...}: each phase's points along `axis`
  (the rows whose 'axes' name it), sorted by size; phases no point measured are left out."""
  on_axis = sorted((r for r in rows if axis in str(r['axes']).split('+')), key=lambda r: r[axis])
  lines = {}
  for phase in SCALE_PHASES:
    points = [(r[axis], r[f'{phase}_seconds']) for r in on_axis
              if r.get(f'{phase}_seconds') is not None and r[f'{phase}_seconds'] > 0]
    if points:
      slope = slopes.get(axis, {}).get(phase)
      fitted = slope is not None and not math.isnan(slope)
      lines[f'{phase} (slope {slope:.2f})' if fitted else phase] = points
  return lines


def plot_scale(rows: Sequence[Mapping[str, Any]], slopes: Mapping[str, Mapping[str, float]],
               path: str, title: str) -> None:
  """scripts/scale_benchmark.py's grid, log-log: seconds of each phase (top row) and peak
  resident memory (bottom row) against users, items and interactions, one column per axis
  with the other two sizes at the base point's; each phase's fitted slope in its label.

  Args:
    rows: one per point with 'axes' ('users+items+interactions' for the base point), the
      three sizes, '<phase>_seconds' (absent when not measured) and 'peak_rss_mib'.
    slopes: {axis: {phase: slope}} (None or NaN: not fitted).
  """
  plt = pyplot()
  figure, axes = plt.subplots(2, len(SCALE_AXES), figsize=(5 * len(SCALE_AXES), 8),
                              squeeze=False)
  colours = series_colours(len(SCALE_PHASES))
  for column, axis in enumerate(SCALE_AXES):
    time_ax, memory_ax = axes[0][column], axes[1][column]
    for name, points in scale_lines(rows, slopes, axis).items():
      colour = colours[SCALE_PHASES.index(name.split(' ')[0])]  # A phase keeps its colour.
      time_ax.plot(*zip(*points), marker='o', color=colour, label=name)
    on_axis = sorted((r for r in rows if axis in str(r['axes']).split('+')), key=lambda r: r[axis])
    memory = [(r[axis], r['peak_rss_mib'] / 1024) for r in on_axis if r.get('peak_rss_mib')]
    if memory:
      memory_ax.plot(*zip(*memory), marker='o', color='black')
    for ax, ylabel in ((time_ax, 'seconds'), (memory_ax, 'peak resident memory (GiB)')):
      ax.set_xscale('log')
      ax.set_yscale('log')
      ax.set_xlabel(axis)
      ax.set_ylabel(ylabel)
      ax.grid(True, which='both', alpha=0.3)
    if time_ax.lines:
      time_ax.legend(fontsize=8)
  figure.suptitle(title)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


USAGE = 'usage: .venv/bin/python -m milk_jax.plots RUN_DIR [RUN_DIR ...]'


def main(argv: Sequence[str]) -> int:
  """Redraw each RUN_DIR's curves.png; one `error:` line and exit 1 (2 for usage) on a mistake."""
  if any(a in ('-h', '--help') for a in argv):
    print(f'{USAGE}\n\nDraws RUN_DIR/curves.png: the training loss and the validation '
          'metrics per epoch,\nfrom RUN_DIR/metrics.jsonl (also written at the end of training).')
    return 0
  if not argv or any(a.startswith('-') for a in argv):
    print(f'error: {USAGE}', file=sys.stderr)
    return 2
  for workdir in argv:
    try:
      print(run_curves(workdir))
    except (UserError, OSError) as error:
      print(f'error: {error}', file=sys.stderr)
      return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
