#!/usr/bin/env bash
# MILK vs ERM on ml100k (FTMT), 5 seeds, plus MILK with the paper's Baby setting;
# prints mean +- std over seeds. Usage: scripts/ml100k_milk_vs_erm.sh [RUNS_DIR]
# (PYTHON=... picks the interpreter; runs already finished are resumed, not redone).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RUNS=${1:-runs/ml100k}
for seed in 0 1 2 3 4; do
  "$PYTHON" main.py --config=configs/ml100k.py --workdir="$RUNS/milk/$seed" --config.seed=$seed
  "$PYTHON" main.py --config=configs/ml100k.py --workdir="$RUNS/erm/$seed" --config.seed=$seed \
    --config.model.use_alignment=False --config.model.use_invariance=False
  "$PYTHON" main.py --config=configs/ml100k.py --workdir="$RUNS/milk_paper/$seed" --config.seed=$seed \
    --config.train.beta=1000 --config.train.align_weight=0.05 --config.model.alpha=0.1
done
"$PYTHON" -m milk_jax.report --baseline="$RUNS/erm" \
  --metrics=test.recall@20,test.ndcg@20,test_by_group.full.ndcg@20,test_by_group.missing_1.ndcg@20 \
  "$RUNS/erm" "$RUNS/milk" "$RUNS/milk_paper"
