# Sourced by the benchmark sweeps (movielens_sequential.sh, redial_baselines.sh), which set
# `dataset`, `data`, `runs`, `times` and, optionally, the array `overrides` given to every run.
#   run NAME MODEL SEED [override ...]
# trains MODEL into $runs/NAME through train_time.py (wall time and peak memory appended to
# $times), unless $runs/NAME/metrics.json exists: an interrupted sweep continues where it
# stopped (an unfinished run: `convrec train --resume`).

run() {
    local name=$1 model=$2 seed=$3
    shift 3
    if [[ -f $runs/$name/metrics.json ]]; then
        echo "$name: done, skipped"
        return
    fi
    python "$(dirname "${BASH_SOURCE[0]}")/train_time.py" --model "$model" --dataset "$dataset" \
        --data-dir "$data" --seed "$seed" --run-dir "$runs/$name" --out "$times" \
        ${overrides[@]+"${overrides[@]}"} "$@"
}
