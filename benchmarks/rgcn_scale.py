"""Time and peak memory of one R-GCN forward + backward over a whole knowledge graph.

    python benchmarks/rgcn_scale.py [--data-root ../shared/data] [--dim 128] [--bases 8]

Each (graph, layer) pair runs in a fresh process (so peak RSS is its own) under an
address-space cap (`--limit-gib`, default 16): a layer that needs more fails with an
allocation error instead of taking the machine down. Layers:

- `convrec`: `convrec.graph.rgcn.RelationalGraphConv` (one sparse product for all bases);
- `pyg`: torch-geometric's `RGCNConv` (a loop over relations, mean aggregation);
- `scatter`: basis decomposition as per-basis gathers + `index_add`;
- `sparse-values`: one sparse [N * B, N] product whose values are the learnable per-edge
  basis coefficients (its backward builds a dense gradient for the values).

The last two are the other obvious O(edges) forms, written here only to be measured.

Graphs: the INSPIRED and ReDial KGs as `kbrd` builds them (inverse edges with the same
relation, self-loops), ReDial also with KGSF's relation filter (`min_relation_edges`
1001). Writes benchmarks/results/rgcn_scale.json. Target (issue 14): forward + backward
over the full ReDial KG under 1 s, peak RSS under 4 GiB, on the 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("convrec", "scatter", "sparse-values", "pyg")
GRAPHS = {  # name: (dataset, folder, min_relation_edges)
    "inspired": ("inspired", "inspired", 0),
    "redial": ("redial", "redial", 0),
    "redial, KGSF filter": ("redial", "redial", 1001),
}


def _edge_coefficients(edges, num_nodes: int):
    """Per edge: relation and 1 / |N_r(target)| (mean aggregation per relation)."""
    src, dst = edges.edge_index
    key = edges.edge_type * num_nodes + dst
    _, group, size = torch.unique(key, return_inverse=True, return_counts=True)
    return src, dst, 1.0 / size[group].float()


class ScatterRGCN(torch.nn.Module):
    """Basis decomposition as B gathers of [E, d] messages and B scatters (for comparison)."""

    def __init__(self, edges, num_nodes: int, dim: int, num_bases: int) -> None:
        super().__init__()
        from torch_geometric.nn import RGCNConv

        self.p = RGCNConv(dim, dim, edges.num_relations, num_bases=num_bases)
        self.src, self.dst, self.norm = _edge_coefficients(edges, num_nodes)
        self.rel = edges.edge_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coef = self.p.comp[self.rel] * self.norm[:, None]  # [E, B]
        out = x @ self.p.root + self.p.bias
        for b in range(coef.shape[1]):
            agg = torch.zeros_like(x).index_add(0, self.dst, x[self.src] * coef[:, b : b + 1])
            out = out + agg @ self.p.weight[b]
        return out


class SparseValuesRGCN(ScatterRGCN):
    """Basis decomposition as one sparse [N * B, N] product whose values are the learnable
    per-edge basis coefficients (for comparison: its backward densifies)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b = x.shape[0], self.p.comp.shape[1]
        coef = self.p.comp[self.rel] * self.norm[:, None]  # [E, B]
        rows = (self.dst[:, None] * b + torch.arange(b)[None, :]).reshape(-1)
        cols = self.src.repeat_interleave(b)
        adjacency = torch.sparse_coo_tensor(torch.stack([rows, cols]), coef.reshape(-1), (n * b, n))
        messages = torch.sparse.mm(adjacency, x).view(n, -1)
        return messages @ self.p.weight.view(-1, x.shape[1]) + x @ self.p.root + self.p.bias


def child(args: argparse.Namespace) -> None:
    """Build one layer on one graph, run warm-up + `repeats` timed passes, print JSON."""
    resource.setrlimit(resource.RLIMIT_AS, (args.limit_gib << 30, args.limit_gib << 30))
    from convrec.data.datasets import load_dataset

    dataset, folder, min_edges = GRAPHS[args.graph]
    kg = load_dataset(dataset, args.data_root / folder).kg
    edges = kg.edges(inverse="same", self_loops=True, min_relation_edges=min_edges)
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.randn(kg.num_entities, args.dim))
    start = time.perf_counter()
    if args.layer == "convrec":
        from convrec.graph.rgcn import RelationalGraphConv

        layer = RelationalGraphConv(edges, kg.num_entities, args.dim, args.dim, args.bases)
        run = lambda: layer(x)  # noqa: E731
    elif args.layer in ("scatter", "sparse-values"):
        kind = ScatterRGCN if args.layer == "scatter" else SparseValuesRGCN
        layer = kind(edges, kg.num_entities, args.dim, args.bases)
        run = lambda: layer(x)  # noqa: E731
    else:
        from torch_geometric.nn import RGCNConv

        layer = RGCNConv(args.dim, args.dim, edges.num_relations, num_bases=args.bases)
        run = lambda: layer(x, edges.edge_index, edges.edge_type)  # noqa: E731
    build = time.perf_counter() - start
    times = []
    try:
        for _ in range(1 + args.repeats):
            start = time.perf_counter()
            run().square().mean().backward()
            times.append(time.perf_counter() - start)
    except (RuntimeError, MemoryError) as e:
        error = str(e).splitlines()[0][:120]
        print(json.dumps({"error": f"failed under a {args.limit_gib} GiB cap: {error}"}))
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(
        json.dumps(
            {
                "entities": kg.num_entities,
                "relations": edges.num_relations,
                "edges": int(edges.edge_type.numel()),
                "build_s": round(build, 3),
                "first_pass_s": round(times[0], 3),
                "fwd_bwd_s": round(statistics.median(times[1:]), 3),
                "peak_rss_gib": round(peak, 2),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])  # type: ignore[union-attr]
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--bases", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-gib", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per layer and graph")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=LAYERS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rgcn_scale.json")
    parser.add_argument("--child", nargs=2, metavar=("GRAPH", "LAYER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.graph, args.layer = args.child
        child(args)
        return

    results = []
    for graph in GRAPHS:
        for layer in args.layers:
            command = [sys.argv[0], "--child", graph, layer]
            for flag in ("data_root", "dim", "bases", "repeats", "limit_gib"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            try:
                done = subprocess.run(
                    [sys.executable, *command],
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                    check=False,
                )
                lines = done.stdout.strip().splitlines()
                row = json.loads(lines[-1]) if lines else {"error": done.stderr[-300:]}
            except subprocess.TimeoutExpired:
                row = {"error": f"did not finish within {args.timeout} s"}
            row = {"graph": graph, "layer": layer, **row}
            print(json.dumps(row), flush=True)
            results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{describe_machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "dim": args.dim,
        "num_bases": args.bases,
        "pass": "forward + backward of one layer over every entity",
    }
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
