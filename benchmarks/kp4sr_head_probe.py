"""Why does KP4SR's item head peak after 2-4 epochs? Head variants on one set of encoder states.

    python benchmarks/kp4sr_head_probe.py [--data-dir ../shared/data/movielens-100k]
        [--seed 0] [--knowledge tree] [--variants default wd0.1 ...]

With `model.backbone=encoder` and `model.training_prompts=fixed` the frozen MiniLM's state
of every training and validation prompt is a function of the prompt alone, so the variants
below, which change only the item head and its optimisation, share one memo of states:
the first variant pays the encoding (minutes), each later one only the head's epochs
(seconds). Every variant is a normal training run of the real model through the real
trainer (early stopping on validation NDCG@10, patience from configs/kp4sr.yaml); nothing
here reads the test split.

  default          configs/kp4sr.yaml (the anchor: equals a `convrec train` run's curve)
  wd0.1            train.weight_decay=0.1 (default 0.01)
  dropout0.3       model.head_dropout=0.3 (default 0.1)
  lr3e-4           train.lr=3e-4 (default 1e-3)
  titles-only      model.item_embedding=false: no free item embedding, items are V t_i + b_i
  titles-only+wd0.1

Writes benchmarks/results/kp4sr_head_probe.json (best epoch, best valid NDCG@10 and the
whole validation curve of each variant).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from convrec.config import resolve_config
from convrec.evaluation.recommendation import validation_metrics
from convrec.models.kp4sr import KP4SR
from convrec.training.run import build_model, build_task
from convrec.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results" / "kp4sr_head_probe.json"

VARIANTS: dict[str, list[str]] = {  # name -> overrides
    "default": [],
    "wd0.1": ["train.weight_decay=0.1"],
    "dropout0.3": ["model.head_dropout=0.3"],
    "lr3e-4": ["train.lr=3e-4"],
    "titles-only": ["model.item_embedding=false"],
    "titles-only+wd0.1": ["model.item_embedding=false", "train.weight_decay=0.1"],
}
# Settings that change the prompts (and so the states) must not differ between variants.
PROMPT_SETTINGS = ("backbone", "encoder", "pool", "item_text", "knowledge", "degree",
                   "hop_num", "max_input_tokens", "history_items", "entity_naming",
                   "training_prompts")  # fmt: skip


def run_variant(
    name: str, args: argparse.Namespace, memo: dict | None, prompts: dict | None
) -> tuple[dict, dict]:
    """Train variant `name`; with a memo from an earlier variant whose prompt settings were
    `prompts`, its states are reused (after checking this variant's prompts are the same)."""
    overrides = VARIANTS[name]
    config = resolve_config(
        "kp4sr",
        "movielens-100k",
        args.data_dir,
        overrides=[f"seed={args.seed}", f"model.knowledge={args.knowledge}", *overrides],
    )
    assert config.model.backbone == "encoder" and config.model.training_prompts == "fixed"
    settings = {k: getattr(config.model, k) for k in PROMPT_SETTINGS}
    assert prompts in (None, settings), f"{name} changes the prompts: states not reusable"
    task = build_task(config).task
    model = build_model(config, task, progress=False)
    assert isinstance(model, KP4SR)
    if memo is not None:
        model.scorer._memo = memo  # the same prompts, so the same states (see PROMPT_SETTINGS)
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = Trainer(
            model,
            config.train,
            seed=config.seed,
            checkpoint_dir=Path(checkpoints),
            validate=lambda m: validation_metrics(m, task, config.train.eval_batch_size),
            progress=False,
        )
        started = time.perf_counter()
        state = trainer.fit()
        seconds = time.perf_counter() - started
    curve = [round(row["valid/ndcg@10"], 4) for row in state.history if "valid/ndcg@10" in row]
    best = max(range(len(curve)), key=curve.__getitem__)
    record = {
        "overrides": overrides,
        "prompt_settings": settings,
        "best_epoch": best + 1,
        "best_valid_ndcg@10": curve[best],
        "valid_ndcg@10_by_epoch": curve,
        "train_losses": [round(row["train_loss"], 4) for row in state.history],
        "seconds": round(seconds, 1),
    }
    return record, model.scorer._memo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/movielens-100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knowledge", default="tree", choices=["tree", "full", "none"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    rows = results.setdefault(f"seed {args.seed}, knowledge {args.knowledge}", {})
    memo = None
    prompts = None
    for name in args.variants:
        record, memo = run_variant(name, args, memo, prompts)
        prompts = record["prompt_settings"]
        rows[name] = record
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(
            f"{name}: best valid NDCG@10 {record['best_valid_ndcg@10']:.4f} at epoch "
            f"{record['best_epoch']} of {len(record['valid_ndcg@10_by_epoch'])} "
            f"({record['seconds']} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
