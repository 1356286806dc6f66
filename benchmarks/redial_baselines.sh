#!/usr/bin/env bash
# The ReDial table of the README, from the one ReDial file shipped in ../shared/data
# (valid_data.jsonl: KGSF's 901 validation dialogues, here the whole "training file"):
# 20% of its dialogues held out as test, 10% as validation (data.split_seed=0, the same
# dialogues for every model and seed). popularity and repeat, kbrd and text over seeds
# 0-2, kbrd without KGSF's relation filter (seed 0, for its validation numbers), unicrs
# seed 0; then one comparison table. Every run goes through benchmarks/train_time.py
# (wall time, peak memory -> benchmarks/results/redial_train_time.json); finished runs are
# skipped, so an interrupted sweep continues where it stopped.
#   bash benchmarks/redial_baselines.sh [DATA_DIR] [RUNS_DIR]
# With ReDial as published (train_data.jsonl + test_data.jsonl + kgsf/): point DATA_DIR at
# it and drop the two data.* `overrides` (validation is then held out of train).
set -euo pipefail
data=${1:-../shared/data/redial}
runs=${2:-runs/redial-baselines}
here=$(dirname "$0")
dataset=redial
times=$here/results/redial_train_time.json
overrides=(data.options.split_files.train=valid_data.jsonl data.test_fraction=0.2)
# shellcheck source=benchmarks/sweep.sh
source "$here/sweep.sh"

run popularity popularity 0
run repeat repeat 0
for seed in 0 1 2; do
    run "kbrd-s$seed" kbrd "$seed"
    run "text-s$seed" text "$seed"
done
run kbrd-all-relations-s0 kbrd 0 model.min_relation_edges=0
run unicrs-s0 unicrs 0
convrec compare "$runs"/popularity "$runs"/repeat "$runs"/kbrd-s{0,1,2} "$runs"/text-s{0,1,2} \
    "$runs"/kbrd-all-relations-s0 "$runs"/unicrs-s0 \
    --aggregate-seeds --label-by model.min_relation_edges \
    --output benchmarks/results/redial_baselines.md
