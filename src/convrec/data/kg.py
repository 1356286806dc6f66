"""The knowledge graph: entities, relations, triples and the recommendable item catalogue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

SELF_LOOP = "self_loop"
InverseMode = Literal["none", "same", "new"]


@dataclass(frozen=True)
class KGEdges:
    """Edge tensors in torch-geometric layout (`RGCNConv(x, edge_index, edge_type)`)."""

    edge_index: torch.Tensor  # [2, E] long: source, target
    edge_type: torch.Tensor  # [E] long
    num_relations: int
    relation_names: tuple[str, ...]


class KnowledgeGraph:
    """Entities and relations with dense integer ids, triples, and the item catalogue.

    Ids are deterministic: either given by the source files (dense 0..n-1, as UniCRS and
    KGSF publish them, so that their ids stay valid) or, via `from_named_triples`, the
    position in the sorted list of names. Nothing depends on set iteration order.
    The catalogue (`items`) is the sorted array of entity ids that can be recommended;
    `item_index[entity_id]` gives an item's catalogue position, or -1.
    """

    def __init__(
        self,
        entities: Sequence[str],
        relations: Sequence[str],
        triples: np.ndarray | Sequence[tuple[int, int, int]],
        items: Iterable[int],
    ) -> None:
        self.entities: tuple[str, ...] = tuple(entities)
        self.relations: tuple[str, ...] = tuple(relations)
        self._entity_ids = {name: i for i, name in enumerate(self.entities)}
        if len(self._entity_ids) != len(self.entities):
            raise ValueError("entity names must be unique")
        if len(set(self.relations)) != len(self.relations):
            raise ValueError("relation names must be unique")

        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        if len(triples):
            if triples[:, [0, 2]].min() < 0 or triples[:, [0, 2]].max() >= self.num_entities:
                raise ValueError("a triple refers to an entity id outside the graph")
            if triples[:, 1].min() < 0 or triples[:, 1].max() >= self.num_relations:
                raise ValueError("a triple refers to a relation id outside the graph")
        # Sorted and duplicate-free, so equal inputs give byte-identical graphs.
        self.triples: np.ndarray = np.unique(triples, axis=0)

        self.items: np.ndarray = np.unique(np.fromiter(items, dtype=np.int64))
        if len(self.items) and (self.items[0] < 0 or self.items[-1] >= self.num_entities):
            raise ValueError("an item id is not an entity of the graph")
        self._index_items()

    def _index_items(self) -> None:
        self.item_index: np.ndarray = np.full(self.num_entities, -1, dtype=np.int64)
        self.item_index[self.items] = np.arange(len(self.items))

    @classmethod
    def from_named_triples(
        cls,
        triples: Iterable[tuple[str, str, str]],
        items: Iterable[str],
        extra_entities: Iterable[str] = (),
    ) -> KnowledgeGraph:
        """Build a graph from (head, relation, tail) names; ids are sorted-name positions."""
        named = np.array(list(triples), dtype=str).reshape(-1, 3)
        item_names = np.array(list(items), dtype=str)
        extra = np.array(list(extra_entities), dtype=str)
        # np.unique sorts by code point, exactly as `sorted` does for str.
        entities, entity_ids = np.unique(
            np.concatenate([named[:, 0], named[:, 2], item_names, extra]), return_inverse=True
        )
        relations, relation_ids = np.unique(named[:, 1], return_inverse=True)
        n = len(named)
        ids = np.stack([entity_ids[:n], relation_ids, entity_ids[n : 2 * n]], axis=1)
        return cls(
            entities.tolist(), relations.tolist(), ids, entity_ids[2 * n : 2 * n + len(item_names)]
        )

    # -- sizes and lookups -------------------------------------------------------------

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def num_triples(self) -> int:
        return len(self.triples)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def entity_id(self, name: str) -> int:
        try:
            return self._entity_ids[name]
        except KeyError:
            raise KeyError(f"unknown entity {name!r} (the graph has {self.num_entities})") from None

    def get_entity_id(self, name: str) -> int | None:
        return self._entity_ids.get(name)

    def is_item(self, entity_id: int) -> bool:
        return bool(self.item_index[entity_id] >= 0)

    def label(self, entity_id: int) -> str:
        """A readable label: the last path segment of a URI, underscores as spaces."""
        name = self.entities[entity_id].strip("<>")
        return name.rsplit("/", 1)[-1].replace("_", " ")

    # -- tensors for graph encoders ----------------------------------------------------

    def edges(
        self,
        inverse: InverseMode = "none",
        self_loops: bool = False,
        min_relation_edges: int = 0,
    ) -> KGEdges:
        """Edge tensors for torch-geometric.

        inverse: "none" keeps the triples' direction; "same" adds each tail -> head edge with
        the same relation (UniCRS, KBRD); "new" gives inverses their own relation ids
        `r + num_relations`, named `"inverse:" + name` (R-GCN).
        self_loops: add an edge e -> e for every entity, with the graph's own `self_loop`
        relation when it has one, else a new relation appended last.
        min_relation_edges: KGSF's relation filter. Relations with fewer edges (counted in
        the edge list built so far, inverses included) are dropped with their edges and the
        rest renumbered in order; the self-loop relation is always kept. KGSF and CRSLab
        keep `relation_cnt > 1000` over both directions: `inverse="same"`,
        `min_relation_edges=1001`.
        """
        head, rel, tail = self.triples[:, 0], self.triples[:, 1], self.triples[:, 2]
        names = list(self.relations)
        parts = [np.stack([head, tail, rel], axis=1)]
        if inverse == "same":
            parts.append(np.stack([tail, head, rel], axis=1))
        elif inverse == "new":
            parts.append(np.stack([tail, head, rel + self.num_relations], axis=1))
            names += [f"inverse:{name}" for name in self.relations]
        elif inverse != "none":
            raise ValueError(f"inverse must be 'none', 'same' or 'new', not {inverse!r}")
        if self_loops:
            if SELF_LOOP in self.relations:
                loop_id = self.relations.index(SELF_LOOP)
            else:
                loop_id = len(names)
                names.append(SELF_LOOP)
            every = np.arange(self.num_entities, dtype=np.int64)
            parts.append(np.stack([every, every, np.full_like(every, loop_id)], axis=1))
        edges = np.unique(np.concatenate(parts), axis=0)
        if min_relation_edges > 0:
            counts = np.bincount(edges[:, 2], minlength=len(names))
            keep = counts >= min_relation_edges
            if self_loops:
                keep[loop_id] = True
            new_id = np.cumsum(keep) - 1
            edges = edges[keep[edges[:, 2]]]
            edges[:, 2] = new_id[edges[:, 2]]
            names = [name for name, kept in zip(names, keep, strict=True) if kept]
        return KGEdges(
            edge_index=torch.from_numpy(np.ascontiguousarray(edges[:, :2].T)),
            edge_type=torch.from_numpy(np.ascontiguousarray(edges[:, 2])),
            num_relations=len(names),
            relation_names=tuple(names),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KnowledgeGraph):
            return NotImplemented
        return (
            self.entities == other.entities
            and self.relations == other.relations
            and np.array_equal(self.triples, other.triples)
            and np.array_equal(self.items, other.items)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"KnowledgeGraph(entities={self.num_entities}, relations={self.num_relations}, "
            f"triples={self.num_triples}, items={self.num_items})"
        )

    # Pickle only the defining (already validated, sorted) arrays; lookups are rebuilt on
    # load without repeating the validation and sorting.
    def __getstate__(self) -> dict:
        return {
            "entities": self.entities,
            "relations": self.relations,
            "triples": self.triples,
            "items": self.items,
        }

    def __setstate__(self, state: dict) -> None:
        self.entities = state["entities"]
        self.relations = state["relations"]
        self.triples = state["triples"]
        self.items = state["items"]
        self._entity_ids = {name: i for i, name in enumerate(self.entities)}
        self._index_items()
