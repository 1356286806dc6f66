"""Knowledge-graph entity encoders shared by the prompt-learning methods.

`EntityEncoder` is UniCRS's (and MSCRS's and STEP's) KG side: a learnable node table goes
through one R-GCN layer (`convrec.graph.rgcn`, basis decomposition) with a residual
connection, then a residual two-layer MLP, then a linear map to the width the consumer
needs (the LM hidden size)::

    h0 = node table                                 [num_entities, d_e]  (Xavier uniform)
    h1 = RGCN(h0, KG) + h0
    h2 = h1 + MLP(h1)                               d_e -> d_e/2 -> d_e
    out = W h2                                      [num_entities, d_out]

The R-GCN runs over the whole graph on every call, so an entity that no training dialogue
mentions is still embedded through its neighbours.
"""

from __future__ import annotations

import torch
from torch import nn

from convrec.data.kg import KnowledgeGraph
from convrec.graph.rgcn import GraphSettings, RelationalGraphConv


class ResidualMLP(nn.Module):
    """x + W2 relu(W1 x): the reparameterisation UniCRS uses on every projection."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(dim // 2, 1)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class EntityEncoder(nn.Module):
    def __init__(self, kg: KnowledgeGraph, dim: int, out_dim: int, graph: GraphSettings) -> None:
        super().__init__()
        self.nodes = nn.Parameter(torch.empty(kg.num_entities, dim))
        nn.init.xavier_uniform_(self.nodes)
        self.rgcn = RelationalGraphConv.for_graph(kg, graph, dim)
        self.mlp = ResidualMLP(dim)
        self.proj = nn.Linear(dim, out_dim)

    def forward(self) -> torch.Tensor:
        """Embeddings of every entity [num_entities, out_dim]."""
        h = self.rgcn(self.nodes) + self.nodes
        return self.proj(self.mlp(h))
