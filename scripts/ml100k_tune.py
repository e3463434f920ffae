"""Validation-only search for configs/ml100k.py: one knob at a time, seeds 0-2.

beta in {0, 1, 10, 100, 1000} (lambda 0.05, alpha 0.1), then lambda in
{0, 0.05, 0.5, 2} at the best beta, then alpha in {0.01, 0.1, 1, 10}; each
point is scored by validation NDCG@20 averaged over the seeds. Test metrics
are never read. Finished runs under RUNS_DIR are resumed, not redone.

  .venv/bin/python scripts/ml100k_tune.py [RUNS_DIR]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from configs import ml100k  # pylint: disable=g-import-not-at-top
from milk_jax import run as run_lib  # pylint: disable=g-import-not-at-top

SEEDS = (0, 1, 2)


def validation_score(runs: str, beta: float, align_weight: float, alpha: float) -> float:
  scores = []
  for seed in SEEDS:
    config = ml100k.get_config()
    config.seed = seed
    config.train.beta, config.train.align_weight, config.model.alpha = beta, align_weight, alpha
    workdir = os.path.join(runs, f'beta{beta:g}_lambda{align_weight:g}_alpha{alpha:g}', str(seed))
    scores.append(run_lib.train_and_evaluate(config, workdir)['val']['ndcg@20'])
  score = float(np.mean(scores))
  print(f'beta {beta:g} lambda {align_weight:g} alpha {alpha:g}: val NDCG@20 {score:.4f}',
        flush=True)
  return score


def main(runs: str) -> None:
  beta = max((0.0, 1.0, 10.0, 100.0, 1000.0), key=lambda b: validation_score(runs, b, 0.05, 0.1))
  align_weight = max((0.0, 0.05, 0.5, 2.0), key=lambda l: validation_score(runs, beta, l, 0.1))
  alpha = max((0.01, 0.1, 1.0, 10.0),
              key=lambda a: validation_score(runs, beta, align_weight, a))
  print(f'chosen: beta {beta:g}, lambda {align_weight:g}, alpha {alpha:g}')


if __name__ == '__main__':
  main(sys.argv[1] if len(sys.argv) > 1 else 'runs/ml100k_tune')
