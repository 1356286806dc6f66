"""Fuzzing the dataset readers with mutated REAL lines.

Each test builds, once per module, a small but real data directory from ../shared/data (the
first dialogues of a split, the KG restricted to what they need, the first rows of the
RecBole files), then lets hypothesis damage one line or one value of one file: truncation,
injected bytes (invalid UTF-8, NUL, newlines), deleted or retyped fields at any depth,
swapped values, broken headers. Reading must either fail with `DataFormatError` or give a
dataset that is valid; any other exception is a reader bug.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convrec.data.datasets.inspired import InspiredReader
from convrec.data.datasets.movielens import RecBoleReader
from convrec.data.datasets.redial import RedialReader
from convrec.data.errors import DataFormatError
from convrec.data.safe_pickle import load_plain_pickle
from convrec.data.schema import ROLES, SPLITS, ConversationDataset, SequentialDataset
from tests.conftest import shared_dataset

pytestmark = pytest.mark.real_data

# CONVREC_FUZZ_SCALE=20 fuzzes 20 times longer (the default keeps the file under ~10 s).
SCALE = int(os.environ.get("CONVREC_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=120 * SCALE,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DIALOGUES = 5  # real dialogues per split file
ROWS = 200  # real rows per RecBole file

# -- a small real data directory, rewritten whole for every example ---------------------------


@dataclass(repr=False)
class World:
    """The files of one small dataset (relative path -> bytes) and where they are written."""

    root: Path
    files: dict[str, bytes]

    def __repr__(self) -> str:
        return f"World({self.root.name})"

    def write(self, changes: dict[str, bytes | None] | None = None) -> Path:
        """Write every file, with `changes` applied (None deletes a file)."""
        for name, data in {**self.files, **(changes or {})}.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)
        return self.root

    def lines(self, name: str) -> list[bytes]:
        return self.files[name].split(b"\n")

    def with_line(self, name: str, index: int, line: bytes) -> dict[str, bytes | None]:
        lines = self.lines(name)
        return {name: b"\n".join([*lines[:index], line, *lines[index + 1 :]])}


def first_lines(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def dense(ids: set[int]) -> dict[int, int]:
    """Original id -> new dense id, in the order of the original ids."""
    return {old: new for new, old in enumerate(sorted(ids))}


@pytest.fixture(scope="module")
def inspired(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The first dialogues of INSPIRED's test split and the KG they need, densely renumbered
    (reading the whole real KG takes about half a second, too slow for hundreds of
    examples)."""
    src = shared_dataset("inspired")
    lines = first_lines(src / "test_data_dbpedia.jsonl", DIALOGUES)
    entity2id = json.loads((src / "entity2id.json").read_text(encoding="utf-8"))
    subkg = json.loads((src / "dbpedia_subkg.json").read_text(encoding="utf-8"))
    items = set(json.loads((src / "item_ids.json").read_text(encoding="utf-8")))
    uris = {
        uri
        for line in lines
        for turn in json.loads(line)
        for uri in turn["movie_link"] + turn["entity_link"]
    }
    linked = {entity2id[uri] for uri in uris if uri in entity2id}
    neighbours = {tail for head in linked for _, tail in subkg.get(str(head), [])[:3]}
    new = dense(linked | neighbours)
    name_of = {idx: uri for uri, idx in entity2id.items()}
    files = {
        "entity2id.json": json_bytes({name_of[old]: idx for old, idx in new.items()}),
        "relation2id.json": (src / "relation2id.json").read_bytes(),
        "dbpedia_subkg.json": json_bytes(
            {
                str(new[head]): [[r, new[t]] for r, t in subkg.get(str(head), []) if t in new]
                for head in sorted(new)
                if str(head) in subkg
            }
        ),
        "item_ids.json": json_bytes(sorted(new[i] for i in items if i in new)),
        "test_data_dbpedia.jsonl": "\n".join(lines).encode("utf-8") + b"\n",
    }
    return World(tmp_path_factory.mktemp("inspired"), files)


MOVIE_ID = re.compile(r"@(\d+)")


