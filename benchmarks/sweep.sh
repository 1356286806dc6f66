# Sourced by the benchmark sweeps (movielens_sequential.sh, redial_baselines.sh, ...), which
# set `dataset`, `data`, `runs`, `times` and, optionally, the array `overrides` given to
# every run.
#   run NAME MODEL SEED [override ...]
# trains MODEL into $runs/NAME through train_time.py (wall time and peak memory appended to
# $times; the run's config and metrics kept in results/run-summaries/<times>/NAME), unless
# the run has finished before: $runs/NAME/metrics.json or its summary exists. So an
# interrupted sweep continues where it stopped (an unfinished run: `convrec train
# --resume`), on another checkout too.
#   result NAME
# prints where NAME's finished results are (the run directory, else its summary), for
# `convrec compare`.

summary() {
    echo "$(dirname "${BASH_SOURCE[0]}")/results/run-summaries/$(basename "$times" .json)/$1"
}

result() {
    if [[ -f $runs/$1/metrics.json ]]; then echo "$runs/$1"; else summary "$1"; fi
}

run() {
    local name=$1 model=$2 seed=$3
    shift 3
    if [[ -f $(result "$name")/metrics.json ]]; then
        echo "$name: done, skipped"
        return
    fi
    python "$(dirname "${BASH_SOURCE[0]}")/train_time.py" --model "$model" --dataset "$dataset" \
        --data-dir "$data" --seed "$seed" --run-dir "$runs/$name" --out "$times" \
        ${overrides[@]+"${overrides[@]}"} "$@"
}
