"""STEP ablations on INSPIRED: which parts of the F-Former curriculum and prompts matter.

Every row is a recommendation-only STEP run (`model.conversation=false`: prompt
pre-training + recommendation tuning, the stages the ablations change) with the default
INSPIRED settings otherwise, evaluated on the test split under both protocols; rows are
mean ± sample std over seeds. Runs go to runs/step-ablations/<row>-s<seed>; a finished
run is read back, an interrupted one resumes, so the sweep can be stopped and restarted.
All runs share one process, so each context is encoded by the sentence encoder once.

    python benchmarks/step_ablations.py [--seeds 0 1] [--rows full no-curriculum ...]
    python benchmarks/step_ablations.py --report-only    # the table from finished runs

Writes benchmarks/results/step_ablations.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from convrec.config import resolve_config
from convrec.training.run import train

ROWS: dict[str, tuple[str, list[str]]] = {
    "full": ("STEP (K=32, prefix 10)", []),
    "no-curriculum": ("w/o curriculum", ["model.curriculum.mode=none"]),
    "no-contrastive": ("w/o contrastive warm-up", ["model.curriculum.contrastive=false"]),
    "no-triplet": ("w/o triplet", ["model.curriculum.triplet=false"]),
    "no-auxiliary": ("w/o auxiliary", ["model.curriculum.auxiliary=false"]),
    "queries-16": ("queries 16", ["model.n_queries=16"]),
    "prefix-8": ("prefix 8", ["model.n_prefix_rec=8"]),
    "prefix-16": ("prefix 16", ["model.n_prefix_rec=16"]),
}
METRICS = ("recall@1", "recall@10", "recall@50", "ndcg@10", "mrr@10")
RESULTS = Path("benchmarks/results")


def run_one(row: str, seed: int, data_dir: str, root: Path) -> dict:
    run_dir = root / f"{row}-s{seed}"
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and "test" in json.loads(metrics_path.read_text()):
        return json.loads(metrics_path.read_text())
    overrides = ["model.conversation=false", f"seed={seed}", *ROWS[row][1]]
    config = resolve_config("step", "inspired", data_dir, overrides=overrides)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    started = time.perf_counter()
    metrics = train(config, run_dir, resume=resume, progress=False)
    print(f"{row} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return metrics


def test_metrics(metrics: dict, protocol: str) -> dict[str, float]:
    for result in metrics["test"]:
        if result["model"] == "step" and result["protocol"]["name"] == protocol:
            return {name: value["mean"] for name, value in result["metrics"].items()}
    raise KeyError(f"{metrics.get('run')}: no step result under {protocol}")


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(root: Path, seeds: list[int]) -> str:
    lines = [
        "# STEP ablations on INSPIRED (test; recommendation-only runs, mean ± std over seeds)",
        "",
        "Epoch train min: the training epochs' wall time (no validation or test), under "
        "whatever else the 2-core machine ran at the time (some runs shared it).",
        "",
        "| variant | seeds | R@1 | R@10 | R@50 | NDCG@10 | MRR@10 | strict R@10 | strict R@50 "
        "| epoch train min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = {}
    for row, (label, overrides) in ROWS.items():
        runs = []
        for seed in seeds:
            path = root / f"{row}-s{seed}" / "metrics.json"
            if path.is_file() and "test" in (stored := json.loads(path.read_text())):
                runs.append(stored)
        if not runs:
            continue
        standard = [test_metrics(m, "standard") for m in runs]
        strict = [test_metrics(m, "strict") for m in runs]
        # the epochs' training time from the history: right for resumed runs too
        minutes = [sum(h["train_seconds"] for h in m["history"]) / 60 for m in runs]
        cells = [summary([s[k] for s in standard]) for k in METRICS]
        cells += [summary([s[k] for s in strict]) for k in ("recall@10", "recall@50")]
        used = [m["seed"] for m in runs]
        lines.append(
            f"| {label} | {','.join(map(str, used))} | "
            + " | ".join(cells)
            + f" | {statistics.mean(minutes):.0f} |"
        )
        table[row] = {
            "label": label,
            "overrides": overrides,
            "seeds": used,
            "standard": standard,
            "strict": strict,
            "train_minutes": minutes,
        }
    (RESULTS / "step_ablations.json").write_text(json.dumps(table, indent=2) + "\n")
    text = "\n".join(lines) + "\n"
    (RESULTS / "step_ablations.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/inspired")
    parser.add_argument("--runs", type=Path, default=Path("runs/step-ablations"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        for seed in args.seeds:  # every row's first seed before any second seed
            for row in args.rows:
                run_one(row, seed, args.data_dir, args.runs)
                print(report(args.runs, args.seeds), flush=True)
    print(report(args.runs, args.seeds))


if __name__ == "__main__":
    main()
