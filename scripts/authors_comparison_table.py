"""The table of scripts/authors_comparison.sh: milk-jax's authors preset beside their code.

  .venv/bin/python scripts/authors_comparison_table.py OUT

Reads OUT/milkjax_seed<n>/results.json and, when present, the authors'
log OUT/authors_seed<n>.log (its closing lines print the test metrics at
the best validation epoch), and prints test Recall/NDCG@10/20 per seed,
mean +- std over seeds, and the paired difference.
"""

import json
import os
import re
import sys

import numpy as np

METRICS = ('recall@10', 'ndcg@10', 'recall@20', 'ndcg@20')
_FINAL = re.compile(r'hr@(\d+) = [\d.]+, recall@\1 = ([\d.]+), ndcg@\1 = ([\d.]+)\s*$')


def authors_metrics(path: str) -> dict[str, float] | None:
  """Test metrics from the authors' log: the lines after its 'best epoch' line."""
  if not os.path.exists(path):
    return None
  with open(path, errors='replace') as f:
    lines = [re.sub(r'\x1b\[[0-9;]*m', '', line) for line in f]
  closing = [i for i, line in enumerate(lines) if 'best epoch' in line]
  if not closing:
    return None
  found = {}
  for line in lines[closing[-1]:]:
    match = _FINAL.search(line.strip())
    if match:
      k = match.group(1)
      found[f'recall@{k}'], found[f'ndcg@{k}'] = float(match.group(2)), float(match.group(3))
  return {m: found[m] for m in METRICS} if all(m in found for m in METRICS) else None


def milkjax_metrics(path: str) -> dict[str, float] | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    test = json.load(f)['test']
  return {m: test[m] for m in METRICS}


def summary(rows: list[dict[str, float]]) -> str:
  if not rows:
    return ' | '.join('-' for _ in METRICS)
  return ' | '.join(f'{np.mean([r[m] for r in rows]):.4f} +- '
                    f'{np.std([r[m] for r in rows], ddof=1) if len(rows) > 1 else 0:.4f}'
                    for m in METRICS)


def main(out: str) -> None:
  print('| run | seed | ' + ' | '.join(METRICS) + ' |')
  print('|---|---|' + '---|' * len(METRICS))
  by_run = {'milk-jax (configs/authors.py)': [], "authors' code": []}
  paired = []
  for seed in range(3):
    ours = milkjax_metrics(os.path.join(out, f'milkjax_seed{seed}', 'results.json'))
    theirs = authors_metrics(os.path.join(out, f'authors_seed{seed}.log'))
    for name, metrics in zip(by_run, (ours, theirs)):
      if metrics is not None:
        by_run[name].append(metrics)
        print(f'| {name} | {seed} | ' + ' | '.join(f'{metrics[m]:.4f}' for m in METRICS) + ' |')
    if ours is not None and theirs is not None:
      paired.append({m: ours[m] - theirs[m] for m in METRICS})
  for name, rows in by_run.items():
    print(f'| {name} | mean of {len(rows)} | {summary(rows)} |')
  if paired:
    print(f'| milk-jax minus authors (paired) | {len(paired)} seeds | {summary(paired)} |')


if __name__ == '__main__':
  main(sys.argv[1])
