"""What the knowledge graph says about an item, phrased for people.

A chat reply and a recommendation card show an item's director, genre, cast, ...: the
item's outgoing KG edges, with readable relation and entity names (DBpedia URIs and the
demo world's `genre:war` style names both become plain words). A ranking-only model's
reply says why it recommends an item when the item shares an entity with the
conversation ("Rollercoaster (1977) is directed by James Goldstone.").
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from convrec.data.schema import ConversationDataset

# Relations shown first on a card, in this order; the others follow in the graph's order.
PREFERRED_RELATIONS = ("director", "genre", "starring", "writer", "decade", "music composer")
# How a shared entity explains a recommendation; {title} is the item, {entity} the entity.
REASONS = {
    "director": "{title} is directed by {entity}.",
    "starring": "{entity} stars in {title}.",
    "genre": "{title} is a {entity} movie as well.",
    "writer": "{title} was written by {entity}.",
    "music composer": "{title} has music by {entity}.",
    "decade": "{title} is from the {entity} too.",
}
GENERIC_REASON = "{title} has {entity} ({relation}) too."
_KIND_PREFIX = re.compile(r"^[a-z_]+:(?=\S)")  # the demo world's "genre:war", "person:..."
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


@dataclass(frozen=True)
class Fact:
    relation: str  # readable: "director", "music composer"
    entity: int  # KG entity id
    label: str  # readable entity name


def readable_relation(name: str) -> str:
    """`<http://dbpedia.org/ontology/musicComposer>` -> "music composer"."""
    name = name.strip("<>").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    return _CAMEL.sub(" ", name).replace("_", " ").lower()


class ItemFacts:
    """The readable facts of every catalogue item, from one sort of the KG's triples."""

    def __init__(self, dataset: ConversationDataset, per_relation: int = 3) -> None:
        self.dataset = dataset
        self.per_relation = per_relation
        kg = dataset.kg
        triples = kg.triples[kg.triples[:, 0] != kg.triples[:, 2]]  # no self-loops
        order = np.argsort(triples[:, 0], kind="stable")
        self._triples = triples[order]
        self._relations = [readable_relation(r) for r in kg.relations]
        rank = {r: i for i, r in enumerate(PREFERRED_RELATIONS)}
        self._relation_rank = np.array(
            [rank.get(r, len(rank)) for r in self._relations], dtype=np.int64
        )

    def label(self, entity: int) -> str:
        if self.dataset.kg.is_item(entity):
            return self.dataset.item_title(entity)
        return _KIND_PREFIX.sub("", self.dataset.kg.label(entity))

    def _edges(self, item: int) -> list[tuple[int, int]]:
        """(relation, entity) of the item's edges, preferred relations first."""
        heads = self._triples[:, 0]
        rows = self._triples[np.searchsorted(heads, item) : np.searchsorted(heads, item, "right")]
        rows = rows[np.argsort(self._relation_rank[rows[:, 1]], kind="stable")]
        return [(relation, entity) for _, relation, entity in rows.tolist()]

    def facts(self, item: int) -> tuple[Fact, ...]:
        """The item's facts, preferred relations first, at most `per_relation` of each."""
        facts: list[Fact] = []
        shown: dict[int, int] = {}
        for relation, entity in self._edges(item):
            if shown.get(relation, 0) < self.per_relation:
                shown[relation] = shown.get(relation, 0) + 1
                facts.append(Fact(self._relations[relation], entity, self.label(entity)))
        return tuple(facts)

    def reason(self, item: int, mentioned: Collection[int]) -> str | None:
        """A sentence on what `item` shares with the `mentioned` entities, if anything."""
        for relation, entity in self._edges(item):
            if entity in mentioned:
                name = self._relations[relation]
                return REASONS.get(name, GENERIC_REASON).format(
                    title=self.dataset.item_title(item), entity=self.label(entity), relation=name
                )
        return None
