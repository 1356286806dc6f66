#!/usr/bin/env bash
# UniCRS on INSPIRED, one documented command per step, each timed:
#   1. pre-train the compact GPT-2 on INSPIRED's training dialogues (cached by fingerprint),
#   2. train UniCRS's three stages (pretrain, recommend, converse) and evaluate on test.
#   bash benchmarks/inspired_unicrs.sh [DATA_DIR] [RUN_DIR]
# Step 2 finds step 1's LM itself (model.lm=pretrained, same settings). Timings go to
# benchmarks/results/inspired_unicrs_time.txt.
set -euo pipefail
data=${1:-../shared/data/inspired}
run=${2:-runs/inspired-unicrs/unicrs-s0}
times=benchmarks/results/inspired_unicrs_time.txt
start=$(date +%s)
convrec lm pretrain --dataset inspired --data-dir "$data" --no-progress
lm_done=$(date +%s)
convrec train --model unicrs --dataset inspired --data-dir "$data" --run-dir "$run" --no-progress
end=$(date +%s)
{
  echo "lm pretrain: $((lm_done - start)) s"
  echo "unicrs train + test evaluation: $((end - lm_done)) s"
  echo "total: $((end - start)) s"
} | tee "$times"
