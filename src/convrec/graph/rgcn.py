"""A relational graph convolution (R-GCN) whose memory grows with edges, not relations.

Schlichtkrull et al. 2018, with basis decomposition and mean aggregation per relation:
the layer computes what torch-geometric's `RGCNConv(aggr="mean", num_bases=B)` computes,
with the same parameters (names, shapes, initialisation), so its checkpoints load::

    W_r   = sum_b comp[r, b] V_b                                 V: [B, d_in, d_out]
    out_i = sum_r h_ir W_r  +  x_i root  +  bias,     h_ir = mean_{j in N_r(i)} x_j

`RGCNConv` loops over relations with a full [num_entities, d] activation per relation
kept for backward: 430 of them on ReDial's KG (64k entities), more than 24 GiB. Here
h_ir exists only for the (target, relation) groups that have edges (230k on ReDial, fewer
than the edges): one constant sparse product gives all of them, one small matmul per
relation maps them, one `index_add` sums them per target. Memory is O((edges + groups)
x d); nothing is [relations, entities, d]. The measurement that chose this form (against
`RGCNConv`, per-basis scatters and a sparse product with learnable per-basis values) is
`benchmarks/rgcn_scale.py`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import nn

from convrec.data.kg import InverseMode, KGEdges, KnowledgeGraph
from convrec.settings import Settings


class GraphSettings(Settings):
    """How a model turns the KG into R-GCN edges; shared by every KG model's config."""

    num_bases: int = Field(8, ge=1, description="R-GCN basis decomposition: shared weight bases")
    inverse_edges: InverseMode = Field(
        "same",
        description="add tail->head edges: 'same' relation (CRSLab, UniCRS), 'new' relation "
        "ids (R-GCN paper), or 'none'",
    )
    self_loops: bool = Field(True, description="add an e->e edge per entity, as CRSLab does")
    min_relation_edges: int = Field(
        0,
        ge=0,
        description="KGSF's relation filter: drop relations with fewer edges (inverses "
        "counted); KGSF/CRSLab use 1001 on ReDial, 0 keeps every relation",
    )

    def graph_edges(self, kg: KnowledgeGraph) -> KGEdges:
        return kg.edges(
            inverse=self.inverse_edges,
            self_loops=self.self_loops,
            min_relation_edges=self.min_relation_edges,
        )


def _glorot(tensor: torch.Tensor) -> None:
    """torch-geometric's `glorot`: uniform in +-sqrt(6 / (fan_in + fan_out)) of the last two
    dimensions, so that the same seed gives the same weights as `RGCNConv`."""
    bound = math.sqrt(6.0 / (tensor.size(-2) + tensor.size(-1)))
    with torch.no_grad():
        tensor.uniform_(-bound, bound)


class RelationalGraphConv(nn.Module):
    """One R-GCN layer over a fixed graph: `forward(x [N, d_in]) -> [N, d_out]`.

    `RelationalGraphConv.for_graph(kg, settings, dim)` builds it as a model's config says.

    The graph is given once (`KGEdges`); its sparse structure is derived here and kept in
    non-persistent buffers, so checkpoints hold only `weight`, `comp`, `root`, `bias`.
    """

    def __init__(
        self, edges: KGEdges, num_nodes: int, in_dim: int, out_dim: int, num_bases: int
    ) -> None:
        super().__init__()
        self.num_nodes, self.in_dim, self.out_dim = num_nodes, in_dim, out_dim
        self.num_relations, self.num_bases = edges.num_relations, num_bases
        self.weight = nn.Parameter(torch.empty(num_bases, in_dim, out_dim))
        self.comp = nn.Parameter(torch.empty(edges.num_relations, num_bases))
        self.root = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(out_dim))
        self.reset_parameters()

        src = edges.edge_index[0].numpy()
        dst = edges.edge_index[1].numpy()
        rel = edges.edge_type.numpy()
        # Groups (relation, target), numbered in sorted order, so each relation's groups
        # are one contiguous block.
        keys, group, size = np.unique(
            rel * num_nodes + dst, return_inverse=True, return_counts=True
        )
        group = group.reshape(-1)
        group_relation, group_target = keys // num_nodes, keys % num_nodes
        present, block = np.unique(group_relation, return_counts=True)
        order = np.lexsort((src, group))
        # Kept as dense buffers and made sparse in `forward`: sparse buffers move with
        # `.to()` but cannot be broadcast by DistributedDataParallel.
        self.register_buffer(
            "mean_index", torch.from_numpy(np.stack([group[order], src[order]])), persistent=False
        )
        self.register_buffer(
            "mean_value", torch.from_numpy(1.0 / size[group[order]]).float(), persistent=False
        )
        self.num_groups = len(keys)
        self.register_buffer("group_target", torch.from_numpy(group_target), persistent=False)
        self.register_buffer("block_relation", torch.from_numpy(present), persistent=False)
        self.block_sizes = block.tolist()

    @classmethod
    def for_graph(
        cls, kg: KnowledgeGraph, settings: GraphSettings, dim: int
    ) -> RelationalGraphConv:
        """A dim -> dim layer over `kg`'s edges as `settings` build them."""
        return cls(settings.graph_edges(kg), kg.num_entities, dim, dim, settings.num_bases)

    def reset_parameters(self) -> None:
        _glorot(self.weight)
        _glorot(self.comp)
        _glorot(self.root)
        nn.init.zeros_(self.bias)

    def mean_in_group(self) -> torch.Tensor:
        """[groups, N], sparse: row g averages the sources of group g's edges."""
        return torch.sparse_coo_tensor(
            self.mean_index,
            self.mean_value,
            (self.num_groups, self.num_nodes),
            is_coalesced=True,  # edges are unique, and sorted by (group, source) above
            check_invariants=False,
        )

    def relation_weights(self) -> torch.Tensor:
        """W_r for every relation with edges: [relations present, d_in, d_out]."""
        bases = self.weight.view(self.num_bases, -1)
        return (self.comp[self.block_relation] @ bases).view(-1, self.in_dim, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()  # sparse products have no bfloat16 kernels on the CPU
        means = torch.sparse.mm(self.mean_in_group(), x)  # [groups, d_in]
        blocks = means.split(self.block_sizes)
        messages = torch.cat([h @ w for h, w in zip(blocks, self.relation_weights(), strict=True)])
        out = x.new_zeros(self.num_nodes, self.out_dim).index_add(0, self.group_target, messages)
        return out + x @ self.root + self.bias

    def extra_repr(self) -> str:
        return (
            f"{self.in_dim}, {self.out_dim}, num_relations={self.num_relations}, "
            f"num_bases={self.num_bases}, nodes={self.num_nodes}, "
            f"groups={len(self.group_target)}"
        )
