"""Figures of an experiment summary, drawn headless (matplotlib's Agg backend).

Two shapes cover the paper's figures: grouped bars (variants side by side
within each group: a setting, a missing-modality group, a change between
settings) and line panels (one panel per swept hyper-parameter).
"""

import math
from typing import Mapping, Sequence

import numpy as np

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
  cmap = pyplot().get_cmap('tab10' if n <= 10 else 'tab20')
  return [cmap(i % cmap.N) for i in range(n)]


def bar_chart(path: str, groups: Sequence[str], series: Mapping[str, Series],
              ylabel: str, title: str) -> None:
  """Grouped bars: for each group, one bar per series, with error bars if given.

  Args:
    groups: G labels along the x axis.
    series: {legend label: (G means, G error half-widths or None)}; nan = no bar.
  """
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 0.5 * len(groups) * len(series)), 3.2))
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(groups))
  colours = series_colours(len(series))
  for i, (label, (means, errors)) in enumerate(series.items()):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, label=label,
           color=colours[i], yerr=errors, capsize=2, error_kw={'elinewidth': 0.8})
  ax.set_xticks(x, groups)
  ax.axhline(0.0, color='black', linewidth=0.6)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  # Beside the axes: inside, the legend can hide bars and their error bars.
  ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=90, bbox_inches='tight')
  plt.close(fig)


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
    ax.errorbar(xs, means, yerr=errors, marker='o', capsize=2)
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
