"""Dataset statistics: the numbers `convrec data stats` prints and the tests check.

Plain tables (title, columns, rows), so the CLI can render them and tests can read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convrec.data.samples import build_rec_samples
from convrec.data.schema import ConversationDataset, SequentialDataset

REC_PROTOCOLS: tuple[tuple[str, str, bool], ...] = (
    ("rec samples: recommender turns", "recommender", False),
    ("rec samples: recommender turns, new items only", "recommender", True),
    ("rec samples: all turns", "all", False),
    ("rec samples: all turns, new items only", "all", True),
)
READER_COUNTS: tuple[tuple[str, str], ...] = (
    ("item mentions left unmasked", "unmasked_item_mentions"),
    ("item links dropped (not in KG / catalogue)", "dropped_item_links"),
    ("entity links dropped (not in KG)", "dropped_entity_links"),
)
# Entity linking of the text done by the reader (ReDial); reported when the reader did it.
LINKING_COUNTS: tuple[tuple[str, str], ...] = (
    ("entity names linked in text (repeats included)", "linked_entity_mentions"),
)
# The same for every split (a property of the KG), shown with the graph.
LINKING_KG_COUNTS: tuple[tuple[str, str], ...] = (
    ("entity names for text linking", "entity_names"),
    ("entity names left out as ambiguous", "ambiguous_entity_names"),
)
# What the sequential (RecBole) reader dropped or merged; reported even when zero.
SEQUENTIAL_READER_COUNTS: tuple[tuple[str, str], ...] = (
    ("item links dropped (item in neither .item nor .inter)", "links_skipped_unknown_item"),
    ("duplicate .link rows merged", "duplicate_link_rows"),
    ("duplicate .kg rows merged", "duplicate_kg_rows"),
)


@dataclass(frozen=True)
class StatsTable:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def value(self, row: str, column: str) -> str:
        """The cell at (row label, column name); raises KeyError when absent."""
        col = self.columns.index(column)
        for r in self.rows:
            if r[0] == row:
                return r[col]
        raise KeyError(row)


def _fmt(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:.3f}"


def conversation_stats(dataset: ConversationDataset) -> list[StatsTable]:
    kg = dataset.kg
    splits = list(dataset.splits)
    counters = [dataset.counters.get(s, {}) for s in splits]
    graph = StatsTable(
        title=f"{dataset.name}: knowledge graph" + (" (synthetic)" if dataset.synthetic else ""),
        columns=("", "count"),
        rows=(
            ("entities", _fmt(kg.num_entities)),
            ("relations", _fmt(kg.num_relations)),
            ("triples", _fmt(kg.num_triples)),
            ("items (catalogue)", _fmt(kg.num_items)),
            *(
                (label, _fmt(max(c.get(key, 0) for c in counters)))
                for label, key in LINKING_KG_COUNTS
                if any(key in c for c in counters)
            ),
        ),
    )
    rows: list[tuple[str, ...]] = []

    def add(label: str, values: list[float]) -> None:
        rows.append((label, *(_fmt(v) for v in values)))

    dialogues = [dataset.splits[s] for s in splits]
    add("dialogues", [len(d) for d in dialogues])
    add("turns", [sum(len(x.turns) for x in d) for d in dialogues])
    add("utterances", [c.get("utterances", 0) for c in counters])
    add(
        "recommender turns",
        [sum(t.role == "recommender" for x in d for t in x.turns) for d in dialogues],
    )
    add("item mentions", [sum(len(t.items) for x in d for t in x.turns) for d in dialogues])
    add("entity mentions", [sum(len(t.entities) for x in d for t in x.turns) for d in dialogues])
    counts = {
        (turns, strict): [
            len(build_rec_samples(d, turns=turns, new_items_only=strict))  # type: ignore[arg-type]
            for d in dialogues
        ]
        for _, turns, strict in REC_PROTOCOLS
    }
    for label, turns, strict in REC_PROTOCOLS:
        add(label, counts[turns, strict])
    for turns in ("recommender", "all"):
        standard, strict = counts[turns, False], counts[turns, True]
        add(
            f"share of targets repeated from context ({turns} turns)",
            [1.0 - b / a if a else 0.0 for a, b in zip(standard, strict, strict=True)],
        )
    for label, key in READER_COUNTS:
        add(label, [c.get(key, 0) for c in counters])
    for label, key in LINKING_COUNTS:
        if any(key in c for c in counters):
            add(label, [c.get(key, 0) for c in counters])
    per_split = StatsTable(
        title=f"{dataset.name}: dialogues and samples per split",
        columns=("", *splits),
        rows=tuple(rows),
    )
    return [graph, per_split]


def sequential_stats(dataset: SequentialDataset) -> list[StatsTable]:
    lengths = np.diff(dataset.offsets)
    linked = int((dataset.item_entity >= 0).sum())
    rows = (
        ("users", _fmt(dataset.num_users)),
        ("items", _fmt(dataset.num_items)),
        ("interactions", _fmt(dataset.num_interactions)),
        ("mean sequence length", _fmt(float(lengths.mean()) if len(lengths) else 0.0)),
        ("min sequence length", _fmt(int(lengths.min()) if len(lengths) else 0)),
        ("items linked to the KG", _fmt(linked)),
        ("KG entities", _fmt(dataset.kg.num_entities)),
        ("KG relations", _fmt(dataset.kg.num_relations)),
        ("KG triples", _fmt(dataset.kg.num_triples)),
        *((label, _fmt(dataset.counters.get(key, 0))) for label, key in SEQUENTIAL_READER_COUNTS),
    )
    title = f"{dataset.name}: interactions and knowledge graph"
    return [StatsTable(title=title, columns=("", "count"), rows=rows)]


def dataset_stats(dataset: ConversationDataset | SequentialDataset) -> list[StatsTable]:
    if isinstance(dataset, SequentialDataset):
        return sequential_stats(dataset)
    return conversation_stats(dataset)
