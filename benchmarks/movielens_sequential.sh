#!/usr/bin/env bash
# The MovieLens-100k sequential table: popularity, sasrec and kp4sr with its two ablations
# (knowledge prompts without the tree mask; MPP only), seeds 0 and 1, leave-one-out, full
# ranking. Every run goes through benchmarks/train_time.py, which appends its wall time and
# peak memory to benchmarks/results/movielens_train_time.json. Finished runs are skipped, so
# an interrupted sweep continues where it stopped (an unfinished run: `convrec train --resume`).
#   bash benchmarks/movielens_sequential.sh [DATA_DIR] [RUNS_DIR]
# Time on the 2-core CPU: sasrec ~2 min, kp4sr (tree or full) ~45 min, MPP only ~10 min per
# seed; about 3.5 hours in all (two runs side by side with OMP_NUM_THREADS=1 each is faster).
# One run by hand: convrec train --model kp4sr --dataset movielens-100k --data-dir DATA seed=0
#                  [model.knowledge=full|none]
set -euo pipefail
data=${1:-../shared/data/movielens-100k}
runs=${2:-runs/movielens-sequential}
here=$(dirname "$0")
dataset=movielens-100k
times=$here/results/movielens_train_time.json
# shellcheck source=benchmarks/sweep.sh
source "$here/sweep.sh"

run popularity popularity 0
for seed in 0 1; do
    run "sasrec-s$seed" sasrec "$seed"
    run "kp4sr-s$seed" kp4sr "$seed"
    run "kp4sr-full-s$seed" kp4sr "$seed" model.knowledge=full
    run "kp4sr-none-s$seed" kp4sr "$seed" model.knowledge=none
done
convrec compare "$runs"/sasrec-s0 "$runs"/sasrec-s1 "$runs"/popularity \
    "$runs"/kp4sr-s0 "$runs"/kp4sr-s1 "$runs"/kp4sr-full-s0 "$runs"/kp4sr-full-s1 \
    "$runs"/kp4sr-none-s0 "$runs"/kp4sr-none-s1 \
    --aggregate-seeds --label-by model.knowledge \
    --output benchmarks/results/movielens_sequential.md
