from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from convrec.data.kg import KnowledgeGraph

TRIPLES = [
    ("movie:b", "genre", "genre:drama"),
    ("movie:a", "genre", "genre:comedy"),
    ("movie:a", "director", "person:x"),
]


def test_ids_are_sorted_names_whatever_the_input_order():
    kg1 = KnowledgeGraph.from_named_triples(TRIPLES, items=["movie:b", "movie:a"])
    kg2 = KnowledgeGraph.from_named_triples(TRIPLES[::-1], items=["movie:a", "movie:b"])
    assert kg1 == kg2
    assert kg1.entities == ("genre:comedy", "genre:drama", "movie:a", "movie:b", "person:x")
    assert kg1.relations == ("director", "genre")
    assert kg1.items.tolist() == [2, 3]
    assert kg1.item_index.tolist() == [-1, -1, 0, 1, -1]
    # movie:a -director-> person:x is (2, 0, 4)
    assert [2, 0, 4] in kg1.triples.tolist()


def test_duplicate_triples_are_removed_and_bad_ids_rejected():
    kg = KnowledgeGraph(["a", "b"], ["r"], [(0, 0, 1), (0, 0, 1)], items=[1])
    assert kg.num_triples == 1
    with pytest.raises(ValueError, match="entity id outside"):
        KnowledgeGraph(["a", "b"], ["r"], [(0, 0, 2)], items=[])
    with pytest.raises(ValueError, match="relation id outside"):
        KnowledgeGraph(["a", "b"], ["r"], [(0, 1, 1)], items=[])
    with pytest.raises(ValueError, match="not an entity"):
        KnowledgeGraph(["a", "b"], ["r"], [], items=[5])


def test_edges_inverse_modes_and_self_loops():
    kg = KnowledgeGraph(["a", "b", "c"], ["likes", "knows"], [(0, 0, 1), (1, 1, 2)], items=[2])
    plain = kg.edges()
    assert plain.edge_index.tolist() == [[0, 1], [1, 2]]
    assert plain.edge_type.tolist() == [0, 1]
    assert plain.num_relations == 2

    same = kg.edges(inverse="same")
    pairs = set(zip(*same.edge_index.tolist(), same.edge_type.tolist(), strict=True))
    assert pairs == {(0, 1, 0), (1, 0, 0), (1, 2, 1), (2, 1, 1)}
    assert same.num_relations == 2

    new = kg.edges(inverse="new", self_loops=True)
    pairs = set(zip(*new.edge_index.tolist(), new.edge_type.tolist(), strict=True))
    assert new.relation_names == ("likes", "knows", "inverse:likes", "inverse:knows", "self_loop")
    assert pairs == {(0, 1, 0), (1, 2, 1), (1, 0, 2), (2, 1, 3), (0, 0, 4), (1, 1, 4), (2, 2, 4)}
    assert new.edge_index.dtype == torch.long and new.edge_type.dtype == torch.long


def test_existing_self_loop_relation_is_reused():
    kg = KnowledgeGraph(["a", "b"], ["r", "self_loop"], [(0, 0, 1), (0, 1, 0)], items=[])
    edges = kg.edges(self_loops=True)
    assert edges.num_relations == 2
    pairs = set(zip(*edges.edge_index.tolist(), edges.edge_type.tolist(), strict=True))
    assert pairs == {(0, 1, 0), (0, 0, 1), (1, 1, 1)}


def test_pickle_round_trip_and_lookups():
    kg = KnowledgeGraph.from_named_triples(TRIPLES, items=["movie:a"])
    back = pickle.loads(pickle.dumps(kg))
    assert back == kg
    assert back.entity_id("movie:a") == 2
    assert np.array_equal(back.item_index, kg.item_index)
    with pytest.raises(KeyError, match="unknown entity"):
        kg.entity_id("movie:zzz")
    assert KnowledgeGraph(["<http://dbpedia.org/resource/Knives_Out>"], [], [], []).label(0) == (
        "Knives Out"
    )
