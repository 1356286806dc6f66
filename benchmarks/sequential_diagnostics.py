"""What a sequential recommender's top-10 lists look like on the test split.

    python benchmarks/sequential_diagnostics.py --run runs/movielens-sequential/kp4sr-s0 \\
        --run runs/movielens-sequential/sasrec-s0 [--k 10]

Per run: HR@k (as in the table), the share of recommended items the user has already
watched (in the history the model is given: MovieLens-100k has no repeat views, so every
such item is a wasted slot), the mean training-popularity percentile of recommended items
(100 = the most watched items), and catalogue coverage (distinct items recommended over
all users / catalogue size). Writes benchmarks/results/sequential_diagnostics.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from convrec.evaluation.ranking import top_k_items
from convrec.models.base import move_to
from convrec.training.run import load_run

RESULTS = Path("benchmarks/results/sequential_diagnostics.json")


def diagnose(run_dir: Path, k: int, batch_size: int = 64) -> dict:
    config, task, model = load_run(run_dir)
    model.eval()
    samples = task.eval_samples("test")
    with torch.no_grad():
        tops = [
            top_k_items(
                model.recommend(move_to(model.collate(samples[i : i + batch_size]), model.device))
                .float()
                .cpu(),
                k,
            )
            for i in range(0, len(samples), batch_size)
        ]
    top = torch.cat(tops).numpy()  # [n, k]
    seen = np.zeros((len(samples), task.num_items), dtype=bool)
    for row in range(len(samples)):  # 943 rows: a diagnostic, not a hot path
        seen[row, samples[row].history] = True
    recommended_seen = np.take_along_axis(seen, top, axis=1)
    counts = task.item_counts()  # percentile: share of items watched at most as often
    percentile = 100 * np.searchsorted(np.sort(counts), counts, side="right") / len(counts)
    targets = task.target_indices(samples)
    return {
        "run": str(run_dir),
        "model": config.model_name,
        "knowledge": getattr(config.model, "knowledge", None),
        "seed": config.seed,
        "samples": len(samples),
        f"hr@{k}": round(float((top == targets[:, None]).any(axis=1).mean()), 4),
        f"already_watched@{k}": round(float(recommended_seen.mean()), 4),
        f"popularity_percentile@{k}": round(float(percentile[top].mean()), 1),
        f"coverage@{k}": round(len(np.unique(top)) / task.num_items, 4),
        "target_popularity_percentile": round(float(percentile[targets].mean()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    records = [diagnose(run, args.k) for run in args.run]
    for record in records:
        print(json.dumps(record))
    RESULTS.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
