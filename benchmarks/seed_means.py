"""Mean ± sample std over seeds of the test metrics that train_time.py recorded.

    python benchmarks/seed_means.py benchmarks/results/inspired_prompted_time.json \\
        [--metrics recall@1 recall@10 recall@50 ndcg@10 mrr@10]

Works from the records alone, so it covers runs whose directories are gone (records made
before run summaries were kept; with summaries, `convrec compare --aggregate-seeds` on
benchmarks/results/run-summaries/ gives the same means plus bootstrap CIs). Records of one
model with the same overrides form a row; of several records of one seed, the latest counts.
Records hold means rounded to 4 digits, so a last digit can differ from `convrec compare`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

PROTOCOLS = ("standard", "strict")


def seed_rows(records: list[dict], metrics: list[str]) -> list[list[str]]:
    """One row per (model, overrides): model, seeds, then protocol x metric cells."""
    latest: dict[tuple[str, str, int], dict] = {}
    for record in records:  # in the order recorded: a later record of a seed replaces it
        key = (record["model"], json.dumps(record["overrides"]), record["seed"])
        latest[key] = record
    groups: dict[tuple[str, str], list[dict]] = {}
    for (model, overrides, _), record in latest.items():
        groups.setdefault((model, overrides), []).append(record)
    rows = []
    for (model, _), runs in groups.items():
        runs.sort(key=lambda r: r["seed"])
        cells = []
        for protocol in PROTOCOLS:
            for metric in metrics:
                values = [r["test"][protocol][metric] for r in runs]
                cell = f"{statistics.fmean(values):.3f}"
                if len(values) > 1:
                    cell += f" ± {statistics.stdev(values):.3f}"
                cells.append(cell)
        rows.append([model, ",".join(str(r["seed"]) for r in runs), *cells])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument(
        "--metrics", nargs="+", default=["recall@1", "recall@10", "recall@50", "ndcg@10"]
    )
    args = parser.parse_args()
    records = json.loads(args.records.read_text())
    header = ["model", "seeds"] + [f"{p} {m}" for p in PROTOCOLS for m in args.metrics]
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "---:|" * (len(header) - 2))
    for row in seed_rows(records, args.metrics):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
