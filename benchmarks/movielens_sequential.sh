#!/usr/bin/env bash
# The MovieLens-100k sequential table: popularity, sasrec and kp4sr (default: the frozen
# pretrained MiniLM under the prompts + item head) with its two ablations (knowledge prompts
# without the tree mask; MPP only), seeds 0-2, leave-one-out, full ranking. Every run goes
# through benchmarks/train_time.py, which appends its wall time and peak memory to
# benchmarks/results/movielens_train_time.json and keeps its config and metrics in
# results/run-summaries/movielens_train_time/. Finished runs are skipped, so an interrupted
# sweep continues where it stopped (an unfinished run: `convrec train --resume`).
#   bash benchmarks/movielens_sequential.sh [DATA_DIR] [RUNS_DIR]
# Time per run with one thread (OMP_NUM_THREADS=1) beside another one-thread job: sasrec
# 6-7 min, kp4sr 10-13 min (tree or full; most of it encoding ~11k prompts once), MPP only
# 6-7 min; about 2 hours for the main rows, 2.5 more for the item-vector ablation rows.
# The compact-T5 rows (the paper's setting; benchmarks/results/movielens_sequential_t5.md)
# came from this script before the default changed: model.backbone=t5 model.item_text=id
# model.training_prompts=redraw model.max_input_tokens=512 data.train_positions=random
# data.max_items=50.
set -euo pipefail
data=${1:-../shared/data/movielens-100k}
runs=${2:-runs/movielens-sequential}
here=$(dirname "$0")
dataset=movielens-100k
times=$here/results/movielens_train_time.json
# shellcheck source=benchmarks/sweep.sh
source "$here/sweep.sh"

run popularity popularity 0
names=(popularity)
# The main rows for every seed first, then the without-mask ablation.
for seed in 0 1 2; do
    run "sasrec-s$seed" sasrec "$seed"
    run "kp4sr-encoder-s$seed" kp4sr "$seed"
    run "kp4sr-encoder-none-s$seed" kp4sr "$seed" model.knowledge=none
    names+=("sasrec-s$seed" "kp4sr-encoder-s$seed" "kp4sr-encoder-none-s$seed")
done
for seed in 0 1 2; do
    run "kp4sr-encoder-full-s$seed" kp4sr "$seed" model.knowledge=full
    names+=("kp4sr-encoder-full-s$seed")
done
# The rows before the default changed to model.item_embedding=false (a free learned vector
# per item next to its title's: it overfits; benchmarks/kp4sr_head_probe.py).
for seed in 0 1 2; do
    for knowledge in tree none full; do
        name=kp4sr-encoder-$([[ $knowledge == tree ]] || echo "$knowledge-")itememb-s$seed
        run "$name" kp4sr "$seed" model.knowledge=$knowledge model.item_embedding=true
        names+=("$name")
    done
done
results=()
for name in "${names[@]}"; do results+=("$(result "$name")"); done
convrec compare "${results[@]}" --aggregate-seeds --label-by model.knowledge --label-by model.item_embedding \
    --output benchmarks/results/movielens_sequential.md
