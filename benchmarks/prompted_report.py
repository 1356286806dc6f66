"""Performance figures of a finished prompt-learning run (UniCRS, STEP): samples/s per
stage and chat latency.

    python benchmarks/prompted_report.py --run runs/inspired-unicrs/unicrs-s0 [--turns 100]
    python benchmarks/prompted_report.py --run runs/inspired-step/step-s0

Samples/s per stage and epoch come from the run's metrics.json (measured by the trainer:
training samples over the epoch's wall time, validation excluded). Latency is the wall
time of one `ChatSession.send` (entity linking, recommendation, prompt, greedy decoding
with the KV cache, slot filling) on the first seeker messages of test dialogues, one
message per conversation turn, continuing each dialogue for up to 3 turns. Writes
benchmarks/results/<model>_<dataset>.json (e.g. unicrs_inspired.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from convrec.serving import ChatSession
from convrec.text.lm import pretrain_info
from convrec.training.run import load_run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="default: results/<model>_<dataset>.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metrics = json.loads((args.run / "metrics.json").read_text())
    out = args.out or ROOT / f"benchmarks/results/{metrics['model']}_{metrics['dataset']}.json"
    stages: dict[str, list[float]] = {}
    for row in metrics["history"]:
        if row.get("samples_per_s"):
            stages.setdefault(row["stage"], []).append(row["samples_per_s"])

    _, task, model = load_run(args.run)
    session = ChatSession(model, task)
    messages = [
        [t.text for t in d.turns if t.role == "seeker"][:3] for d in task.dataset.dialogues("test")
    ]
    latencies = []
    for dialogue in messages:
        session.reset()
        for text in dialogue:
            if len(latencies) >= args.turns:
                break
            started = time.perf_counter()
            session.send(text[: session.max_message_chars])
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    lm = pretrain_info(metrics["lm"]) or {}
    record = {
        "run": str(args.run),
        "lm": {k: lm.get(k) for k in ("settings", "parameters", "valid_perplexity")},
        "prompt_parameters": sum(
            p.numel()
            for n, p in model.named_parameters()
            if not n.startswith(("backbone.", "encoder."))
        ),
        "train_samples_per_s": {
            stage: {"median": statistics.median(v), "epochs": len(v)} for stage, v in stages.items()
        },
        "lm_pretrain_tokens_per_s": lm.get("train_tokens_per_s"),
        "chat_latency_s": {
            "turns": len(latencies),
            "median": round(statistics.median(latencies), 3),
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        },
        "test_evaluation_seconds": metrics.get("conversation", {}).get("seconds"),
        "threads": args.threads,
    }
    print(json.dumps(record, indent=2))
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
