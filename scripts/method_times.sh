#!/usr/bin/env bash
# The per-method training-time table of docs/speed.md: the benchmark mode, run per method on
# baby_synthetic (19445 users, 7050 items, 4096-d + 384-d features), then one Markdown
# table of the figures. Usage: scripts/method_times.sh OUT_DIR [PYTHON] [METHOD ...]
# (default: every method). Epoch times include sampling; the step is one update. Methods
# that read a backbone are timed on random CF vectors of its shape (nothing is trained first).
set -euo pipefail
out=${1:?usage: scripts/method_times.sh OUT_DIR [PYTHON] [METHOD ...]}
python=${2:-.venv/bin/python}
shift 2 || shift $#
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- $("$python" -c 'from milk_jax import methods; print(*methods.names())')
fi
for method in "$@"; do
  "$python" main.py --config=configs/baby_synthetic.py --mode=benchmark --config.method="$method" \
      --workdir="$out/$method" --config.benchmark.num_steps=20 --config.benchmark.warmup_steps=2 \
      --config.benchmark.num_epochs=1 --config.benchmark.reference=False \
      --config.benchmark.both_samplers=False --config.train.sampler=device \
      | grep -v '^[0-9][0-9]:[0-9][0-9]:[0-9][0-9] '  # The headline, not the progress.
done
"$python" scripts/method_times_table.py "$out"/*/benchmark.json
