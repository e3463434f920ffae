#!/usr/bin/env bash
# The benchmark figures of docs/speed.md, in one go, on whatever
# device JAX finds (CPU, GPU or TPU). Usage:
#   scripts/benchmark_suite.sh OUT_DIR [PYTHON]
# Writes OUT_DIR/{float32,bfloat16,float32_sweep}/benchmark.json (+ sweep.csv,
# sweep.png) and prints one line per benchmark.
set -euo pipefail
out=${1:?usage: scripts/benchmark_suite.sh OUT_DIR [PYTHON]}
python=${2:-python}
cd "$(dirname "$0")/.."
run() {  # name, extra flags...
  local name=$1; shift
  "$python" main.py --config=configs/baby_synthetic.py --mode=benchmark \
      --workdir="$out/$name" --config.benchmark.num_steps=200 --config.benchmark.num_epochs=5 \
      "$@" | grep -v '^[0-9][0-9]:[0-9][0-9]:[0-9][0-9] '  # The headline, not the progress.
}
run float32
run bfloat16 --config.train.feature_dtype=bfloat16 --config.benchmark.reference=False
run float32_sweep --config.benchmark.sweep=True --config.benchmark.num_steps=50
