#!/usr/bin/env bash
# The MovieLens-100k sequential table: popularity and sasrec (seed 0), leave-one-out,
# full ranking, then one comparison table. SASRec trains in about 2 minutes on a CPU core.
#   bash benchmarks/movielens_sequential.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
data=${1:-../shared/data/movielens-100k}
runs=${2:-runs/movielens-sequential}

convrec train --model popularity --dataset movielens-100k --data-dir "$data" --run-dir "$runs/popularity" --no-progress
convrec train --model sasrec --dataset movielens-100k --data-dir "$data" --run-dir "$runs/sasrec-s0" --no-progress seed=0
convrec compare "$runs"/sasrec-s0 "$runs"/popularity --output benchmarks/results/movielens_sequential.md
