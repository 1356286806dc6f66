"""Which item table should the prompt methods score against? A probe without prompts.

    python benchmarks/prompted_head_probe.py [--data-dir ../shared/data/inspired] [--seeds 0 1]

The recommender of UniCRS / STEP on the encoder backbone scores the pooled output of the
prompted all-MiniLM-L6-v2 against an entity table. This probe freezes the *unprompted*
encoder (each validation / training context encoded once) and trains only the scoring
side, so that the item table can be chosen in seconds per epoch, apart from the prompt:

  free          a learned vector and bias per item (the `text` model's linear layer)
  rgcn          UniCRS's entity encoder (node table -> R-GCN -> MLP -> linear) + bias
  names+free    the frozen name vectors (convrec.prompting.entity_names) + free + bias
  names+rgcn    the name vectors + UniCRS's entity encoder + bias (what the models use)
  names only    zero-shot: the cosine of context and title, no training

Validation only (R@10 under both protocols, best epoch and the curve); nothing here reads
the test split. Writes benchmarks/results/prompted_head_probe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convrec.config import build_config
from convrec.graph.encoders import EntityEncoder
from convrec.models.prompted import PromptedLMConfig
from convrec.prompting.entity_names import EntityNames
from convrec.text.dialogue import render_context
from convrec.text.encoder import SentenceEncoder
from convrec.training.run import build_task

RESULTS = Path(__file__).parent / "results"


@torch.no_grad()
def mean_pooled(encoder: SentenceEncoder, samples) -> torch.Tensor:
    """Normalised mean-pooled states of each context (what rec_pooling=mean + normalise
    gives with no prompt)."""
    texts = [render_context(s.context_turns) for s in samples]
    distinct = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(distinct)}
    return F.normalize(encoder.encode(distinct), dim=-1)[[index[t] for t in texts]]


class Head(nn.Module):
    def __init__(self, table: str, task, encoder: SentenceEncoder, dim: int) -> None:
        super().__init__()
        kg = task.kg
        self.register_buffer("items", torch.from_numpy(kg.items))
        self.names = None
        if "names" in table:
            self.names = EntityNames.of_dataset(task.dataset, encoder, dim, 10.0)
        self.graph = None
        if "rgcn" in table:
            self.graph = EntityEncoder(kg, dim // 2, dim, PromptedLMConfig())
        self.free = nn.Parameter(torch.zeros(kg.num_items, dim)) if "free" in table else None
        self.bias = nn.Parameter(torch.zeros(kg.num_items))
        self.dropout = nn.Dropout(0.1)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        rows = torch.zeros(len(self.items), users.shape[1])
        if self.names is not None:
            rows = rows + self.names()[self.items]
        if self.graph is not None:
            rows = rows + self.graph()[self.items]
        if self.free is not None:
            rows = rows + self.free
        return self.dropout(users) @ rows.T + self.bias


def recall_at_10(scores: torch.Tensor, targets: torch.Tensor) -> float:
    return (scores.topk(10).indices == targets[:, None]).any(1).float().mean().item()


def probe(table, task, encoder, data, lr, graph_lr, epochs, seed) -> dict:
    torch.manual_seed(seed)
    head = Head(table, task, encoder, encoder.dim)
    graph = [p for n, p in head.named_parameters() if n.startswith("graph.")]
    rest = [p for n, p in head.named_parameters() if not n.startswith("graph.")]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": lr}, {"params": graph, "lr": graph_lr}])
    (x, y), valid = data["train"], data["valid"]
    curve = []
    for _ in range(epochs if rest + graph else 0):
        head.train()
        for batch in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(head(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            curve.append({p: recall_at_10(head(v[0]), v[1]) for p, v in valid.items()})
    if not curve:
        with torch.no_grad():
            curve.append({p: recall_at_10(head(v[0]), v[1]) for p, v in valid.items()})
    best = max(range(len(curve)), key=lambda e: curve[e]["standard"])
    return {
        "table": table,
        "seed": seed,
        "lr": lr,
        "graph_lr": graph_lr if graph else None,
        "best_epoch": best + 1,
        "valid_recall@10": curve[best]["standard"],
        "valid_strict_recall@10": curve[best]["strict"],
        "curve": [round(c["standard"], 3) for c in curve],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/inspired")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    task = build_task(build_config("unicrs", "inspired", args.data_dir, [])).task
    encoder = SentenceEncoder(max_tokens=128, keep="end")
    targets = {
        "train": task.train,
        "standard": task.eval_samples("valid"),
        "strict": task.eval_samples("valid", "strict"),
    }
    encoded = {
        k: (mean_pooled(encoder, v), torch.from_numpy(task.target_indices(v)))
        for k, v in targets.items()
    }
    data = {"train": encoded["train"], "valid": {p: encoded[p] for p in ("standard", "strict")}}
    runs = [probe("names", task, encoder, data, 1e-2, 1e-2, 0, 0)]
    for seed in args.seeds:
        runs.append(probe("free", task, encoder, data, 1e-2, 1e-2, args.epochs, seed))
        for graph_lr in (1e-2, 1e-3, 3e-4):
            runs.append(probe("rgcn", task, encoder, data, 1e-2, graph_lr, args.epochs, seed))
        runs.append(probe("names+free", task, encoder, data, 1e-2, 1e-2, args.epochs, seed))
        for graph_lr in (1e-3, 3e-4):
            runs.append(probe("names+rgcn", task, encoder, data, 1e-2, graph_lr, args.epochs, seed))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prompted_head_probe.json").write_text(json.dumps(runs, indent=1) + "\n")
    lines = [
        "| item table | seed | lr (graph) | best epoch | valid R@10 | valid strict R@10 | curve |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in runs:
        lrs = f"{r['lr']:g}" + (f" ({r['graph_lr']:g})" if r["graph_lr"] else "")
        lines.append(
            f"| {r['table']} | {r['seed']} | {lrs} | {r['best_epoch']} | "
            f"{r['valid_recall@10']:.3f} | {r['valid_strict_recall@10']:.3f} | "
            f"{' '.join(f'{c:.3f}' for c in r['curve'])} |"
        )
    (RESULTS / "prompted_head_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
