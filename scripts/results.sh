#!/usr/bin/env bash
# The studies of docs/results.md: overall (Table 2, with the nine baselines),
# ablation, environments and groups (with the two strongest baselines) on ml100k
# (5 seeds) and baby_synthetic (3 seeds, a fixed budget of 30 epochs), groups on
# synthetic_m3 (M = 3, 5 seeds), and Table 2 and groups on tiktok_mm (3 seeds).
# The experiments of one dataset share their run folders (experiment.runs_dir), so
# a run two studies have in common (e.g. ERM and MILK under FTMT) trains once. Runs
# already finished are skipped, so an interrupted call continues where it stopped.
# Usage: scripts/results.sh [OUT_DIR] [DATASET ...]   (PYTHON=... picks the interpreter)
# Default datasets: ml100k synthetic_m3 baby_synthetic. tiktok_mm, and the baselines
# on baby_synthetic, take days on 2 CPU cores (docs/results/table2_cut.md): name tiktok_mm to
# run it, set BASELINES=1 to add them on baby_synthetic, and see
# scripts/comparison_parallel.sh for Table 2 as parallel processes on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
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
      budget=(--config.experiment.num_seeds=3 --config.train.num_epochs=30 --config.train.eval_every=5)
      for name in overall ablation environments groups; do
        run baby_synthetic $name "${budget[@]}" --config.experiment.methods="()"
      done
      if [ "${BASELINES:-0}" = 1 ]; then  # Table 2 with the nine baselines: GPU-sized.
        "$PYTHON" main.py --mode=experiment --config=configs/experiments/overall.py:baby_synthetic \
          --workdir="$OUT/baby_synthetic/table2" --config.experiment.runs_dir="$OUT/baby_synthetic/runs" \
          --config.experiment.settings="('ftmt','mtmt')" "${budget[@]}"
        run baby_synthetic groups "${budget[@]}"
      fi ;;
    tiktok_mm)
      "$PYTHON" main.py --mode=experiment --config=configs/experiments/overall.py:tiktok_mm \
        --workdir="$OUT/tiktok_mm/table2" --config.experiment.runs_dir="$OUT/tiktok_mm/runs" \
        --config.experiment.settings="('ftmt','mtmt')" --config.experiment.num_seeds=3
      run tiktok_mm groups --config.experiment.num_seeds=3 ;;
    *) echo "unknown dataset $dataset" >&2; exit 2 ;;
  esac
done
