#!/usr/bin/env bash
# Table 2 of one dataset (configs/experiments/overall.py) as several experiment
# processes at once, for a GPU that one small run leaves mostly idle. The run
# folders are the same as one `--mode=experiment` process would write, so the
# summary at the end (and any later single-process run) reads them all.
#
#   scripts/comparison_parallel.sh DATASET OUT_DIR [--config.x=y ...]
#   JOBS=8 PYTHON=.venv/bin/python SETTINGS="ftmt mtmt" scripts/comparison_parallel.sh tiktok_mm runs/t2
#
# 1. One method that reads the warm BPR-MF backbone (GoRec, the cheapest, when
#    it is listed) runs first, alone, over every setting: it trains the backbone
#    of each setting and seed, which the other backbone readers then reuse (a
#    backbone folder is locked while it trains, so two processes must not
#    start it at once).
# 2. MILK's variants (ERM, MILK, ...) and each other baseline, one process per
#    setting each, JOBS at a time (default 4). Each writes its own log.
# 3. One summary over every run, training nothing: OUT_DIR/<dataset>/table2.
# METHODS="duif gar" keeps some baselines (default: all of overall.py's).
# Extra arguments go to every process (e.g. --config.experiment.num_seeds=3).
set -euo pipefail
dataset=${1:?usage: scripts/comparison_parallel.sh DATASET OUT_DIR [--config.x=y ...]}
out=${2:?usage: scripts/comparison_parallel.sh DATASET OUT_DIR [--config.x=y ...]}
shift 2
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-4}
SETTINGS=${SETTINGS:-ftmt mtmt}
runs="$out/$dataset/runs"
logs="$out/$dataset/logs"
mkdir -p "$logs"
# Several JAX processes share one GPU: each takes memory as it needs it, not 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

baselines=${METHODS:-$("$PYTHON" -c 'from configs.experiments import overall; print(*overall.BASELINES)')}
# One Python start for what the loop needs: the backbone reader that runs first (GoRec
# when listed, else the first one listed), then each method's variant name.
plan=$("$PYTHON" -c "
import sys
from milk_jax import methods
names = sys.argv[1:]
unknown = [n for n in names if n not in methods.names()]
if unknown:
  sys.exit(f'error: METHODS names unknown methods {unknown}; known: {list(methods.names())}')
readers = [n for n in names if methods.info(n).backbone is not None]
print('gorec' if 'gorec' in readers else (readers[0] if readers else '-'))
for n in names:
  print(n, methods.info(n).display_name)" $baselines)
first=$(sed -n 1p <<< "$plan")
[ "$first" = - ] && first=
declare -A display
while read -r name shown; do display[$name]=$shown; done < <(sed 1d <<< "$plan")

experiment() {  # experiment NAME [overrides...]: one restricted process, logged to NAME.log
  local name=$1
  shift
  if "$PYTHON" main.py --mode=experiment --config="configs/experiments/overall.py:$dataset" \
      --workdir="$out/$dataset/parts/$name" --config.experiment.runs_dir="$runs" "$@" \
      > "$logs/$name.log" 2>&1; then
    echo "$(date +%T) done   $name"
  else
    echo "$(date +%T) FAILED $name (see $logs/$name.log)"
    return 1
  fi
}

start=$(date +%s)
settings_tuple="($(printf "'%s'," $SETTINGS))"
if [ -n "$first" ]; then
  echo "$(date +%T) backbones (with $first), settings: $SETTINGS"
  experiment "$first" --config.experiment.variants="()" --config.experiment.methods="('$first',)" \
    --config.experiment.baseline="${display[$first]}" --config.experiment.settings="$settings_tuple" "$@"
fi

failed=0
running=0
for setting in $SETTINGS; do
  for method in milk $baselines; do
    [ "$method" = "$first" ] && continue
    if [ "$running" -ge "$JOBS" ]; then
      wait -n || failed=1
      running=$((running - 1))
    fi
    if [ "$method" = milk ]; then  # ERM, MILK (and MILK_beta1000): the config's own variants
      experiment "milk_$setting" --config.experiment.methods="()" \
        --config.experiment.settings="('$setting',)" "$@" &
    else
      experiment "${method}_$setting" --config.experiment.variants="()" \
        --config.experiment.methods="('$method',)" --config.experiment.baseline="${display[$method]}" \
        --config.experiment.settings="('$setting',)" "$@" &
    fi
    running=$((running + 1))
  done
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done

echo "$(date +%T) summary"
"$PYTHON" main.py --mode=experiment --config="configs/experiments/overall.py:$dataset" \
  --workdir="$out/$dataset/table2" --config.experiment.runs_dir="$runs" \
  --config.experiment.settings="$settings_tuple" --config.experiment.train_missing=False "$@" \
  > "$logs/summary.log" 2>&1 || { echo "summary failed (see $logs/summary.log)"; failed=1; }
echo "$(date +%T) $(( $(date +%s) - start )) s in all; table: $out/$dataset/table2/summary.md"
exit $failed
