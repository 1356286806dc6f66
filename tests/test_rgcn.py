"""The scalable R-GCN layer: equal to torch-geometric's RGCNConv, and bounded at ReDial's scale."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch_geometric.nn import RGCNConv

from convrec.data.datasets import load_dataset
from convrec.data.kg import KGEdges, KnowledgeGraph
from convrec.graph.rgcn import GraphSettings, RelationalGraphConv
from tests.conftest import random_kg, run_guard, shared_dataset


def assert_same_as_rgcnconv(edges: KGEdges, num_nodes: int, dim: int, bases: int) -> None:
    torch.manual_seed(3)
    reference = RGCNConv(dim, dim, edges.num_relations, num_bases=bases)
    torch.manual_seed(3)
    layer = RelationalGraphConv(edges, num_nodes, dim, dim, bases)
    # Same seed, same initial weights: a run's numbers do not move with the swap.
    for name, value in reference.state_dict().items():
        assert torch.equal(layer.state_dict()[name], value), name
    x = torch.randn(num_nodes, dim, requires_grad=True)
    expected = reference(x, edges.edge_index, edges.edge_type)
    got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    loss_ref = (expected * torch.linspace(-1, 1, dim)).square().sum()
    loss = (got * torch.linspace(-1, 1, dim)).square().sum()
    params = ("weight", "comp", "root", "bias")
    want = torch.autograd.grad(loss_ref, [x, *(getattr(reference, p) for p in params)])
    have = torch.autograd.grad(loss, [x, *(getattr(layer, p) for p in params)])
    for name, g_ref, g in zip(("x", *params), want, have, strict=True):
        scale = g_ref.abs().max().clamp_min(1e-6)
        assert ((g - g_ref).abs().max() / scale) < 1e-4, name


@pytest.mark.parametrize("inverse", ["same", "new", "none"])
def test_equals_rgcnconv_on_a_small_graph(inverse):
    # 7 relations over 40 nodes: parallel edges of several relations between one pair,
    # relations without edges, nodes without in-edges.
    kg = random_kg(entities=40, relations=7, triples=150)
    edges = kg.edges(inverse=inverse, self_loops=inverse != "none")
    assert_same_as_rgcnconv(edges, kg.num_entities, dim=12, bases=3)


def test_equals_rgcnconv_on_the_inspired_kg():
    kg = load_dataset("inspired", shared_dataset("inspired")).kg
    edges = GraphSettings().graph_edges(kg)
    assert_same_as_rgcnconv(edges, kg.num_entities, dim=16, bases=8)


def test_loads_an_rgcnconv_state_dict_and_keeps_the_graph_out_of_it():
    kg = random_kg(entities=30, relations=4, triples=80)
    edges = kg.edges(inverse="same", self_loops=True)
    layer = RelationalGraphConv(edges, kg.num_entities, 8, 8, 2)
    reference = RGCNConv(8, 8, edges.num_relations, num_bases=2)
    layer.load_state_dict(reference.state_dict())  # strict: the same keys and shapes
    assert set(layer.state_dict()) == {"weight", "comp", "root", "bias"}


def test_relation_filter_drops_rare_relations_and_renumbers():
    # r0: 3 triples, r1: 1 triple, r2: 2 triples; with inverses: 6, 2, 4 edges.
    triples = [(0, 0, 1), (1, 0, 2), (2, 0, 3), (0, 1, 3), (1, 2, 3), (3, 2, 0)]
    kg = KnowledgeGraph(["a", "b", "c", "d"], ["r0", "r1", "r2"], triples, items=[0])
    edges = kg.edges(inverse="same", self_loops=True, min_relation_edges=4)
    assert edges.relation_names == ("r0", "r2", "self_loop")
    assert edges.num_relations == 3
    counts = np.bincount(edges.edge_type.numpy(), minlength=3).tolist()
    assert counts == [6, 4, 4]  # the self-loop relation is kept whatever its size
    kept = set(zip(*edges.edge_index.tolist(), edges.edge_type.tolist(), strict=True))
    # a -> d had r1 and r2 (the inverse of d -r2-> a); only r2 remains, renumbered 1.
    assert {e for e in kept if e[:2] == (0, 3)} == {(0, 3, 1)}
    unfiltered = kg.edges(inverse="same", self_loops=True)
    assert unfiltered.num_relations == 4
    at_least_one = kg.edges(inverse="same", self_loops=True, min_relation_edges=1)
    assert torch.equal(at_least_one.edge_index, unfiltered.edge_index)
    assert torch.equal(at_least_one.edge_type, unfiltered.edge_type)


# A forward + backward on a synthetic graph of ReDial's size, in a fresh process (its own
# peak RSS) under an address-space cap, so that a layer that is O(relations x entities x d)
# fails here instead of exhausting the machine. Measured: ~1.1 GiB (benchmarks/rgcn_scale).
SCALE_GUARD = textwrap.dedent(
    """
    import json, resource, sys
    cap = 6 << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch
    from convrec.graph.rgcn import GraphSettings, RelationalGraphConv
    from tests.conftest import random_kg
    n = 64_362
    kg = random_kg(entities=n, relations=214, triples=165_696)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    layer = RelationalGraphConv.for_graph(kg, GraphSettings(num_bases=8), 128)
    x = torch.nn.Parameter(torch.randn(n, 128))
    layer(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"relations": layer.num_relations, "delta_gib": (after - before) / 2**20}))
    """
)


def test_redial_scale_forward_backward_stays_within_memory_bound():
    result = run_guard(SCALE_GUARD)
    assert result["relations"] == 215  # 214 + self-loop: nothing was filtered away
    assert result["delta_gib"] < 2.0, result
