"""MovieLens (and any RecBole dataset) from RecBole atomic files, with a KB4Rec Freebase KG.

Files, for `prefix` "ml-100k" (the default; pass `prefix="ml-1m"` for another dataset):

    ml-100k.inter   user_id:token item_id:token rating:float timestamp:float   (required)
    ml-100k.item    item_id:token movie_title:token_seq release_year:token ...  (required)
    ml-100k.kg      head_id:token relation_id:token tail_id:token              (optional)
    ml-100k.link    item_id:token entity_id:token                               (optional)

Decisions, each chosen so that the output is reproducible and loses nothing silently:

- Users are the users of `.inter` (`.user` holds only features and is not read); items are
  the union of `.item` and `.inter`. Ids are positions in the sorted tokens, numerically
  sorted when every token is a decimal integer ("2" before "10"), else lexicographically.
- Each user's sequence is sorted by timestamp; equal timestamps keep file order. Ratings
  are not kept: every interaction is an implicit positive, as in sequential recommendation.
- An item's title is `movie_title` with the release year appended when it is a number,
  "Toy Story (1995)": MovieLens itself and ReDial name movies this way, and the year
  tells remakes apart. Items without a title (or absent from `.item`) use their token.
- The KG's entities are the Freebase mids and its relations the names in `.kg`
  (`film.film.actor`); its catalogue is the set of linked entities, also those that
  appear in no triple. `item_entity[item]` is that entity's id, or -1 when unlinked.
- Malformed rows are errors. Counted in `counters`, and only when they occur: exact
  duplicate `.kg` rows and `.link` rows (harmless; the graph keeps one copy) and links
  to items that are in neither `.item` nor `.inter` (skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convrec.data.datasets.base import DatasetReader, register_reader
from convrec.data.errors import DataFormatError, optional_file, require_file
from convrec.data.kg import KnowledgeGraph
from convrec.data.recbole import AtomicFile, read_atomic
from convrec.data.schema import SequentialDataset


@register_reader
class RecBoleReader(DatasetReader):
    name = "movielens-100k"
    version = 1
    task_kind = "sequential"
    description = (
        "MovieLens-100k as RecBole atomic files with the KB4Rec Freebase KG: per-user "
        "sequences sorted by time, items linked to Freebase entities (other RecBole "
        "datasets via the `prefix` option, e.g. ml-1m)"
    )

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"prefix": "ml-100k"}

    def path(self, suffix: str) -> Path:
        assert self.data_dir is not None
        return self.data_dir / f"{self.options['prefix']}.{suffix}"

    def input_files(self) -> list[Path]:
        required = [
            require_file(self.path("inter"), "RecBole interactions: user_id, item_id, timestamp"),
            require_file(self.path("item"), "RecBole item features: item_id, movie_title"),
        ]
        optional = (
            optional_file(self.path("kg"), "RecBole KG triples: head_id, relation_id, tail_id"),
            optional_file(self.path("link"), "RecBole item -> entity links: item_id, entity_id"),
        )
        return required + [p for p in optional if p is not None]

    def read(self) -> SequentialDataset:
        self.input_files()  # fail early, naming the missing file
        inter = read_atomic(self.path("inter"), ("user_id", "item_id", "timestamp"))
        if not inter.num_rows:
            raise DataFormatError(inter.path, "no interactions: the file has a header but no rows")
        item = read_atomic(self.path("item"), ("item_id", "movie_title", "release_year"))
        if item.types.get("movie_title", "token") not in ("token", "token_seq"):
            raise DataFormatError(
                item.path,
                f"column 'movie_title' has type {item.types['movie_title']!r}, "
                "expected 'token_seq' or 'token' (a title is text)",
                line=1,
                key="movie_title",
            )
        counters: dict[str, int] = {}

        user_tokens = _tokens(inter, "user_id")
        inter_items = _tokens(inter, "item_id")
        timestamps = np.asarray(inter.column("timestamp", "float"))
        _require(np.isfinite(timestamps), inter, "timestamp", "timestamp is not a finite number")
        item_rows = _tokens(item, "item_id")
        _require_unique(item_rows, item, "item_id")

        users, user_of = _dense_ids(user_tokens)
        items, item_ids = _dense_ids(np.concatenate([item_rows, inter_items]))
        item_of_row, item_of_inter = item_ids[: len(item_rows)], item_ids[len(item_rows) :]

        # Group by user, then time; the row index settles ties explicitly (file order).
        order = np.lexsort((np.arange(len(user_of)), timestamps, user_of))
        counts = np.bincount(user_of, minlength=len(users))
        offsets = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])

        kg, item_entity = self._read_kg(items, counters)
        return SequentialDataset(
            name=self.name,
            kg=kg,
            users=tuple(users.tolist()),
            items=tuple(items.tolist()),
            item_titles=_titles(item, items, item_of_row),
            item_entity=item_entity,
            offsets=offsets,
            item_seq=item_of_inter[order],
            timestamps=timestamps[order],
            counters={
                "interactions": len(order),
                "unlinked_items": int((item_entity < 0).sum()),
                **counters,
            },
        )

    def _read_kg(
        self, items: np.ndarray, counters: dict[str, int]
    ) -> tuple[KnowledgeGraph, np.ndarray]:
        """The KG from `.kg` and `.link` (each optional) and every item's entity id."""
        item_entity = np.full(len(items), -1, dtype=np.int64)
        heads = relations = tails = np.empty(0, dtype=np.str_)
        if self.path("kg").is_file():
            kg_file = read_atomic(self.path("kg"), ("head_id", "relation_id", "tail_id"))
            heads, relations, tails = (
                _tokens(kg_file, c) for c in ("head_id", "relation_id", "tail_id")
            )

        linked_items = link_entities = np.empty(0, dtype=np.str_)
        if self.path("link").is_file():
            linked_items, link_entities = self._read_links(items, counters)

        kg = KnowledgeGraph.from_named_triples(
            zip(heads.tolist(), relations.tolist(), tails.tolist(), strict=True),
            items=link_entities.tolist(),
        )
        if kg.num_triples < len(heads):  # the graph keeps one copy of each triple
            counters["duplicate_kg_rows"] = len(heads) - kg.num_triples
        if len(linked_items):
            item_entity[_positions(items, linked_items)] = _positions(
                np.asarray(kg.entities), link_entities
            )
        return kg, item_entity

    def _read_links(
        self, items: np.ndarray, counters: dict[str, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item token, entity name) pairs of known items, one per item, sorted by item."""
        link = read_atomic(self.path("link"), ("item_id", "entity_id"))
        item_tokens, entities = _tokens(link, "item_id"), _tokens(link, "entity_id")
        pairs, first = np.unique(np.stack([item_tokens, entities]), axis=1, return_index=True)
        if pairs.shape[1] < len(item_tokens):
            counters["duplicate_link_rows"] = len(item_tokens) - pairs.shape[1]
        # One entity per item: after dropping exact duplicates, an item token may not repeat.
        repeated = np.flatnonzero(pairs[0, 1:] == pairs[0, :-1])
        if len(repeated):
            row = int(max(first[repeated[0]], first[repeated[0] + 1]))
            raise link.fail(
                row, "entity_id", f"item {str(item_tokens[row])!r} is linked to a second entity"
            )
        known = _positions(items, pairs[0]) >= 0
        if not known.all():
            counters["links_skipped_unknown_item"] = int((~known).sum())
        return pairs[0, known], pairs[1, known]


def _tokens(parsed: AtomicFile, name: str) -> np.ndarray:
    values = parsed.column(name, "token")
    _require(values != "", parsed, name, "empty value")
    return values


def _require(ok: np.ndarray, parsed: AtomicFile, field: str, problem: str) -> None:
    """Fail on the first row where `ok` is False."""
    bad = np.flatnonzero(~ok)
    if len(bad):
        raise parsed.fail(int(bad[0]), field, problem)


def _require_unique(values: np.ndarray, parsed: AtomicFile, field: str) -> None:
    """Fail on the first row that repeats an earlier row's value."""
    order = np.argsort(values, kind="stable")
    repeats = np.flatnonzero(values[order][1:] == values[order][:-1])
    if len(repeats):
        row = int(order[repeats + 1].min())  # stable: order[r + 1] is a later occurrence
        raise parsed.fail(row, field, f"duplicate {field} {str(values[row])!r}")


def _positions(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The index of each value in `table` (unique, any order), -1 where absent."""
    if not len(table):
        return np.full(len(values), -1, dtype=np.int64)
    by_value = np.argsort(table)
    found = by_value[np.searchsorted(table, values, sorter=by_value).clip(max=len(table) - 1)]
    return np.where(table[found] == values, found, -1)


def _dense_ids(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique tokens and each token's position among them.

    Decimal tokens sort as numbers (by length once leading zeros are gone, then by digits,
    which is exact at any size); any other token makes the whole set sort as strings.
    """
    unique, inverse = np.unique(tokens, return_inverse=True)
    if len(unique) and np.char.isdecimal(unique).all():
        digits = np.char.lstrip(unique, "0")
        order = np.lexsort((unique, digits, np.char.str_len(digits)))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return unique[order], rank[inverse]
    return unique, inverse.astype(np.int64)


def _titles(item: AtomicFile, items: np.ndarray, item_of_row: np.ndarray) -> tuple[str, ...]:
    """`movie_title (release_year)` per item id; the token where `.item` has no title."""
    titles = items.astype(object)
    if "movie_title" not in item.columns:
        return tuple(titles.tolist())
    if item.types["movie_title"] == "token_seq":
        names = np.array([" ".join(words) for words in item.columns["movie_title"]], dtype=object)
    else:
        names = np.asarray(item.columns["movie_title"]).astype(object)
    if item.types.get("release_year") == "token":
        years = item.columns["release_year"]
        dated = np.char.isdecimal(years) & (names != "")
        names[dated] = names[dated] + " (" + years[dated].astype(object) + ")"
    has_title = names != ""
    titles[item_of_row[has_title]] = names[has_title]
    return tuple(titles.tolist())


__all__ = ["RecBoleReader"]
