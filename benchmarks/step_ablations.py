"""STEP ablations on INSPIRED: which parts of the F-Former curriculum and prompts matter.

Every row is a recommendation-only STEP run (`model.conversation=false`: prompt
pre-training + recommendation tuning, the stages the ablations change) with the default
INSPIRED settings otherwise, evaluated on the test split under both protocols; rows are
mean ± sample std over seeds. The frozen backbones run under bfloat16 autocast where the
CPU computes it natively (`--lm-precision`, default auto; ~2x faster there); runs of the two
precisions are never mixed in a row, and the float32 rows, where recorded, are reported
beside as a check that the faster arithmetic does not move the numbers.

Runs go to runs/step-ablations/<row>-<precision>-s<seed>; an interrupted one resumes from
its checkpoint. Each finished run's test metrics are recorded in
benchmarks/results/step_ablations.json at once, and a run recorded there is not run again,
so the sweep can be stopped and continued later, on another checkout too. All runs share
one process, so each context is encoded by the sentence encoder once.

    python benchmarks/step_ablations.py [--seeds 0 1] [--rows full no-curriculum ...]
    python benchmarks/step_ablations.py --report-only    # the tables from recorded runs

Writes benchmarks/results/step_ablations.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from convrec.config import resolve_config
from convrec.prompting.backbone import resolve_precision
from convrec.training.run import train

ROWS: dict[str, tuple[str, list[str]]] = {
    "full": ("STEP (K=32, prefix 10)", []),
    "no-curriculum": ("w/o curriculum", ["model.curriculum.mode=none"]),
    # The whole run without InfoNCE and the margin loss (this row was once mislabelled
    # "w/o contrastive warm-up").
    "no-contrastive": ("w/o contrastive losses", ["model.curriculum.contrastive=false"]),
    # Only the contrastive-only first F-Former epoch removed: triplet from the start,
    # auxiliary one epoch later, contrastive throughout (default boundaries: [1, 2]).
    "no-warmup": ("w/o contrastive warm-up", ["model.curriculum.boundaries=[0,1]"]),
    "no-triplet": ("w/o triplet", ["model.curriculum.triplet=false"]),
    "no-auxiliary": ("w/o auxiliary", ["model.curriculum.auxiliary=false"]),
    "queries-16": ("queries 16", ["model.n_queries=16"]),
    "prefix-8": ("prefix 8", ["model.n_prefix_rec=8"]),
    "prefix-16": ("prefix 16", ["model.n_prefix_rec=16"]),
    # What the prefixes read of the F-Former (issue 15, 3a; the default reads the
    # L2-normalised Z, which barely varies between contexts): chosen on validation.
    "queries-scaled": ("prompts read Z x a learned scale", ["model.prompt_queries=scaled"]),
    "queries-raw": ("prompts read the un-normalised queries", ["model.prompt_queries=raw"]),
}
PRECISIONS = ("bfloat16", "float32")
BACKBONES = {
    "encoder": "Recommender on the pretrained encoder (all-MiniLM-L6-v2 under deep prompts) "
    "scored against entity rows with name vectors (issue 15's defaults)",
    "lm": "Recommender on the compact LM (GPT-2 4 x 256 trained from scratch) with the earlier "
    "defaults (pre-training on the context before the turn, items only)",
}
METRICS = ("recall@1", "recall@10", "recall@50", "ndcg@10", "mrr@10")
VALID_METRICS = ("recall@10", "strict/recall@10", "ndcg@10")
RESULTS = Path("benchmarks/results")
RECORD = RESULTS / "step_ablations.json"


def load_record() -> list[dict]:
    """Finished runs: row, seed, lm_precision, test metrics per protocol, train minutes."""
    return json.loads(RECORD.read_text())["runs"] if RECORD.is_file() else []


def backbone(run: dict) -> str:
    """The recommender's backbone of a recorded run (runs before the encoder default: lm)."""
    return run.get("rec_backbone", "lm")


def recorded(runs: list[dict], row: str, seed: int, precision: str, rec_backbone: str) -> bool:
    key = (row, seed, precision, rec_backbone)
    return any((r["row"], r["seed"], r["lm_precision"], backbone(r)) == key for r in runs)


def test_metrics(metrics: dict, protocol: str) -> dict[str, float]:
    for result in metrics["test"]:
        if result["model"] == "step" and result["protocol"]["name"] == protocol:
            return {name: value["mean"] for name, value in result["metrics"].items()}
    raise KeyError(f"{metrics.get('run')}: no step result under {protocol}")


