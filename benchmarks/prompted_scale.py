"""UniCRS and STEP at ReDial's scale: build time, name-vector time, step time, peak memory.

    python benchmarks/prompted_scale.py [--data-dir ../shared/data/redial] [--models unicrs step]
        [--steps 3] [override ...]

Builds each model on the ReDial files with its defaults (KGSF relation filter, entity
names on: MiniLM's vector of each of the 64,362 entity names, cached after the first
build) as a recommendation-only run (`model.conversation=false`: the conversation side's
LM is not what grows with the KG), then runs `--steps` optimizer steps of each training
stage on real batches and ranks one batch of test samples over the 6,924-item catalogue.
Each model runs in a fresh process, so its peak RSS is its own. Writes
benchmarks/results/prompted_scale.json. Target: within the machine's 24 GiB (the bar);
tests/test_prompt_scale.py guards the entity side's share in the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/prompted_scale.json"
REDIAL = ["data.options.split_files.train=valid_data.jsonl", "data.test_fraction=0.2"]


def measure(model_name: str, data_dir: str, steps: int, overrides: list[str]) -> dict:
    """One model in this process: timings and peak RSS (run it in a fresh process)."""
    import torch

    from convrec.config import resolve_config
    from convrec.training.run import build_model, build_task

    config = resolve_config(
        model_name, "redial", data_dir, overrides=[*REDIAL, "model.conversation=false", *overrides]
    )
    task = build_task(config).task
    started = time.perf_counter()
    model = build_model(config, task, progress=False)
    build_s = time.perf_counter() - started
    record = {
        "model": model_name,
        "entities": task.kg.num_entities,
        "items": len(task.kg.items),
        "build_s (incl. name vectors unless cached)": round(build_s, 1),
        "batch_size": config.train.batch_size,
    }
    model.train()
    for stage in model.stages():
        if stage.begin is not None:
            stage.begin()
        if stage.epoch_begin is not None:
            stage.epoch_begin(0)
        samples = list(stage.samples())
        parameters = [p for p in (stage.parameters or model.parameters)() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=1e-4)
        size = config.train.batch_size
        seconds = []
        for k in range(steps):
            batch = stage.collate(samples[k * size : (k + 1) * size])
            started = time.perf_counter()
            loss = stage.loss(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - started)
        record[f"{stage.name}_samples"] = len(samples)
        record[f"{stage.name}_step_s"] = [round(s, 2) for s in seconds]
    model.eval()
    test = task.eval_samples("test")[: config.train.eval_batch_size]
    started = time.perf_counter()
    with torch.no_grad():
        scores = model.recommend(model.collate(test))
    record["rank_batch_s"] = round(time.perf_counter() - started, 2)
    record["scores_shape"] = list(scores.shape)
    record["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/redial"))
    parser.add_argument("--models", nargs="+", default=["unicrs", "step"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's model
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.data_dir, args.steps, args.overrides)))
        return
    records = []
    for name in args.models:
        done = subprocess.run(
            [sys.executable, __file__, "--one", name, "--data-dir", args.data_dir,
             "--steps", str(args.steps), *args.overrides],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(record, indent=2))
        records.append(record)
    RESULTS.write_text(
        json.dumps({"machine": describe_machine(), "overrides": args.overrides,
                    "results": records}, indent=2) + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
