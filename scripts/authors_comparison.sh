#!/usr/bin/env bash
# milk-jax's configs/authors.py beside the authors' own code, on the same splits of ml100k-mm.
#
#   scripts/authors_comparison.sh OUT [AUTHORS_CODE AUTHORS_PYTHON]
#
# For seeds 0-2: writes the split in the authors' layout (scripts/make_authors_layout.py,
# FTMT files included), trains milk-jax with the authors' preset and the paper's Baby
# hyper-parameters (beta 1000, lambda 0.05, alpha 0.1), and, when AUTHORS_CODE (a checkout
# of HaoyueBai98/MILK, kept outside this repository) and AUTHORS_PYTHON (a Python with torch,
# faiss-cpu, numba, tensorboardX, scipy, tqdm) are given, runs their milk_main.py on the same
# folder with the same hyper-parameters. Prints test Recall/NDCG@10/20 per seed and the means.
set -euo pipefail
OUT=${1:?usage: scripts/authors_comparison.sh OUT [AUTHORS_CODE AUTHORS_PYTHON]}
AUTHORS_CODE=${2:-}
AUTHORS_PYTHON=${3:-}
PYTHON=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
for seed in 0 1 2; do
  data="$OUT/data_seed$seed"
  [ -f "$data/cold_item_index.npy" ] || \
    JAX_PLATFORMS=cpu "$PYTHON" scripts/make_authors_layout.py --config=configs/ml100k.py \
      --out="$data" --seed="$seed"
  [ -f "$OUT/milkjax_seed$seed/results.json" ] || \
    JAX_PLATFORMS=cpu "$PYTHON" main.py --config=configs/authors.py --config.data.path="$data" \
      --config.seed="$seed" --config.data.setting=ftmt --config.train.beta=1000 \
      --config.train.align_weight=0.05 --config.model.alpha=0.1 \
      --workdir="$OUT/milkjax_seed$seed" > "$OUT/milkjax_seed$seed.log" 2>&1
  if [ -n "$AUTHORS_CODE" ] && [ ! -s "$OUT/authors_seed$seed.log" ]; then
    (cd "$AUTHORS_CODE" && "$AUTHORS_PYTHON" milk_main.py --dataset="$data" --exp_mode=fm \
      --use_gpu=0 --penalty_coeff=1000 --align_coeff=0.05 --alpha=0.1 --seed="$seed" \
      --suffix="ml100k_seed$seed" > "$OUT/authors_seed$seed.log.tmp" 2>&1) && \
      mv "$OUT/authors_seed$seed.log.tmp" "$OUT/authors_seed$seed.log"
  fi
done
"$PYTHON" scripts/authors_comparison_table.py "$OUT"
