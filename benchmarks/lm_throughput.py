"""Training throughput of GPT-2 sizes on this CPU: the numbers behind the compact LM's size.

    python benchmarks/lm_throughput.py [--threads 2] [--steps 4]

For each size, batch 16 x 128 tokens, fp32:
- `lm_train_tokens_per_s`: full LM training (output layer over the 50k-token vocabulary,
  AdamW) — what `convrec lm pretrain` does;
- `frozen_prefix_tokens_per_s`: forward + backward through the frozen body to an input
  (no weight gradients) — what prefix-tuning stages (UniCRS, STEP, MSCRS) pay per token.
Writes benchmarks/results/lm_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from convrec.text.lm import CompactLMConfig, build_causal_lm
from convrec.text.tokenizer import load_tokenizer
from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(2, 128, 2), (4, 256, 4), (6, 384, 6), (12, 768, 12)]  # 12 x 768 = DialoGPT-small


def measure(layers: int, width: int, heads: int, steps: int, batch: int, length: int) -> dict:
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    lm = build_causal_lm(
        CompactLMConfig(n_layer=layers, n_embd=width, n_head=heads, dropout=0.0), tokenizer
    )
    ids = torch.randint(0, 50000, (batch, length))
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    for step in range(steps + 1):  # the first step warms up
        if step == 1:
            started = time.perf_counter()
        logits = lm(input_ids=ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train_rate = steps * batch * length / (time.perf_counter() - started)

    lm.requires_grad_(False)
    delta = torch.zeros(batch, length, width, requires_grad=True)
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        embeds = lm.get_input_embeddings()(ids) + delta
        lm.base_model(inputs_embeds=embeds).last_hidden_state[:, -1].sum().backward()
    frozen_rate = steps * batch * length / (time.perf_counter() - started)
    return {
        "n_layer": layers,
        "n_embd": width,
        "n_head": heads,
        "parameters": sum(p.numel() for p in lm.parameters()),
        "lm_train_tokens_per_s": round(train_rate),
        "frozen_prefix_tokens_per_s": round(frozen_rate),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/lm_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(*size, args.steps, 16, 128) for size in SIZES]
    for row in rows:
        print(json.dumps(row))
    record = {
        "machine": f"{describe_machine()}, {args.threads} threads",
        "torch": torch.__version__,
        "batch": "16 x 128 tokens, fp32",
        "sizes": rows,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
