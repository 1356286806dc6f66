#!/usr/bin/env bash
# STEP on INSPIRED, one documented command per step, each timed:
#   1. pre-train the compact GPT-2 on INSPIRED's training dialogues (cached by fingerprint;
#      the same LM UniCRS uses, so after inspired_unicrs.sh this takes a second),
#   2. train STEP's three stages (pretrain, recommend, converse) and evaluate on test.
#   bash benchmarks/inspired_step.sh [DATA_DIR] [RUN_DIR] [SEED]
# Timings go to benchmarks/results/inspired_step_time.txt.
set -euo pipefail
data=${1:-../shared/data/inspired}
seed=${3:-0}
run=${2:-runs/inspired-step/step-s$seed}
times=benchmarks/results/inspired_step_time.txt
start=$(date +%s)
convrec lm pretrain --dataset inspired --data-dir "$data" --no-progress
lm_done=$(date +%s)
convrec train --model step --dataset inspired --data-dir "$data" --run-dir "$run" --no-progress seed="$seed"
end=$(date +%s)
{
  echo "lm pretrain: $((lm_done - start)) s"
  echo "step train + test evaluation: $((end - lm_done)) s"
  echo "total: $((end - start)) s"
} | tee "$times"
