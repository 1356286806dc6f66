#!/usr/bin/env bash
# UniCRS and STEP on INSPIRED with the default settings, seeds 0-2 each (the README's
# recommendation, conversation and in-response tables), after the two baselines that
# the tables compare them with. The conversation LM is pre-trained first (cached; the
# runs find it), so each run's wall time is its own pipeline: prompt pre-training,
# recommendation and conversation tuning, validation and the test evaluation. Every run
# goes through benchmarks/train_time.py (wall time, peak memory ->
# benchmarks/results/inspired_prompted_time.json); finished runs are skipped.
#   bash benchmarks/inspired_prompted.sh [DATA_DIR] [RUNS_DIR] [REDIAL_DIR]
set -euo pipefail
data=${1:-../shared/data/inspired}
runs=${2:-runs/inspired-prompted}
redial=${3:-../shared/data/redial}
here=$(dirname "$0")
dataset=inspired
# The conversation LM is the MiniLM decoder since phase 2 (model.compact_lm.base); the runs
# on the GPT-2 from scratch are in results/inspired_prompted_time.json.
times=$here/results/inspired_prompted_decoder_time.json
# The conversation LM reads the ReDial file's training dialogues too (with the hold-out of
# the ReDial runs, benchmarks/redial_baselines.sh); see benchmarks/lm_choice.py.
corpora="[{dataset: redial, data_dir: $redial, options: {split_files: {train: valid_data.jsonl}}, test_fraction: 0.2}]"
# shellcheck source=benchmarks/sweep.sh
source "$here/sweep.sh"

lm_start=$(date +%s)
convrec lm pretrain --model unicrs --dataset inspired --data-dir "$data" --no-progress "corpora=$corpora"
echo "conversation LM ready in $(($(date +%s) - lm_start)) s"
run popularity popularity 0
run repeat repeat 0
overrides=("model.compact_lm.corpora=$corpora")  # the prompt methods' LM settings
for seed in 0 1 2; do
    run "unicrs-s$seed" unicrs "$seed"
    run "step-s$seed" step "$seed"
done
names=(popularity repeat unicrs-s{0,1,2} step-s{0,1,2})
results=()
for name in "${names[@]}"; do results+=("$(result "$name")"); done
convrec compare "${results[@]}" --aggregate-seeds --output benchmarks/results/inspired_prompted_decoder.md
