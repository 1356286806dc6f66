"""INSPIRED (and any dataset) in the UniCRS / DBpedia format.

Files (specs/data-formats.md section 1): `{split}_data_dbpedia.jsonl` (a dialogue per
line, a JSON list of turns), `entity2id.json`, `relation2id.json`, `dbpedia_subkg.json`,
`item_ids.json`. Entity and relation ids are kept as published (dense 0..n-1), so ids in
other tools' outputs for these files stay valid.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from convrec.data.datasets.base import ConversationReader, register_reader
from convrec.data.errors import DataFormatError, parse_id, require_file
from convrec.data.jsonl import get_field, get_list, read_json
from convrec.data.kg import KnowledgeGraph
from convrec.data.mentions import locate_mentions
from convrec.data.schema import ConversationDataset, Dialogue, Role, Turn

ROLE_NAMES: dict[str, Role] = {"SEEKER": "seeker", "RECOMMENDER": "recommender"}


def read_dense_ids(path: Path) -> tuple[str, ...]:
    """Names ordered by id from a `{name: id}` JSON file whose ids must be 0..n-1."""
    mapping = read_json(path, dict)
    names: list[str | None] = [None] * len(mapping)
    for name, idx in mapping.items():
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(mapping):
            raise DataFormatError(
                path,
                f"expected a dense integer id in 0..{len(mapping) - 1}, found {idx!r}",
                key=name,
            )
        if names[idx] is not None:
            raise DataFormatError(path, f"id {idx} is used twice", key=name)
        names[idx] = name
    return tuple(names)  # type: ignore[arg-type]


def read_subkg(path: Path, num_entities: int, num_relations: int) -> np.ndarray:
    """`{"head": [[relation, tail], ...]}` -> int64 [n, 3] (head, relation, tail)."""
    subkg = read_json(path, dict)
    rows: list[tuple[int, int, int]] = []
    for head, edges in subkg.items():
        h = parse_id(head)
        if h is None or h >= num_entities:
            raise DataFormatError(path, f"expected an entity id < {num_entities}", key=head)
        if not isinstance(edges, list):
            raise DataFormatError(path, "expected a list of [relation, tail] pairs", key=head)
        for k, edge in enumerate(edges):
            if (
                not isinstance(edge, list)
                or len(edge) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in edge)
                or not 0 <= edge[0] < num_relations
                or not 0 <= edge[1] < num_entities
            ):
                raise DataFormatError(
                    path,
                    f"expected [relation id < {num_relations}, tail id < {num_entities}], "
                    f"found {edge!r:.60}",
                    key=f"{head}[{k}]",
                )
            rows.append((h, edge[0], edge[1]))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


@register_reader
class InspiredReader(ConversationReader):
    name = "inspired"
    version = 2
    description = "INSPIRED in the UniCRS DBpedia format (also reads ReDial in that format)"
    split_file = "{split}_data_dbpedia.jsonl"

    def kg_paths(self) -> dict[str, Path]:
        assert self.data_dir is not None
        return {
            key: require_file(self.data_dir / file, what)
            for key, file, what in (
                ("entities", "entity2id.json", "entity URI -> id"),
                ("relations", "relation2id.json", "relation URI -> id"),
                ("triples", "dbpedia_subkg.json", "head id -> [[relation, tail], ...]"),
                ("items", "item_ids.json", "entity ids of the recommendable items"),
            )
        }

    def input_files(self) -> list[Path]:
        return [*self.kg_paths().values(), *self.split_paths().values()]

    def read(self) -> ConversationDataset:
        paths = self.kg_paths()
        entities = read_dense_ids(paths["entities"])
        relations = read_dense_ids(paths["relations"])
        triples = read_subkg(paths["triples"], len(entities), len(relations))
        items = read_json(paths["items"], list)
        for k, item in enumerate(items):
            is_id = isinstance(item, int) and not isinstance(item, bool)
            if not is_id or not 0 <= item < len(entities):
                raise DataFormatError(
                    paths["items"],
                    f"expected an entity id < {len(entities)}, found {item!r}",
                    key=f"[{k}]",
                )
        kg = KnowledgeGraph(entities, relations, triples, items)

        titles: dict[int, str] = {}
        splits, counters = self.read_splits(
            lambda split, path, line, raw, counts: Dialogue(
                id=f"{split}-{line}", turns=self._turns(raw, kg, path, line, counts, titles)
            )
        )
        return ConversationDataset(
            name=self.name, kg=kg, splits=splits, counters=counters, item_titles=titles
        )

    @staticmethod
    def _turns(
        raw: Any,
        kg: KnowledgeGraph,
        path: Path,
        line: int,
        counts: Counter[str],
        titles: dict[int, str],
    ) -> tuple[Turn, ...]:
        if not isinstance(raw, list):
            raise DataFormatError(
                path, f"expected a JSON list of turns, found {type(raw).__name__}", line=line
            )
        counts["utterances"] += len(raw)
        turns = []
        for index, turn in enumerate(raw):
            where = f"turn {index}"
            text = get_field(turn, "text", str, path=path, line=line, where=where)
            role_name = get_field(turn, "role", str, path=path, line=line, where=where)
            if role_name not in ROLE_NAMES:
                raise DataFormatError(
                    path,
                    f"unknown role {role_name!r} (expected one of {sorted(ROLE_NAMES)})",
                    line=line,
                    key=f"{where}.role",
                )
            fields = {"path": path, "line": line, "where": where}
            movie_links = get_list(turn, "movie_link", str, **fields)
            movie_names = get_list(turn, "movie_name", str, **fields)
            entity_links = get_list(turn, "entity_link", str, **fields)
            movies = get_list(turn, "movie", str, required=False, **fields)

            items: list[int] = []
            named: list[tuple[str, int]] = []
            for k, uri in enumerate(movie_links):
                entity = kg.get_entity_id(uri)
                if entity is None or not kg.is_item(entity):
                    counts["dropped_item_links"] += 1
                    if k < len(movie_names):  # its name stays in the text, unmasked
                        counts["unmasked_item_mentions"] += 1
                    continue
                if entity not in items:
                    items.append(entity)
                if k < len(movie_names):
                    named.append((movie_names[k], entity))
                # `movie` is aligned with `movie_link` only when the lengths agree.
                if len(movies) == len(movie_links):
                    titles.setdefault(entity, " ".join(movies[k].split()))

            entities: list[int] = []
            for uri in entity_links:
                entity = kg.get_entity_id(uri)
                if entity is None:
                    counts["dropped_entity_links"] += 1
                elif entity not in entities:
                    entities.append(entity)

            mentions, missing = locate_mentions(text, named)
            counts["unmasked_item_mentions"] += missing
            turns.append(
                Turn(
                    role=ROLE_NAMES[role_name],
                    text=text,
                    items=tuple(items),
                    entities=tuple(entities),
                    mentions=mentions,
                )
            )
        return tuple(turns)
