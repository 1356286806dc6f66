"""Wall time and peak memory of one `convrec train` run, plus its test metrics.

    python benchmarks/train_time.py --model kbrd --dataset inspired \\
        [--data-dir ../shared/data/inspired] [--seed 0] [--run-dir DIR] [override ...]

Runs the CLI in a child process (so the numbers include start-up, data loading from the
cache, training, validation and the test evaluation) and appends a record to
benchmarks/results/train_time.json. Target (issue 3): kbrd on INSPIRED under 10 minutes on
the project's 2-core CPU machine.

The run's config.yaml and metrics.json (validation history, test results with their CIs,
conversation metrics; not the per-step losses) are kept beside the record, in
benchmarks/results/run-summaries/<record file>/<run name>/, so that `convrec compare` can
rebuild a table from the repository after the run directory is gone:

    convrec compare benchmarks/results/run-summaries/inspired_prompted_time/unicrs-s* \
        --aggregate-seeds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="time one convrec training run")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/train_time.json")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="keep the run here (default: a scratch dir)"
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    data_dir = args.data_dir or ROOT.parent / "shared" / "data" / args.dataset
    loader_dir = None if args.dataset == "demo" else str(data_dir)

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or Path(scratch) / "run"
        command = [
            sys.executable,
            "-m",
            "convrec",
            "train",
            "--model",
            args.model,
            "--dataset",
            args.dataset,
            "--run-dir",
            str(run_dir),
            "--no-progress",
            f"seed={args.seed}",
            *args.overrides,
        ]
        if args.dataset != "demo":
            command[6:6] = ["--data-dir", str(data_dir)]
        # warm the processed-data cache so the timing is of training, not of parsing
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from convrec.data.datasets import load_dataset; "
                f"load_dataset({args.dataset!r}, {loader_dir!r})",
            ],
            check=True,
        )
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        metrics = json.loads((run_dir / "metrics.json").read_text())
        name = run_dir.name if args.run_dir else f"{args.model}-s{args.seed}"
        summary = ROOT / "benchmarks/results/run-summaries" / args.out.stem / name
        keep_summary(run_dir, metrics, summary)

    own = [r for r in metrics["test"] if r["model"] == args.model]
    conversation = metrics.get("conversation")
    record = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "model": args.model,
        "dataset": args.dataset,
        "seed": args.seed,
        "overrides": args.overrides,
        "threads": os.environ.get("OMP_NUM_THREADS", "all"),
        "wall_seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_mib),
        "machine": describe_machine(),
        "epochs_run": len(metrics["history"]),
        "test": {
            r["protocol"]["name"]: {k: round(v["mean"], 4) for k, v in r["metrics"].items()}
            for r in own
        },
        **({"conversation": conversation} if conversation else {}),
        "summary": str(summary.relative_to(ROOT)),
    }
    print(json.dumps(record, indent=2))
    records = json.loads(args.out.read_text()) if args.out.is_file() else []
    records.append(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=2) + "\n")


def keep_summary(run_dir: Path, metrics: dict, summary: Path) -> None:
    """The run's config and metrics (without the per-step losses) under `summary`."""
    summary.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "config.yaml", summary / "config.yaml")
    kept = {k: v for k, v in metrics.items() if k != "step_losses"}
    (summary / "metrics.json").write_text(json.dumps(kept, indent=1) + "\n")


if __name__ == "__main__":
    main()
