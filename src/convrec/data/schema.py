"""The conversation data model every reader produces and every model consumes.

A dataset is a knowledge graph plus dialogues split into train / valid / test::

    ConversationDataset
      name: "inspired"                    registry name of the reader that built it
      kg: KnowledgeGraph                  entities, relations, triples, item catalogue
      splits: {"train": (Dialogue, ...), "valid": ..., "test": ...}
      counters: {"train": {"dropped_entity_links": 3, ...}, ...}
      synthetic: False                    True only for the generated demo world

    Dialogue
      id: "train-17"                      stable id (split + position, or the source id)
      turns: (Turn, ...)                  in conversation order

    Turn
      role: "seeker" | "recommender"
      text: "Have you seen Knives Out?"   display text (ReDial's "@123" already resolved)
      items: (4102,)                      KG entity ids of catalogue items mentioned
      entities: (88, 931)                 KG entity ids of other linked entities
      mentions: (Mention(4102, 14, 24),)  located item spans in `text`, for slot masking

All ids are KG entity ids (`KnowledgeGraph.entities[id]` is the name); a catalogue
position comes from `KnowledgeGraph.item_index`. Turns hold tuples so that samples can
share them without copying.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from convrec.data.kg import KnowledgeGraph

Role = Literal["seeker", "recommender"]
ROLES: tuple[Role, ...] = ("seeker", "recommender")
SPLITS = ("train", "valid", "test")

# The kind of dataset, and so of task it poses: dialogues (`ConversationDataset`) or
# per-user interaction sequences (`SequentialDataset`). Readers and tasks state theirs,
# models the kinds they can work on.
TaskKind = Literal["conversational", "sequential"]


@dataclass(frozen=True, slots=True)
class Mention:
    """An item mention located in a turn's text: `text[start:end]` names `item`."""

    item: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    text: str
    items: tuple[int, ...] = ()
    entities: tuple[int, ...] = ()
    mentions: tuple[Mention, ...] = ()


@dataclass(frozen=True, slots=True)
class Dialogue:
    id: str
    turns: tuple[Turn, ...]


@dataclass
class ConversationDataset:
    """A conversational recommendation dataset in convrec's data model (see module doc)."""

    name: str
    kg: KnowledgeGraph
    splits: dict[str, tuple[Dialogue, ...]]
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    item_titles: Mapping[int, str] = field(default_factory=dict)
    synthetic: bool = False

    def dialogues(self, split: str) -> tuple[Dialogue, ...]:
        if split not in self.splits:
            raise KeyError(
                f"dataset {self.name!r} has no split {split!r}; it has {sorted(self.splits)}"
            )
        return self.splits[split]

    def item_title(self, entity_id: int) -> str:
        """Human-readable title of an item (falls back to the KG name)."""
        return self.item_titles.get(entity_id) or self.kg.label(entity_id)


@dataclass
class SequentialDataset:
    """Per-user interaction sequences sorted by time, with items linked to a KG.

    Sequences are stored flat (CSR layout) so that a dataset of millions of interactions is
    a few arrays, not millions of objects::

      users: ("1", "2", ...)           user tokens; a user id is a position here
      items: ("1", "2", ...)           item tokens; an item id is a position here
      item_titles: ("Toy Story", ...)  per item id
      item_entity: int64[num_items]    KG entity id of each item, -1 when unlinked
      offsets: int64[num_users + 1]    user u's interactions are [offsets[u], offsets[u+1])
      item_seq: int64[num_interactions]     item ids, each user's sorted by timestamp (stable)
      timestamps: float64[num_interactions]
    """

    name: str
    kg: KnowledgeGraph
    users: tuple[str, ...]
    items: tuple[str, ...]
    item_titles: tuple[str, ...]
    item_entity: np.ndarray
    offsets: np.ndarray
    item_seq: np.ndarray
    timestamps: np.ndarray
    counters: dict[str, int] = field(default_factory=dict)
    synthetic: bool = False

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return len(self.item_seq)

    def sequence(self, user: int) -> np.ndarray:
        return self.item_seq[self.offsets[user] : self.offsets[user + 1]]
