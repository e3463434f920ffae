"""One Markdown table of an experiment setting's runs: validation, test, groups, paired gains.

Reads RUNS/<variant>/seed_*/results.json (and eval.json, written by
`--mode=eval`, where results.json predates a key). A calibrated variant
('X_cal') also yields its uncalibrated twin ('X'), from the plain scores it
reports (val, test*_uncalibrated), for the seeds that 'X' has no run of. The
validation column is what selection sees: val NDCG@20, or val_calibrated
for a calibrated variant (its maps read no label). Groups are those of
test_by_group (one shared ranking) and test_within_group (each group ranks
its own items); the last columns are the paired difference to the baseline
on the seeds both have, with a two-sided paired t-test (milk_jax/report.py).

  .venv/bin/python scripts/study_table.py runs/fusion_ml100k/ftmt --baseline=ERM
  .venv/bin/python scripts/study_table.py runs/fusion_ml100k/ftmt --baseline=MILK --validation
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from milk_jax import seed_statistics  # pylint: disable=wrong-import-position

METRIC = 'ndcg@20'
UNCALIBRATED = ('test', 'test_by_group', 'test_within_group')


def read_run(folder: str) -> dict | None:
  """results.json with eval.json's keys that it lacks (None when unfinished)."""
  path = os.path.join(folder, 'results.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    results = json.load(f)
  extra = os.path.join(folder, 'eval.json')
  if os.path.exists(extra):
    with open(extra, encoding='utf-8') as f:
      evaluated = json.load(f)
    if evaluated.get('epoch') == results.get('best_epoch'):
      results = {**evaluated, **results}
  return results


def uncalibrated(results: dict) -> dict:
  """The plain-score view of a calibrated run's results."""
  return {'best_epoch': results['best_epoch'], 'val': results['val'],
          **{key: results[f'{key}_uncalibrated'] for key in UNCALIBRATED}}


def read_variants(runs: str) -> dict[str, dict[int, dict]]:
  """{variant: {seed: results}}, uncalibrated twins of calibrated variants added."""
  variants = {}
  for name in sorted(os.listdir(runs)):
    folder = os.path.join(runs, name)
    if name.startswith('_') or not os.path.isdir(folder):
      continue
    seeds = {}
    for seed_folder in sorted(os.listdir(folder)):
      if seed_folder.startswith('seed_'):
        results = read_run(os.path.join(folder, seed_folder))
        if results is not None:
          seeds[int(seed_folder[len('seed_'):])] = results
    if seeds:
      variants[name] = seeds
  with_twins = {}
  for name, seeds in variants.items():
    twin = name[:-len('_cal')]
    if name.endswith('_cal'):
      # Calibration never changes training, so the plain scores are those of the twin's run
      # (bit for bit); the twin's own runs are kept, its missing seeds filled.
      plain = {s: uncalibrated(r) for s, r in seeds.items() if 'test_uncalibrated' in r}
      plain.update(variants.get(twin, {}))
      if plain:
        with_twins[twin] = dict(sorted(plain.items()))  # Just before its calibrated variant.
    if name not in with_twins:
      with_twins[name] = seeds
  return with_twins


def selection_value(name: str, results: dict) -> float:
  """The validation NDCG@20 that chooses between configurations (nan where absent)."""
  key = 'val_calibrated' if name.endswith('_cal') else 'val'
  return results.get(key, {}).get(METRIC, math.nan)


def group_names(variants: dict[str, dict[int, dict]]) -> list[str]:
  names = {g for seeds in variants.values() for r in seeds.values()
           for g in r.get('test_by_group', {})}
  return sorted(names, key=lambda g: (g != 'full', g))


def table(variants: dict[str, dict[int, dict]], baseline: str, order: list[str]) -> list[str]:
  groups = group_names(variants)
  slash = ' / '.join(groups)
  lines = [f'| variant | seeds | val NDCG@20 | test NDCG@20 | shared ranking: {slash} | '
           f'within group: {slash} | test minus {baseline}, paired (p) | '
           f'within, {groups[-1]}, minus {baseline} | best epochs |',
           '|---|---|---|---|---|---|---|---|---|']
  base = variants.get(baseline, {})
  names = [n for n in order if n in variants] + [n for n in variants if n not in order]

  def column(seeds, view, group=None):
    return {s: (r[view][group] if group else r[view])[METRIC] for s, r in seeds.items()
            if view in r and (group is None or group in r[view])}

  for name in names:
    seeds = variants[name]
    test = column(seeds, 'test')
    values = np.array(list(test.values()))
    spread = f' +- {values.std(ddof=1):.4f}' if len(values) > 1 else ''
    chosen = [v for v in (selection_value(name, r) for r in seeds.values()) if not math.isnan(v)]
    val = np.mean(chosen) if chosen else math.nan
    shared = ' / '.join(f'{np.mean(list(column(seeds, "test_by_group", g).values())):.4f}'
                        for g in groups)
    within_means = ' / '.join(
        f'{np.mean(list(column(seeds, "test_within_group", g).values())):.4f}' for g in groups)
    if name == baseline or not base:
      gain = within_gain = '-'
    else:
      diff = seed_statistics.paired_difference(test, column(base, 'test'))
      rel = 100 * diff['mean'] / np.mean([column(base, 'test')[s] for s in test if s in base])
      gain = (f'{diff["mean"]:+.4f} ({rel:+.1f}%, p {diff["p_value"]:.2f})' if diff['n'] > 1
              else f'{diff["mean"]:+.4f} (one seed)')
      within = seed_statistics.paired_difference(column(seeds, 'test_within_group', groups[-1]),
                                        column(base, 'test_within_group', groups[-1]))
      within_gain = f'{within["mean"]:+.4f}'
    epochs = ' '.join(str(seeds[s]['best_epoch']) for s in sorted(seeds))
    lines.append(f'| {name} | {",".join(map(str, sorted(seeds)))} | {val:.4f} | '
                 f'{values.mean():.4f}{spread} | {shared} | {within_means} | {gain} | '
                 f'{within_gain} | {epochs} |')
  return lines


def validation_table(variants: dict[str, dict[int, dict]], baseline: str,
                     order: list[str]) -> list[str]:
  """The selection view: each variant's validation NDCG@20 against the baseline's, paired by
  seed, with the standard error of the mean difference (the one-standard-error rule)."""
  lines = [f'| variant | seeds | val NDCG@20 | minus {baseline}, paired (standard error) |',
           '|---|---|---|---|']
  base = {s: selection_value(baseline, r) for s, r in variants.get(baseline, {}).items()}
  names = [n for n in order if n in variants] if order else list(variants)
  for name in names:
    values = {s: selection_value(name, r) for s, r in variants[name].items()}
    values = {s: v for s, v in values.items() if not math.isnan(v)}
    if not values:
      continue
    diff = seed_statistics.paired_difference(values, base)
    gap = ('-' if name == baseline or diff['n'] < 2 else
           f'{diff["mean"]:+.4f} ({diff["std"] / math.sqrt(diff["n"]):.4f})')
    lines.append(f'| {name} | {",".join(map(str, sorted(values)))} | '
                 f'{np.mean(list(values.values())):.4f} | {gap} |')
  return lines


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('runs', help='a setting folder of an experiment: <runs>/<setting>')
  parser.add_argument('--baseline', default='ERM')
  parser.add_argument('--order', default='', help='comma-separated variants to list first')
  parser.add_argument('--validation', action='store_true',
                      help='the selection view only: validation against the baseline, with '
                      'the standard error; --order then lists the variants shown')
  args = parser.parse_args()
  if not os.path.isdir(args.runs):
    print(f'error: {args.runs}: no such folder', file=sys.stderr)
    return 1
  variants = read_variants(args.runs)
  if not variants:
    print(f'error: {args.runs}: no finished run (no <variant>/seed_*/results.json)',
          file=sys.stderr)
    return 1
  order = [o for o in args.order.split(',') if o]
  print('\n'.join((validation_table if args.validation else table)(variants, args.baseline, order)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
