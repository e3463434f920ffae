#!/usr/bin/env bash
# MILK vs ERM on ml100k without a shift (ftft) and with a harder one (every new
# item misses one modality), 5 seeds; prints paired differences to ERM.
# Usage: scripts/ml100k_shift.sh [RUNS_DIR]   (PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RUNS=${1:-runs}
ERM=(--config.model.use_alignment=False --config.model.use_invariance=False)
ALL_MISSING=(--config.data.test_missing_rate=1.0)
for seed in 0 1 2 3 4; do
  run() { "$PYTHON" main.py --config=configs/ml100k.py --config.seed=$seed "$@"; }
  run --workdir="$RUNS/ml100k_ftft/milk/$seed" --config.data.setting=ftft
  run --workdir="$RUNS/ml100k_ftft/erm/$seed" --config.data.setting=ftft "${ERM[@]}"
  run --workdir="$RUNS/ml100k_all_missing/milk/$seed" "${ALL_MISSING[@]}"
  run --workdir="$RUNS/ml100k_all_missing/erm/$seed" "${ALL_MISSING[@]}" "${ERM[@]}"
  run --workdir="$RUNS/ml100k_all_missing/milk_beta100/$seed" "${ALL_MISSING[@]}" \
    --config.train.beta=100
done
for setting in ml100k_ftft ml100k_all_missing; do
  "$PYTHON" -m milk_jax.report --baseline="$RUNS/$setting/erm" \
    --metrics=test.recall@20,test.ndcg@20 "$RUNS/$setting"/*
done
