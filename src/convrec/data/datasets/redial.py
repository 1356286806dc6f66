"""ReDial in its original format, with the knowledge graph released with KGSF.

Files (specs/data-formats.md section 2): any of `{train,valid,test}_data.jsonl`,
`movies_with_mentions.csv`, and the KGSF pickles `id2entity.pkl`, `entity2entityId.pkl`,
`movie_ids.pkl`, `subkg.pkl` (in `kgsf/` or beside the dialogues). The pickles are read
with an allow-list unpickler. Relation names are not in the KGSF files: relations are named
`kgsf:<id>`. Movies that KGSF could not link to DBpedia are KG entities named by their
ReDial id (an int key in `entity2entityId`); here they are `redial:<id>`.

Items come from the `@<movie id>` mentions only, replaced in `Turn.text` by their titles.
Other entities (actors, directors, genres, places: the KG's non-item entities) are linked
from the text as the published pipelines do (KGSF, UniCRS's processed ReDial; KGSF looks
them up in a precomputed `text_dict.pkl`, not shipped with ReDial), by the option:

- `link_entities: "text"` (default): `Turn.entities` are the non-item entities whose
  names occur in the turn's own words, each once, in order of appearance. The matcher is
  `convrec.data.linking.EntityLinker` (normalisation, stop words, longest match, names
  shared by several entities left out as ambiguous: see its module doc), built once per
  read over non-item entities only, and run on the text between the `@` mentions, so
  words of a movie title never become entities. Names come from DBpedia resource URIs
  (`<http://dbpedia.org/resource/Tom_Hanks>` -> "Tom Hanks", percent-escapes decoded,
  "/" kept: "Face/Off"). Not named: URIs outside `http://dbpedia.org/resource/` (web
  pages), DBpedia's numbered duplicates `..._Hanks__1` (their base resource is in the KG
  too), names without a letter (years, numbers), and one-word names with a sense in
  parentheses other than a genre ("Time (magazine)", "Lot (department)", "Problem
  (rapper)": their alias "time" would fire on the common word; "Thriller (genre)" is kept
  and links "thriller"). Counted per split:
  `linked_entity_mentions` (every name found, repeats included) and, the same for every
  split since it is a property of the KG, `entity_names` (names in the dictionary) and
  `ambiguous_entity_names` (names left out as ambiguous).
- `link_entities: "none"`: no entities (the reader's behaviour before version 3).

Set it as `data.options.link_entities=none` (config) or `link_entities="none"`
(`load_dataset`).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from convrec.data.datasets.base import ConversationReader, register_reader
from convrec.data.errors import DataFormatError, parse_id, require_file, short_repr
from convrec.data.files import open_input
from convrec.data.jsonl import get_field
from convrec.data.kg import KnowledgeGraph
from convrec.data.linking import EntityLinker
from convrec.data.safe_pickle import load_plain_pickle
from convrec.data.schema import ConversationDataset, Dialogue, Mention, Role, Turn

MOVIE_MENTION = re.compile(r"@([0-9]+)")  # not \d: that also matches "٣" and "²"
KG_FILES = ("id2entity.pkl", "entity2entityId.pkl", "movie_ids.pkl", "subkg.pkl")
LINK_ENTITIES = ("text", "none")
DBPEDIA_RESOURCE = "<http://dbpedia.org/resource/"
DBPEDIA_DUPLICATE = re.compile(r"__[0-9]+$")  # "Tom_Hanks__1": a copy of "Tom_Hanks"
HAS_LETTER = re.compile(r"[^\W\d_]")
# "Time (magazine)": a one-word name whose parenthesis gives the sense that is not the
# common word's (the linker's alias "Time" would fire on "a long time"); genres excepted
ONE_WORD_SENSE = re.compile(r"^[^\s()]+\s*\((?![^()]*\bgenre\b)[^()]*\)$")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clean_title(title: str) -> str:
    return " ".join(title.split())


def dbpedia_name(uri: str) -> str | None:
    """The name text is matched against for a KG entity, or None when it has none (see
    module doc): `<http://dbpedia.org/resource/Face/Off>` -> "Face/Off"."""
    if not (uri.startswith(DBPEDIA_RESOURCE) and uri.endswith(">")):
        return None
    resource = uri[len(DBPEDIA_RESOURCE) : -1]
    if DBPEDIA_DUPLICATE.search(resource):
        return None
    name = unquote(resource).replace("_", " ").strip()
    if not HAS_LETTER.search(name) or ONE_WORD_SENSE.match(name):
        return None
    return name


def entity_names(kg: KnowledgeGraph) -> dict[int, str]:
    """{non-item entity id: name} of the entities linked in text."""
    names = {}
    for entity in np.flatnonzero(kg.item_index < 0).tolist():
        name = dbpedia_name(kg.entities[entity])
        if name is not None:
            names[entity] = name
    return names


def read_movie_titles(path: Path) -> dict[int, str]:
    """`movies_with_mentions.csv` -> {ReDial movie id: title}."""
    titles: dict[int, str] = {}
    with open_input(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["movieId", "movieName"]:
            raise DataFormatError(
                path, f"expected header movieId,movieName,nbMentions, found {header!r}", line=1
            )
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            movie = parse_id(row[0].strip())
            if len(row) < 2 or movie is None:
                raise DataFormatError(
                    path, f"expected movieId (integer),movieName, found {row!r:.80}", line=line
                )
            titles[movie] = _clean_title(row[1])
    return titles


class _KGSFGraph:
    """The KGSF pickles, validated, plus the ReDial-movie-id -> entity id lookup."""

    def __init__(self, kg_dir: Path) -> None:
        paths = {name: kg_dir / name for name in KG_FILES}
        id2entity = load_plain_pickle(paths["id2entity.pkl"])
        entity2id = load_plain_pickle(paths["entity2entityId.pkl"])
        movie_ids = load_plain_pickle(paths["movie_ids.pkl"])
        subkg = load_plain_pickle(paths["subkg.pkl"])
        for name, value, kind in (
            ("id2entity.pkl", id2entity, dict),
            ("entity2entityId.pkl", entity2id, dict),
            ("movie_ids.pkl", movie_ids, list),
            ("subkg.pkl", subkg, dict),
        ):
            if not isinstance(value, kind):
                raise DataFormatError(
                    paths[name], f"expected a pickled {kind.__name__}, found {type(value).__name__}"
                )

        names: list[str | None] = [None] * len(entity2id)
        for key, idx in entity2id.items():
            if not isinstance(key, str) and not _is_id(key):
                raise DataFormatError(
                    paths["entity2entityId.pkl"],
                    f"expected a URI or a ReDial movie id as key, found {type(key).__name__}",
                    key=short_repr(key),
                )
            if not _is_id(idx) or not 0 <= idx < len(entity2id) or names[idx] is not None:
                raise DataFormatError(
                    paths["entity2entityId.pkl"],
                    f"expected a unique dense id in 0..{len(entity2id) - 1}, "
                    f"found {short_repr(idx)}",
                    key=short_repr(key),
                )
            names[idx] = f"redial:{key}" if isinstance(key, int) else str(key)

        # Every id is < the number of entities: relation ids too, since relation names are
        # made for 0..max id (a corrupt id of 10**12 must not make 10**12 names).
        rows: list[tuple[int, int, int]] = []
        expected = f"{{head id: [(relation id, tail id), ...]}} with ids in 0..{len(names) - 1}"
        for head, edges in subkg.items():
            if not _is_id(head) or not 0 <= head < len(names) or not isinstance(edges, list):
                raise DataFormatError(
                    paths["subkg.pkl"],
                    f"expected {expected}, found {short_repr(edges)}",
                    key=short_repr(head),
                )
            for edge in edges:
                if (
                    not isinstance(edge, (tuple, list))
                    or len(edge) != 2
                    or not all(_is_id(x) and 0 <= x < len(names) for x in edge)
                ):
                    raise DataFormatError(
                        paths["subkg.pkl"],
                        f"expected {expected}, found {short_repr(edge)}",
                        key=short_repr(head),
                    )
                rows.append((head, edge[0], edge[1]))
        triples = np.array(rows, dtype=np.int64).reshape(-1, 3)
        num_relations = int(triples[:, 1].max()) + 1 if len(triples) else 0
        bad_movies = [m for m in movie_ids if not _is_id(m) or not 0 <= m < len(names)]
        if bad_movies:
            raise DataFormatError(
                paths["movie_ids.pkl"], f"expected entity ids, found {short_repr(bad_movies[:3])}"
            )
        try:
            self.kg = KnowledgeGraph(
                names, [f"kgsf:{r}" for r in range(num_relations)], triples, movie_ids
            )
        except ValueError as e:
            raise DataFormatError(paths["subkg.pkl"], str(e)) from None

        # ReDial movie id -> entity id: by DBpedia URI, or by the id itself when unlinked.
        self.movie_entity: dict[int, int] = {}
        for movie, uri in id2entity.items():
            if not _is_id(movie) or not (uri is None or isinstance(uri, str)):
                raise DataFormatError(
                    paths["id2entity.pkl"],
                    f"expected {{ReDial movie id: URI string or None}}, found {short_repr(uri)}",
                    key=short_repr(movie),
                )
            key = uri if uri is not None else movie
            entity = entity2id.get(key)
            if entity is not None and self.kg.is_item(entity):
                self.movie_entity[movie] = entity


@register_reader
class RedialReader(ConversationReader):
    name = "redial"
    version = 3
    description = (
        "ReDial original format + movies_with_mentions.csv + KGSF KG pickles; non-item "
        "entities linked in the text (option link_entities: text | none)"
    )
    split_file = "{split}_data.jsonl"

    def __init__(self, data_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        mode = self.options["link_entities"]
        if not isinstance(mode, str) or mode not in LINK_ENTITIES:
            raise ValueError(
                f"dataset {self.name!r}: option link_entities (data.options.link_entities) "
                f"must be one of {', '.join(map(repr, LINK_ENTITIES))}, not {mode!r}"
            )

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {**super().default_options(), "link_entities": "text"}

    def kg_dir(self) -> Path:
        assert self.data_dir is not None
        kgsf = self.data_dir / "kgsf"
        return kgsf if kgsf.is_dir() else self.data_dir

    def input_files(self) -> list[Path]:
        assert self.data_dir is not None
        titles = self.data_dir / "movies_with_mentions.csv"
        files = [require_file(titles, "movieId,movieName,nbMentions")]
        files += [require_file(self.kg_dir() / name, "a KGSF KG pickle") for name in KG_FILES]
        return [*files, *self.split_paths().values()]

    def read(self) -> ConversationDataset:
        assert self.data_dir is not None
        catalogue_titles = read_movie_titles(self.data_dir / "movies_with_mentions.csv")
        graph = _KGSFGraph(self.kg_dir())
        kg = graph.kg
        titles: dict[int, str] = {}
        for movie in sorted(catalogue_titles):
            if movie in graph.movie_entity:
                titles.setdefault(graph.movie_entity[movie], catalogue_titles[movie])

        linker = None
        if self.options["link_entities"] == "text":
            linker = EntityLinker(kg, {}, entity_names=entity_names(kg))

        splits, counters = self.read_splits(
            lambda _split, path, line, raw, counts: self._dialogue(
                raw, graph, catalogue_titles, linker, path, line, counts
            )
        )
        if linker is not None:
            for counts in counters.values():
                counts.setdefault("linked_entity_mentions", 0)
                counts["entity_names"] = len(linker.names)
                counts["ambiguous_entity_names"] = linker.ambiguous
        return ConversationDataset(
            name=self.name, kg=kg, splits=splits, counters=counters, item_titles=titles
        )

    @staticmethod
    def _dialogue(
        raw: Any,
        graph: _KGSFGraph,
        catalogue_titles: dict[int, str],
        linker: EntityLinker | None,
        path: Path,
        line: int,
        counts: Counter[str],
    ) -> Dialogue:
        where = "conversation"
        conversation_id = get_field(
            raw, "conversationId", (str, int), path=path, line=line, where=where
        )
        seeker = get_field(raw, "initiatorWorkerId", int, path=path, line=line, where=where)
        recommender = get_field(raw, "respondentWorkerId", int, path=path, line=line, where=where)
        messages = get_field(raw, "messages", list, path=path, line=line, where=where)
        mentioned = raw.get("movieMentions")
        if mentioned is None or mentioned == []:  # ReDial writes [] when nothing is mentioned
            mentioned = {}
        if not isinstance(mentioned, dict):
            raise DataFormatError(
                path,
                f"expected an object {{movie id: title}}, found {type(mentioned).__name__}",
                line=line,
                key="movieMentions",
            )
        for movie, title in mentioned.items():
            if title is not None and not isinstance(title, str):
                raise DataFormatError(
                    path,
                    f"expected a title (string or null), found {type(title).__name__}",
                    line=line,
                    key=f"movieMentions.{movie}",
                )

        counts["utterances"] += len(messages)
        # Consecutive messages of one sender form one turn.
        grouped: list[tuple[Role, list[str]]] = []
        for k, message in enumerate(messages):
            where = f"messages[{k}]"
            text = get_field(message, "text", str, path=path, line=line, where=where)
            sender = get_field(message, "senderWorkerId", int, path=path, line=line, where=where)
            if sender == seeker:
                role: Role = "seeker"
            elif sender == recommender:
                role = "recommender"
            else:
                raise DataFormatError(
                    path,
                    f"sender {sender} is neither initiatorWorkerId ({seeker}) nor "
                    f"respondentWorkerId ({recommender})",
                    line=line,
                    key=f"{where}.senderWorkerId",
                )
            if grouped and grouped[-1][0] == role:
                grouped[-1][1].append(text)
            else:
                grouped.append((role, [text]))

        turns = []
        for role, texts in grouped:
            text, items, entities, mentions = _resolve_mentions(
                " ".join(texts), graph.movie_entity, mentioned, catalogue_titles, linker, counts
            )
            turns.append(
                Turn(role=role, text=text, items=items, entities=entities, mentions=mentions)
            )
        return Dialogue(id=str(conversation_id), turns=tuple(turns))


def _resolve_mentions(
    raw_text: str,
    movie_entity: Mapping[int, int],
    mentioned: dict[str, Any],
    catalogue_titles: Mapping[int, str],
    linker: EntityLinker | None,
    counts: Counter[str],
) -> tuple[str, tuple[int, ...], tuple[int, ...], tuple[Mention, ...]]:
    """Replace each `@<movie id>` by its title, recording the span of linked items, and
    link the entities named in the text between the mentions (when `linker` is given)."""
    pieces: list[str] = []
    items: list[int] = []
    entities: dict[int, None] = {}  # ordered set
    mentions: list[Mention] = []
    length = 0
    last = 0

    def link(piece: str) -> None:
        if linker is not None and piece:
            found = linker.matches(piece)
            counts["linked_entity_mentions"] += len(found)
            entities.update((entity, None) for entity, _, _ in found)

    for match in MOVIE_MENTION.finditer(raw_text):
        before = raw_text[last : match.start()]
        link(before)
        pieces.append(before)
        length += len(before)
        movie = parse_id(match.group(1))
        movie = -1 if movie is None else movie  # more digits than any movie id has
        title = mentioned.get(match.group(1))
        title = _clean_title(title) if isinstance(title, str) else catalogue_titles.get(movie)
        if title is None:
            counts["unknown_movie_ids"] += 1
            title = match.group(0)
        entity = movie_entity.get(movie)
        if entity is None:
            counts["dropped_item_links"] += 1
            counts["unmasked_item_mentions"] += 1
        else:
            mentions.append(Mention(item=entity, start=length, end=length + len(title)))
            if entity not in items:
                items.append(entity)
        pieces.append(title)
        length += len(title)
        last = match.end()
    link(raw_text[last:])
    pieces.append(raw_text[last:])
    return "".join(pieces), tuple(items), tuple(entities), tuple(mentions)
