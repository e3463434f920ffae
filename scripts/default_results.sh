#!/usr/bin/env bash
# Every method trained on configs/default.py, one run folder each: the reference a refactor
# is checked against (its results must stay equal to the last bit). Usage, from the root of
# the checkout whose code is measured (any commit, e.g. a worktree of the one before a change):
#   path/to/scripts/default_results.sh OUT_DIR [PYTHON] [METHOD ...]   (default: every method)
# then the same in the changed checkout into another folder, and
#   .venv/bin/python scripts/compare_runs.py OUT_BEFORE OUT_AFTER
# Each run takes seconds to a minute on 2 CPU cores; OUT_DIR/summary.txt lists them.
set -euo pipefail
out=${1:?usage: scripts/default_results.sh OUT_DIR [PYTHON] [METHOD ...]}
python=${2:-.venv/bin/python}
shift 2 || shift $#
[ -f main.py ] || { echo "run from the root of a milk-jax checkout (no main.py in $PWD)" >&2; exit 2; }
if [ $# -eq 0 ]; then
  set -- $("$python" -c 'from milk_jax import methods; print(*methods.names())')
fi
mkdir -p "$out"
for method in "$@"; do
  start=$(date +%s)
  "$python" main.py --config=configs/default.py --config.method="$method" \
      --workdir="$out/run_$method" > "$out/$method.log" 2>&1 \
      || { echo "$method failed: see $out/$method.log" >&2; exit 1; }
  echo "$method $(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"
done
