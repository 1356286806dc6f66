"""Time reading each real dataset from its files and from the processed-data cache.

    python benchmarks/dataset_load.py [--data-root ../shared/data] [--repeats 5]

Writes benchmarks/results/dataset_load.json. Target (issue 2): INSPIRED from the cache
in under 2 seconds on the project's 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from convrec.data.datasets import get_reader
from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
# A whole new interpreter: imports (torch among them) + fingerprint + unpickle.
FRESH_PROCESS = (
    "from convrec.data.datasets import load_dataset; "
    "load_dataset({name!r}, {data_dir!r}, cache_dir={cache!r})"
)
DATASETS = {"inspired": "inspired", "redial": "redial", "movielens-100k": "movielens-100k"}


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])  # type: ignore[union-attr]
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/dataset_load.json")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, folder in DATASETS.items():
            data_dir = args.data_root / folder
            if not data_dir.is_dir():
                print(f"skip {name}: {data_dir} not found")
                continue
            reader = get_reader(name)(data_dir)
            parse = seconds(reader.read)
            first = seconds(lambda r=reader: r.load(cache_dir=cache))  # parse + write cache
            cached = [
                seconds(lambda n=name, d=data_dir: get_reader(n)(d).load(cache_dir=cache))
                for _ in range(args.repeats)
            ]
            fresh_process = seconds(
                lambda n=name, d=data_dir: subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        FRESH_PROCESS.format(name=n, data_dir=str(d), cache=cache),
                    ],
                    check=True,
                )
            )
            results[name] = {
                "parse_s": round(parse, 3),
                "first_load_with_cache_write_s": round(first, 3),
                "cached_load_median_s": round(statistics.median(cached), 3),
                "cached_load_max_s": round(max(cached), 3),
                "fresh_process_cached_load_s": round(fresh_process, 3),
            }
            print(name, results[name])
    record = {
        "machine": f"{describe_machine()}, {torch.get_num_threads()} torch threads",
        "python": platform.python_version(),
        "repeats": args.repeats,
        "note": "cached load = fingerprint the input files (sha256) + unpickle the processed "
        "data; fresh process adds interpreter start-up and imports",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
