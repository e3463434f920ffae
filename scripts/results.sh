#!/usr/bin/env bash
# The studies of docs/results.md: overall, ablation, environments and groups on
# ml100k (5 seeds) and baby_synthetic (3 seeds, a fixed budget of 30 epochs), and
# groups on synthetic_m3 (M = 3, 5 seeds). The experiments of one dataset share
# their run folders (experiment.runs_dir), so a run two studies have in common
# (e.g. ERM and MILK under FTMT) trains once. Runs already finished are skipped.
# Usage: scripts/results.sh [OUT_DIR] [DATASET ...]   (PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${1:-runs/results}
shift || true
if [ $# -eq 0 ]; then set -- ml100k synthetic_m3 baby_synthetic; fi

run() {  # run DATASET EXPERIMENT [overrides...]
  local dataset=$1 name=$2
  shift 2
  "$PYTHON" main.py --mode=experiment --config="configs/experiments/$name.py:$dataset" \
    --workdir="$OUT/$dataset/$name" --config.experiment.runs_dir="$OUT/$dataset/runs" "$@"
}

for dataset in "$@"; do
  case $dataset in
    ml100k)
      for name in overall ablation environments groups; do run ml100k $name; done ;;
    synthetic_m3)
      run synthetic_m3 groups ;;
    baby_synthetic)
      for name in overall ablation environments groups; do
        # The baselines are left out here (issue 11 runs them on this size).
        run baby_synthetic $name --config.experiment.num_seeds=3 \
          --config.train.num_epochs=30 --config.train.eval_every=5 --config.experiment.methods="()"
      done ;;
    *) echo "unknown dataset $dataset" >&2; exit 2 ;;
  esac
done