@pytest.fixture(scope="module")
def redial(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The first ReDial conversations, the catalogue rows and the KGSF graph of their movies
    (plus a few neighbours), densely renumbered, as small pickles of builtin types."""
    src = shared_dataset("redial")
    lines = first_lines(src / "valid_data.jsonl", DIALOGUES)
    kgsf = src / "kgsf"
    id2entity = load_plain_pickle(kgsf / "id2entity.pkl")
    entity2id = load_plain_pickle(kgsf / "entity2entityId.pkl")
    movie_ids = set(load_plain_pickle(kgsf / "movie_ids.pkl"))
    subkg = load_plain_pickle(kgsf / "subkg.pkl")

    movies: set[int] = set()
    for line in lines:
        conversation = json.loads(line)
        movies |= {int(m) for m in conversation["movieMentions"] or {}}
        for message in conversation["messages"]:
            movies |= {int(m) for m in MOVIE_ID.findall(message["text"])}
    csv_lines = (src / "movies_with_mentions.csv").read_text(encoding="utf-8").splitlines()
    header, rows = csv_lines[0], csv_lines[1:]
    kept_rows = rows[:10] + [r for r in rows[10:] if int(r.split(",", 1)[0]) in movies]
    movies |= {int(r.split(",", 1)[0]) for r in rows[:10]}

    keys = {movie: id2entity[movie] or movie for movie in movies if movie in id2entity}
    linked = {entity2id[key] for key in keys.values() if key in entity2id}
    neighbours = {tail for head in linked for _, tail in subkg.get(head, [])[:3]}
    new = dense(linked | neighbours)
    key_of = {idx: key for key, idx in entity2id.items()}
    edges = {
        new[head]: [(r, new[t]) for r, t in subkg[head] if t in new]
        for head in sorted(new)
        if head in subkg
    }
    relations = dense({r for head_edges in edges.values() for r, _ in head_edges})
    pickles = {
        "id2entity.pkl": {movie: id2entity[movie] for movie in sorted(keys)},
        "entity2entityId.pkl": {key_of[old]: idx for old, idx in new.items()},
        "movie_ids.pkl": sorted(new[m] for m in movie_ids if m in new),
        "subkg.pkl": {h: [(relations[r], t) for r, t in es] for h, es in edges.items()},
    }
    files = {f"kgsf/{name}": pickle.dumps(value) for name, value in pickles.items()}
    files["movies_with_mentions.csv"] = "\n".join([header, *kept_rows, ""]).encode("utf-8")
    files["valid_data.jsonl"] = "\n".join(lines).encode("utf-8") + b"\n"
    return World(tmp_path_factory.mktemp("redial"), files)


RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.kg", "ml-100k.link")


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The header and first rows of each RecBole file the reader uses."""
    src = shared_dataset("movielens-100k")
    files = {
        name: "\n".join(first_lines(src / name, ROWS + 1)).encode("utf-8") + b"\n"
        for name in RECBOLE_FILES
    }
    return World(tmp_path_factory.mktemp("movielens"), files)


# -- what a valid dataset is ---------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_kg(kg) -> None:
    assert all(isinstance(name, str) for name in kg.entities)
    assert all(isinstance(name, str) for name in kg.relations)
    assert kg.triples.dtype == np.int64 and kg.triples.shape[1:] == (3,)
    if kg.num_triples:
        assert kg.triples[:, [0, 2]].min() >= 0 and kg.triples[:, [0, 2]].max() < kg.num_entities
        assert kg.triples[:, 1].min() >= 0 and kg.triples[:, 1].max() < kg.num_relations
    assert kg.items.dtype == np.int64
    assert all(0 <= item < kg.num_entities for item in kg.items.tolist())


def check_conversations(dataset: Any) -> None:
    assert isinstance(dataset, ConversationDataset)
    kg = dataset.kg
    check_kg(kg)
    assert set(dataset.splits) <= set(SPLITS)
    for dialogues in dataset.splits.values():
        for dialogue in dialogues:
            assert isinstance(dialogue.id, str)
            for turn in dialogue.turns:
                assert turn.role in ROLES
                assert isinstance(turn.text, str)
                for item in turn.items:
                    assert is_int(item) and 0 <= item < kg.num_entities and kg.is_item(item)
                for entity in turn.entities:
                    assert is_int(entity) and 0 <= entity < kg.num_entities
                for mention in turn.mentions:
                    assert mention.item in turn.items
                    assert 0 <= mention.start <= mention.end <= len(turn.text)
    for item, title in dataset.item_titles.items():
        assert is_int(item) and 0 <= item < kg.num_entities and kg.is_item(item)
        assert isinstance(title, str)
    for counts in dataset.counters.values():
        assert all(isinstance(v, int) and v >= 0 for v in counts.values())


def atomic_rows(data: bytes) -> tuple[list[str], list[list[str]]]:
    """An independent reading of an atomic file: bare column names and non-blank rows."""
    text = data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    header, *lines = text.removesuffix("\n").split("\n")
    names = [column.rpartition(":")[0] for column in header.split("\t")]
    return names, [line.split("\t") for line in lines if line]


def check_sequences(dataset: Any, files: dict[str, bytes | None]) -> None:
    assert isinstance(dataset, SequentialDataset)
    kg = dataset.kg
    check_kg(kg)
    users, items = dataset.users, dataset.items
    assert all(isinstance(u, str) and u for u in users) and len(set(users)) == len(users)
    assert all(isinstance(i, str) and i for i in items) and len(set(items)) == len(items)
    assert len(dataset.item_titles) == len(items)
    assert all(isinstance(title, str) and title for title in dataset.item_titles)

    offsets = dataset.offsets
    assert offsets.dtype == np.int64 and offsets.shape == (len(users) + 1,)
    assert offsets[0] == 0 and offsets[-1] == len(dataset.item_seq)
    assert (np.diff(offsets) >= 0).all()
    assert dataset.item_seq.dtype == np.int64
    assert ((dataset.item_seq >= 0) & (dataset.item_seq < len(items))).all()
    assert dataset.timestamps.shape == dataset.item_seq.shape
    assert np.isfinite(dataset.timestamps).all()
    for u in range(len(users)):
        assert (np.diff(dataset.timestamps[offsets[u] : offsets[u + 1]]) >= 0).all()

    entity = dataset.item_entity
    assert entity.dtype == np.int64 and entity.shape == (len(items),)
    assert ((entity >= -1) & (entity < kg.num_entities)).all()
    assert all(kg.is_item(e) for e in entity[entity >= 0].tolist())

    # The same counts, recomputed from the (mutated) files without the reader's code.
    names, inter = atomic_rows(files["ml-100k.inter"])  # type: ignore[arg-type]
    user, item = names.index("user_id"), names.index("item_id")
    assert dataset.num_interactions == len(inter)
    assert sorted(users) == sorted({row[user] for row in inter})
    item_names, item_rows = atomic_rows(files["ml-100k.item"])  # type: ignore[arg-type]
    item_tokens = {row[item_names.index("item_id")] for row in item_rows}
    assert sorted(items) == sorted(item_tokens | {row[item] for row in inter})


def read_or_reject(read: Callable[[], Any], check: Callable[[Any], None]) -> None:
    """The property: a clean DataFormatError, or a dataset that passes `check`."""
    try:
        dataset = read()
    except DataFormatError:
        return
    check(dataset)


# -- mutations ---------------------------------------------------------------------------------

SPECIAL_BYTES = [
    b"\x00",
    b"\n",
    b"\r",
    b"\r\n",
    b"\t",
    b"\xff",  # never valid UTF-8
    b"\xc3",  # a cut multi-byte sequence
    b"\xe2\x80\xa8",  # U+2028, a line separator to str.splitlines
    b"\xef\xbb\xbf",  # a BOM in the middle
    b'"',
    b"\\",
    b"{",
    b"]",
    b",",
    b":",
    b" ",
    b"@",
    b"@4",
]
chunks = st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=6))


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` truncated, or with bytes inserted, overwritten or deleted at some position."""
    op = draw(st.sampled_from(["truncate", "insert", "overwrite", "delete"]))
    at = draw(st.integers(0, len(data)))
    if op == "truncate":
        return data[:at]
    if op == "delete":
        return data[:at] + data[draw(st.integers(at, min(len(data), at + 16))) :]
    chunk = draw(chunks)
    return data[:at] + chunk + data[at + len(chunk) * (op == "overwrite") :]


# Values put in place of a JSON value: every JSON type, ids of the right kind but out of
# range, and the roles / URIs / mentions the readers look for.
JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    7,
    2**63,
    10**30,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    "",
    " ",
    "x",
    "SEEKER",
    "RECOMMENDER",
    "@75796 and @0",
    "<http://dbpedia.org/resource/Film>",
    [],
    [None],
    [0],
    ["x"],
    [[]],
    [[0, 0]],
    {},
    {"text": "x"},
    {"x": None},
]
# Python values only a pickle can hold (allowed by the restricted unpickler, or not).
PICKLE_VALUES: list[Any] = [
    *JSON_VALUES,
    (),
    (0,),
    (0, 0, 0),
    ((0, 0),),
    b"bytes",
    {0, 1},
    frozenset({0}),
    2**31,
    -(2**70),
    1 + 2j,  # needs the `complex` global: refused by the unpickler
]
# Keys put in place of a dict key. Strings only in JSON; the digit look-alikes are what an
# `isdigit()` check admits but `int()` may reject.
JSON_KEYS = ["", "x", "-1", "0", "1", "99999", " 1", "²", "٣", "1" * 5000, "text", "role"]
PICKLE_KEYS = [*JSON_KEYS, None, True, 0, -1, 2**63, 1.5, (1, 2), "redial:1"]
# Text that json.dumps cannot produce but json.loads must survive: an integer beyond
# Python's int-from-string digit limit, nesting deeper than the recursion limit, and the
# non-finite numbers json accepts.
RAW_JSON = ["9" * 5000, "-" + "1" * 4301, "[" * 100_000 + "]" * 100_000, "1e400", "NaN", "-0"]
RAW = "\ue000raw\ue000"
DELETE = object()

JSONPath = tuple[Any, ...]


def node_paths(value: Any, prefix: JSONPath = ()) -> list[JSONPath]:
    """The path of every node of a JSON (or pickled builtin) value, the root first."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += node_paths(child, (*prefix, key))
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            paths += node_paths(child, (*prefix, index))
    return paths


def get_at(value: Any, path: JSONPath) -> Any:
    for step in path:
        value = value[step]
    return value


def replace_at(value: Any, path: JSONPath, new: Callable[[Any], Any]) -> Any:
    """A copy of `value` with the node at `path` replaced by `new(node)` (DELETE removes it)."""
    if not path:
        return new(value)
    step, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            if key == step and type(key) is type(step):
                child = replace_at(child, rest, new)
                if child is DELETE:
                    continue
            out[key] = child
        return out
    items = list(value)
    child = replace_at(items[step], rest, new)
    if child is DELETE:
        del items[step]
    else:
        items[step] = child
    return tuple(items) if isinstance(value, tuple) else items


def overlapping(a: JSONPath, b: JSONPath) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


@st.composite
def mutated(draw: st.DrawFn, value: Any, *, pickled: bool = False) -> Any:
    """`value` with one node deleted, retyped, wrapped, stringified, swapped with or
    overwritten by another node, or one dict key renamed; at any depth."""
    paths = node_paths(value)
    path = draw(st.sampled_from(paths))
    node = get_at(value, path)
    ops = ["retype", "retype", "delete", "wrap", "stringify", "swap", "copy", "rekey"]
    op = draw(st.sampled_from([*ops, "raw"] if not pickled else ops))
    if op == "delete" and path:
        return replace_at(value, path, lambda _: DELETE)
    if op == "wrap":
        return replace_at(value, path, lambda n: [n])
    if op == "stringify":  # str -> list of words, anything else -> its text
        return replace_at(value, path, lambda n: n.split() if isinstance(n, str) else str(n))
    if op in ("swap", "copy"):
        other = draw(st.sampled_from(paths))
        source = get_at(value, other)
        if op == "copy" or overlapping(path, other):
            return replace_at(value, path, lambda _: source)
        value = replace_at(value, path, lambda _: source)
        return replace_at(value, other, lambda _: node)
    if op == "rekey":
        dicts = [p for p in paths if isinstance(get_at(value, p), dict) and get_at(value, p)]
        if dicts:
            where = draw(st.sampled_from(dicts))
            keys = list(get_at(value, where))
            old = draw(st.sampled_from(keys))
            key = draw(st.sampled_from(PICKLE_KEYS if pickled else JSON_KEYS))

            def rename(d: dict) -> dict:
                return {(key if k == old and type(k) is type(old) else k): v for k, v in d.items()}

            return replace_at(value, where, rename)
    if op == "raw":
        return replace_at(value, path, lambda _: RAW)
    replacement = draw(st.sampled_from(PICKLE_VALUES if pickled else JSON_VALUES))
    return replace_at(value, path, lambda _: replacement)


def dumps_with_raw(value: Any, raw: str) -> bytes:
    """JSON text of `value`, with the RAW placeholder replaced by `raw`."""
    return json_bytes(value).replace(json_bytes(RAW), raw.encode("utf-8"))


@st.composite
def mutated_json_line(draw: st.DrawFn, line: bytes) -> bytes:
    value = draw(mutated(json.loads(line)))
    return dumps_with_raw(value, draw(st.sampled_from(RAW_JSON)))


@st.composite
def mutated_json_file(draw: st.DrawFn, data: bytes) -> bytes:
    if draw(st.booleans()):
        return draw(damaged(data))
    return draw(mutated_json_line(data))


# -- INSPIRED (UniCRS / DBpedia jsonl) -------------------------------------------------------------

INSPIRED_SPLIT = "test_data_dbpedia.jsonl"
INSPIRED_KG = ("entity2id.json", "relation2id.json", "dbpedia_subkg.json", "item_ids.json")


def test_inspired_subset_reads_as_real_data(inspired: World):
    dataset = InspiredReader(inspired.write()).read()
    check_conversations(dataset)
    turns = [t for d in dataset.splits["test"] for t in d.turns]
    assert len(dataset.splits["test"]) == DIALOGUES
    assert any(t.items for t in turns) and any(t.entities for t in turns)
    assert any(t.mentions for t in turns) and dataset.item_titles
    assert dataset.kg.num_triples and dataset.kg.num_items


@FUZZ
@given(data=st.data())
def test_inspired_mutated_dialogue_value(inspired: World, data: st.DataObject):
    index = data.draw(st.integers(0, DIALOGUES - 1), label="line")
    line = data.draw(mutated_json_line(inspired.lines(INSPIRED_SPLIT)[index]), label="mutated")
    root = inspired.write(inspired.with_line(INSPIRED_SPLIT, index, line))
    read_or_reject(InspiredReader(root).read, check_conversations)


@FUZZ
@given(data=st.data())
def test_inspired_damaged_dialogue_bytes(inspired: World, data: st.DataObject):
    index = data.draw(st.integers(0, DIALOGUES - 1), label="line")
    line = data.draw(damaged(inspired.lines(INSPIRED_SPLIT)[index]), label="damaged")
    root = inspired.write(inspired.with_line(INSPIRED_SPLIT, index, line))
    read_or_reject(InspiredReader(root).read, check_conversations)


@FUZZ
@given(data=st.data())
def test_inspired_mutated_kg_file(inspired: World, data: st.DataObject):
    name = data.draw(st.sampled_from(INSPIRED_KG), label="file")
    content = data.draw(mutated_json_file(inspired.files[name]), label="content")
    read_or_reject(InspiredReader(inspired.write({name: content})).read, check_conversations)


# -- ReDial (original jsonl + movies_with_mentions.csv + KGSF pickles) ---------------------

REDIAL_SPLIT = "valid_data.jsonl"
REDIAL_CSV = "movies_with_mentions.csv"
REDIAL_PICKLES = ("id2entity.pkl", "entity2entityId.pkl", "movie_ids.pkl", "subkg.pkl")


def test_redial_subset_reads_as_real_data(redial: World):
    dataset = RedialReader(redial.write()).read()
    check_conversations(dataset)
    turns = [t for d in dataset.splits["valid"] for t in d.turns]
    assert len(dataset.splits["valid"]) == DIALOGUES
    assert any(t.items for t in turns) and any(t.mentions for t in turns)
    assert dataset.item_titles and dataset.kg.num_triples and dataset.kg.num_items


@FUZZ
@given(data=st.data())
def test_redial_mutated_conversation_value(redial: World, data: st.DataObject):
    index = data.draw(st.integers(0, DIALOGUES - 1), label="line")
    line = data.draw(mutated_json_line(redial.lines(REDIAL_SPLIT)[index]), label="mutated")
    root = redial.write(redial.with_line(REDIAL_SPLIT, index, line))
    read_or_reject(RedialReader(root).read, check_conversations)


@FUZZ
@given(data=st.data())
def test_redial_damaged_conversation_or_catalogue_bytes(redial: World, data: st.DataObject):
    name = data.draw(st.sampled_from([REDIAL_SPLIT, REDIAL_CSV]), label="file")
    lines = redial.lines(name)
    index = data.draw(st.integers(0, len(lines) - 1), label="line")
    line = data.draw(damaged(lines[index]), label="damaged")
    read_or_reject(
        RedialReader(redial.write(redial.with_line(name, index, line))).read, check_conversations
    )


@FUZZ
@given(data=st.data())
def test_redial_mutated_kg_pickle(redial: World, data: st.DataObject):
    name = "kgsf/" + data.draw(st.sampled_from(REDIAL_PICKLES), label="file")
    original = redial.files[name]
    if data.draw(st.booleans(), label="bytes"):
        content = data.draw(damaged(original), label="damaged")
    else:
        value = data.draw(mutated(pickle.loads(original), pickled=True), label="value")
        content = pickle.dumps(value)
    read_or_reject(RedialReader(redial.write({name: content})).read, check_conversations)


# -- MovieLens-100k (RecBole atomic files) --------------------------------------------------------

FIELD_TYPE_NAMES = ["token", "token_seq", "float", "float_seq", "int", "", "Token", "token "]
# A value for each type that parses, so a retyped column gets past the parser.
PARSEABLE = {"token": "7", "token_seq": "7 8", "float": "1.5", "float_seq": "1.5 2"}
TOKENS = [
    "",
    " ",
    "0",
    "-1",
    "1.5",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "abc",
    "0x1F",
    "1_000",
    "١٢",  # Arabic-Indic digits: decimal to Python, not to a user
    "²",
    "\x00",
    "196\x00",
    "1" * 5000,
    "m.0bln8",
    "196",
    "242",
    "a b",
    "\u2028",
    "\x85",
]


@st.composite
def recbole_change(draw: st.DrawFn, world: World) -> dict[str, bytes | None]:
    """Damage one row (bytes or one field), repeat or drop a row, break or retype the
    header, or drop an optional file."""
    name = draw(st.sampled_from(RECBOLE_FILES))
    lines = world.lines(name)[:-1]  # the final newline
    header = lines[0].decode().split("\t")
    op = draw(
        st.sampled_from(["bytes", "bytes", "field", "field", "row", "header", "retype", "file"])
    )
    row = draw(st.integers(1, len(lines) - 1))
    if op == "bytes":
        index = draw(st.integers(0, len(lines) - 1))
        lines[index] = draw(damaged(lines[index]))
    elif op == "field":
        fields = lines[row].decode().split("\t")
        k = draw(st.integers(0, len(fields) - 1))
        how = draw(st.sampled_from(["replace", "delete", "duplicate", "swap"]))
        if how == "replace":
            fields[k] = draw(st.sampled_from(TOKENS))
        elif how == "delete":
            del fields[k]
        elif how == "duplicate":
            fields.insert(k, fields[k])
        else:
            fields[k], fields[-1] = fields[-1], fields[k]
        lines[row] = "\t".join(fields).encode()
    elif op == "row":
        how = draw(st.sampled_from(["repeat", "drop", "blank", "only header"]))
        if how == "repeat":
            lines.insert(draw(st.integers(1, len(lines))), lines[row])
        elif how == "drop":
            del lines[row]
        elif how == "blank":
            lines.insert(row, b"")
        else:
            lines = lines[:1]
    elif op in ("header", "retype"):
        k = draw(st.integers(0, len(header) - 1))
        column, _, type_ = header[k].rpartition(":")
        if op == "retype":  # a new type, and (maybe) every value of the column parseable as it
            type_ = draw(st.sampled_from(FIELD_TYPE_NAMES))
            if type_ in PARSEABLE and draw(st.booleans()):
                for i in range(1, len(lines)):
                    fields = lines[i].decode().split("\t")
                    fields[k] = PARSEABLE[type_]
                    lines[i] = "\t".join(fields).encode()
        else:
            how = draw(st.sampled_from(["rename", "untyped", "drop", "add", "duplicate"]))
            if how == "rename":
                column = draw(st.sampled_from(["x", "", "item_id", "user_id", "head_id"]))
            elif how == "untyped":
                header[k] = column
            elif how == "drop":
                del header[k]
            elif how == "add":
                header.insert(k, "extra:token")
            else:
                header.insert(k, header[k])
        if op == "retype" or how == "rename":
            header[k] = f"{column}:{type_}"
        lines[0] = "\t".join(header).encode()
    else:
        return {name: None if name in ("ml-100k.kg", "ml-100k.link") else b""}
    return {name: b"\n".join(lines) + b"\n"}


def test_movielens_subset_reads_as_real_data(movielens: World):
    dataset = RecBoleReader(movielens.write()).read()
    check_sequences(dataset, dict(movielens.files))
    assert dataset.num_interactions == ROWS and dataset.kg.num_triples and dataset.kg.num_items


@settings(FUZZ, max_examples=250 * SCALE)
@given(data=st.data())
def test_movielens_mutated_atomic_file(movielens: World, data: st.DataObject):
    change = data.draw(recbole_change(movielens), label="change")
    root = movielens.write(change)
    read_or_reject(
        RecBoleReader(root).read,
        lambda dataset: check_sequences(dataset, {**movielens.files, **change}),
    )
