"""How much of a trained STEP recommender's prompt depends on the context.

    python benchmarks/step_prompt_diagnostics.py --run runs/inspired-step/step-s0 [--samples 128]

On validation contexts: the fused queries Z (size, and spread across contexts), the
per-layer key prefix built from [P_rec ; Z] (size and spread), and what happens to the
item scores and top-10 lists when Z is replaced by zeros. A prompt whose spread across
contexts is a small fraction of its size acts like a constant learned prefix.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from convrec.training.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=128)
    args = parser.parse_args()
    _, task, model = load_run(args.run)
    batch = model.collate(task.eval_samples("valid")[: args.samples])
    with torch.no_grad():
        out, _ = model.rec_side(batch, model._token_states(batch))
        z = model.rec_side.prompt(out)  # what the prefix reads (model.prompt_queries)
        prompt = torch.cat([model.rec_prefix(z.shape[0]), z], dim=1)
        keys = torch.stack([key for key, _ in model.rec_projection(prompt)])
        scores = model.recommend(batch)
        encode = model.rec_side.forward

        def without_z(batch, token_states):
            fused, table = encode(batch, token_states)
            fused.queries = torch.zeros_like(fused.queries)
            fused.raw_queries = torch.zeros_like(fused.raw_queries)
            return fused, table

        model.rec_side.forward = without_z
        zeroed = model.recommend(batch)
    top = scores.topk(10).indices
    overlap = (top[:, :, None] == zeroed.topk(10).indices[:, None, :]).any(-1).float().mean()
    record = {
        "run": str(args.run),
        "samples": z.shape[0],
        "z_abs_mean": z.abs().mean().item(),
        "z_std_across_contexts": z.std(dim=0).mean().item(),
        "prefix_key_abs_mean": keys.abs().mean().item(),
        "prefix_key_std_across_contexts": keys.std(dim=1).mean().item(),
        "score_std": scores.std().item(),
        "score_change_without_z": (scores - zeroed).abs().mean().item(),
        "top10_overlap_without_z": overlap.item(),
    }
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