def selected_validation(metrics: dict) -> dict[str, float]:
    """Validation metrics of the epoch the run kept: the last improving epoch of its last
    stage (what choices between rows are made on; test is only reported)."""
    history = metrics["history"]
    last_stage = history[-1]["stage"]
    kept = [h for h in history if h["stage"] == last_stage and h["best"]][-1]
    return {name: kept[f"valid/{name}"] for name in VALID_METRICS}


def run_one(
    row: str, seed: int, precision: str, rec_backbone: str, data_dir: str, root: Path
) -> None:
    if recorded(load_record(), row, seed, precision, rec_backbone):
        return
    run_dir = root / f"{row}-{rec_backbone}-{precision}-s{seed}"
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and "test" in json.loads(metrics_path.read_text()):
        metrics = json.loads(metrics_path.read_text())
    else:
        overrides = [
            "model.conversation=false",
            f"model.lm_precision={precision}",
            f"model.rec_backbone={rec_backbone}",
            f"seed={seed}",
            *ROWS[row][1],
        ]
        config = resolve_config("step", "inspired", data_dir, overrides=overrides)
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        started = time.perf_counter()
        metrics = train(config, run_dir, resume=resume, progress=False)
        print(f"{row} {precision} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    runs = load_record()  # re-read: another sweep process may have recorded a run meanwhile
    runs.append(
        {
            "row": row,
            "seed": seed,
            "lm_precision": precision,
            "rec_backbone": rec_backbone,
            "standard": test_metrics(metrics, "standard"),
            "strict": test_metrics(metrics, "strict"),
            "valid": selected_validation(metrics),
            # the epochs' training time from the history: right for resumed runs too
            "train_minutes": round(sum(h["train_seconds"] for h in metrics["history"]) / 60, 2),
        }
    )
    RECORD.write_text(json.dumps({"runs": runs}, indent=2) + "\n")


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(runs: list[dict], precision: str, rec_backbone: str) -> list[str]:
    lines = [
        "| variant | seeds | R@1 | R@10 | R@50 | NDCG@10 | MRR@10 | strict R@10 | strict R@50 "
        "| valid R@10 | valid strict R@10 | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, (label, _) in ROWS.items():
        rows = sorted(
            (
                r
                for r in runs
                if r["row"] == row
                and r["lm_precision"] == precision
                and backbone(r) == rec_backbone
            ),
            key=lambda r: r["seed"],
        )
        if not rows:
            continue
        cells = [summary([r["standard"][k] for r in rows]) for k in METRICS]
        cells += [summary([r["strict"][k] for r in rows]) for k in ("recall@10", "recall@50")]
        # Runs recorded before validation was kept show "–" there.
        valid = [r["valid"] for r in rows if "valid" in r]
        for name in ("recall@10", "strict/recall@10"):
            cells.append(summary([v[name] for v in valid]) if len(valid) == len(rows) else "–")
        minutes = statistics.mean(r["train_minutes"] for r in rows)
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + f" | {minutes:.0f} |")
    return lines


def report() -> str:
    runs = load_record()
    lines = [
        "# STEP ablations on INSPIRED (test; recommendation-only runs, mean ± std over seeds)",
        "",
        "Valid: the kept epoch's validation numbers (choices between rows are made on them).",
        "Train min: the training epochs' wall time (no validation or test), under "
        "whatever else the 2-core machine ran at the time (some runs shared it).",
    ]
    for rec_backbone, name in BACKBONES.items():
        for precision in PRECISIONS:
            if any(r["lm_precision"] == precision and backbone(r) == rec_backbone for r in runs):
                heading = f"{name}, frozen backbones in {precision}:"
                lines += ["", heading, "", *table(runs, precision, rec_backbone)]
    text = "\n".join(lines) + "\n"
    (RESULTS / "step_ablations.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/inspired")
    parser.add_argument("--runs", type=Path, default=Path("runs/step-ablations"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--lm-precision", choices=("auto", *PRECISIONS), default="auto")
    parser.add_argument("--rec-backbone", choices=list(BACKBONES), default="encoder")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    precision = resolve_precision(args.lm_precision)  # rows never mix the two
    if not args.report_only:
        for row in args.rows:  # a row's seeds together: finished rows are complete rows
            for seed in args.seeds:
                run_one(row, seed, precision, args.rec_backbone, args.data_dir, args.runs)
                print(report(), flush=True)
    print(report())


if __name__ == "__main__":
    main()
