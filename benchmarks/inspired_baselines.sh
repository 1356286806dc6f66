#!/usr/bin/env bash
# The INSPIRED baseline table of the README: popularity, repeat, kbrd and text, one
# documented command each (kbrd and text over seeds 0-2), then one comparison table.
#   bash benchmarks/inspired_baselines.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
data=${1:-../shared/data/inspired}
runs=${2:-runs/inspired-baselines}

convrec train --model popularity --dataset inspired --data-dir "$data" --run-dir "$runs/popularity" --no-progress
convrec train --model repeat --dataset inspired --data-dir "$data" --run-dir "$runs/repeat" --no-progress
for seed in 0 1 2; do
  convrec train --model kbrd --dataset inspired --data-dir "$data" --run-dir "$runs/kbrd-s$seed" --no-progress seed=$seed
  convrec train --model text --dataset inspired --data-dir "$data" --run-dir "$runs/text-s$seed" --no-progress seed=$seed
done
convrec compare "$runs"/popularity "$runs"/repeat "$runs"/kbrd-s{0,1,2} "$runs"/text-s{0,1,2} \
  --aggregate-seeds --output benchmarks/results/inspired_baselines.md
