#!/usr/bin/env bash
# One device call's worth of GPU figures: the recommend benchmark (20k users x 1M new
# items) and every method's step/epoch time on baby_synthetic. Usage:
#   scripts/gpu_session.sh OUT_DIR [PYTHON]
# Writes OUT_DIR/recommend_benchmark.json, OUT_DIR/method_times.md and OUT_DIR/log.txt.
set -uo pipefail
out=${1:?usage: scripts/gpu_session.sh OUT_DIR [PYTHON]}
python=${2:-python}
cd "$(dirname "$0")/.."
mkdir -p "$out"
"$python" -c 'import jax; print(jax.__version__, jax.devices())'
"$python" scripts/recommend_benchmark.py /tmp/recbench 2>&1 | grep -v '^[IW][0-9]' | tail -3
cp /tmp/recbench/recommend_benchmark.json "$out/" || true
methods=$("$python" -c 'from milk_jax import methods; print(*methods.names())')
for method in $methods; do  # The table is rewritten after each method: a timeout keeps the rest.
  scripts/method_times.sh /tmp/times "$python" "$method" > /dev/null 2>&1 \
    || echo "method $method failed"
  "$python" scripts/method_times_table.py /tmp/times/*/benchmark.json > "$out/method_times.md"
done
cat "$out/method_times.md"
