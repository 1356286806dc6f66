"""RecBole atomic files, the MovieLens reader and the leave-one-out split.

Real-data expectations are recomputed here from the raw files with the csv module, so a bug
in the reader cannot confirm itself.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from convrec.data.datasets.movielens import RecBoleReader
from convrec.data.errors import DataFormatError
from convrec.data.recbole import read_atomic
from convrec.data.schema import SequentialDataset
from convrec.data.sequences import leave_one_out
from tests.conftest import shared_dataset

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def raw_rows(path: Path) -> list[dict[str, str]]:
    """Rows of an atomic file as dicts keyed by bare column names, in file order."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [column.split(":")[0] for column in next(reader)]
        return [dict(zip(header, row, strict=True)) for row in reader]


def write(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def small_world(root: Path, kg: bool = True) -> Path:
    """Three users, four items (item 10 only in .inter), a tie and a link-only entity."""
    root.mkdir(parents=True, exist_ok=True)
    write(
        root / "ml-100k.inter",
        INTER_HEADER,
        "2\t3\t4\t300",
        "1\t1\t5\t100",
        "1\t2\t3\t200",
        "2\t1\t1\t100",
        "1\t10\t2\t200",  # same time as item 2 for user 1: file order decides, 2 then 10
        "1\t3\t4\t50",
        "10\t2\t3\t7",
    )
    write(
        root / "ml-100k.item",
        ITEM_HEADER,
        "1\tToy Story\t1995\tAnimation Comedy",
        "2\tHeat\t1995\tAction",
        "3\tunknown film\tunknown\t",
    )
    write(root / "ml-100k.link", "item_id:token\tentity_id:token", "1\tm.toy", "3\tm.lonely")
    if kg:
        write(
            root / "ml-100k.kg",
            "head_id:token\trelation_id:token\ttail_id:token",
            "m.toy\tfilm.film.directed_by\tm.lasseter",
            "m.toy\tfilm.film.actor\tm.hanks",
            "m.toy\tfilm.film.actor\tm.hanks",
        )
    return root


def assert_same(a: SequentialDataset, b: SequentialDataset) -> None:
    for field in SequentialDataset.__dataclass_fields__:
        x, y = getattr(a, field), getattr(b, field)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), field
        else:
            assert x == y, field


# -- real data --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k() -> tuple[Path, SequentialDataset]:
    root = shared_dataset("movielens-100k")
    return root, RecBoleReader(root).read()


@pytest.mark.real_data
def test_real_counts_match_the_files(ml100k):
    root, data = ml100k
    inter = raw_rows(root / "ml-100k.inter")
    items = {row["item_id"] for row in raw_rows(root / "ml-100k.item")}
    triples = [tuple(row.values()) for row in raw_rows(root / "ml-100k.kg")]
    links = raw_rows(root / "ml-100k.link")

    assert len(inter) == data.num_interactions == 100_000
    assert len({row["user_id"] for row in inter}) == data.num_users == 943
    assert len(items | {row["item_id"] for row in inter}) == data.num_items == 1682
    assert len(set(triples)) == len(triples) == data.kg.num_triples == 91_631  # no duplicates
    assert len(links) == data.kg.num_items == 1598
    assert (data.item_entity >= 0).sum() == 1598
    assert data.counters == {"interactions": 100_000, "unlinked_items": 1682 - 1598}
    assert {"film.film.actor", "film.film.directed_by"} <= set(data.kg.relations)
    assert set(data.kg.relations) == {r for _, r, _ in triples}

    # Every link is reproduced: item token -> its Freebase mid.
    item_id = {token: i for i, token in enumerate(data.items)}
    for row in links[:50]:
        assert data.kg.entities[data.item_entity[item_id[row["item_id"]]]] == row["entity_id"]
    assert data.item_titles[item_id["1"]] == "Toy Story (1995)"


@pytest.mark.real_data
def test_real_sequences_are_the_raw_rows_sorted_by_time(ml100k):
    root, data = ml100k
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for row in raw_rows(root / "ml-100k.inter"):
        by_user[row["user_id"]].append((float(row["timestamp"]), row["item_id"]))
    user_id = {token: i for i, token in enumerate(data.users)}
    for user in ("1", "2", "13", "405", "943"):
        expected = sorted(by_user[user], key=lambda pair: pair[0])  # stable: file order on ties
        got = data.sequence(user_id[user])
        assert [data.items[i] for i in got] == [item for _, item in expected]
        u = user_id[user]
        assert np.all(np.diff(data.timestamps[data.offsets[u] : data.offsets[u + 1]]) >= 0)


@pytest.mark.real_data
def test_real_leave_one_out_targets_of_user_1(ml100k):
    root, data = ml100k
    rows = [r for r in raw_rows(root / "ml-100k.inter") if r["user_id"] == "1"]
    ordered = [r["item_id"] for r in sorted(rows, key=lambda r: float(r["timestamp"]))]
    assert ordered[-2:] == ["74", "102"]  # a timestamp tie: file order decides

    split = leave_one_out(data)
    row = int(np.flatnonzero(split.test.users == data.users.index("1"))[0])
    assert data.items[split.test.targets[row]] == ordered[-1]
    assert data.items[split.valid.targets[row]] == ordered[-2]
    assert [data.items[i] for i in split.test.history.sequence(row)] == ordered[:-1]
    assert len(split.test) == len(split.valid) == data.num_users  # everyone has >= 20 ratings
    assert split.train.lengths.sum() == data.num_interactions - 2 * data.num_users


# -- synthetic files: behaviour -------------------------------------------------------------


def test_sequences_sort_by_time_and_keep_file_order_on_ties(tmp_path):
    data = RecBoleReader(small_world(tmp_path)).read()
    assert data.users == ("1", "2", "10")  # numeric order, not "1", "10", "2"
    assert data.items == ("1", "2", "3", "10")
    seqs = {data.users[u]: [data.items[i] for i in data.sequence(u)] for u in range(3)}
    assert seqs == {"1": ["3", "1", "2", "10"], "2": ["1", "3"], "10": ["2"]}
    assert data.timestamps.tolist() == [50, 100, 200, 200, 100, 300, 7]
    assert data.offsets.tolist() == [0, 4, 6, 7]


def test_titles_links_and_kg(tmp_path):
    data = RecBoleReader(small_world(tmp_path)).read()
    assert data.item_titles == ("Toy Story (1995)", "Heat (1995)", "unknown film", "10")
    kg = data.kg
    assert kg.relations == ("film.film.actor", "film.film.directed_by")
    assert kg.num_triples == 2
    assert "m.lonely" in kg.entities  # linked, though in no triple
    assert [kg.entities[e] for e in kg.items] == ["m.lonely", "m.toy"]
    assert [kg.entities[e] if e >= 0 else None for e in data.item_entity] == [
        "m.toy",
        None,
        "m.lonely",
        None,
    ]
    assert data.counters == {"interactions": 7, "unlinked_items": 2, "duplicate_kg_rows": 1}


def test_missing_kg_gives_an_empty_graph(tmp_path):
    root = small_world(tmp_path, kg=False)
    data = RecBoleReader(root).read()
    assert data.kg.num_triples == 0 and data.kg.num_relations == 0
    assert data.kg.num_items == 2  # the links still make catalogue entities
    (root / "ml-100k.link").unlink()
    data = RecBoleReader(root).read()
    assert data.kg.num_entities == 0 and (data.item_entity == -1).all()
    assert data.counters["unlinked_items"] == 4
    assert [p.name for p in RecBoleReader(root).input_files()] == ["ml-100k.inter", "ml-100k.item"]


def test_prefix_reads_other_recbole_datasets(tmp_path):
    small_world(tmp_path)
    for suffix in ("inter", "item"):
        (tmp_path / f"ml-100k.{suffix}").rename(tmp_path / f"ml-1m.{suffix}")
    data = RecBoleReader(tmp_path, prefix="ml-1m").read()
    assert data.num_interactions == 7 and data.kg.num_entities == 0


def test_leave_one_out_small(tmp_path):
    data = RecBoleReader(small_world(tmp_path)).read()
    split = leave_one_out(data)
    # Only user "1" (4 items) is evaluated; "2" (2 items) and "10" (1 item) only train.
    assert split.test.users.tolist() == split.valid.users.tolist() == [0]
    assert split.test.targets.tolist() == [3] and split.valid.targets.tolist() == [1]
    assert [h.tolist() for h in split.test.history.sequences()] == [[2, 0, 1]]
    assert [h.tolist() for h in split.valid.history.sequences()] == [[2, 0]]
    assert split.train.users.tolist() == [0, 1, 2]
    assert [s.tolist() for s in split.train.sequences()] == [[2, 0], [0, 2], [1]]
    offsets, flat = split.train.csr()
    assert offsets.tolist() == [0, 2, 4, 5] and flat.tolist() == [2, 0, 0, 2, 1]

    assert split.test.history.padded(2).tolist() == [[0, 1]]
    assert split.test.history.padded(5, pad=-7).tolist() == [[-7, -7, 2, 0, 1]]
    assert split.train.padded(3, pad=0).tolist() == [[0, 2, 0], [0, 0, 2], [0, 0, 1]]
    assert split.train.padded(3).dtype == np.int64


# -- synthetic files: errors -----------------------------------------------------------------


def test_header_without_type_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "x.inter", "user_id:token\titem_id\ttimestamp:float", "1\t2\t3")
    with pytest.raises(DataFormatError, match=r"x\.inter, line 1, item_id: .*no type") as e:
        read_atomic(path)
    assert e.value.line == 1 and e.value.key == "item_id"


def test_unknown_type_is_an_error(tmp_path):
    path = write(tmp_path / "x.inter", "user_id:int", "1")
    with pytest.raises(DataFormatError, match="unknown type 'int'"):
        read_atomic(path)


def test_wrong_number_of_fields_names_the_line(tmp_path):
    root = small_world(tmp_path)
    lines = (root / "ml-100k.inter").read_text().splitlines()
    lines[3] = "1\t2\t3"  # line 4: timestamp missing
    (root / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter, line 4, timestamp: .*found 3"):
        RecBoleReader(root).read()

    path = write(tmp_path / "y.kg", "a:token\tb:token", "1\t2", "", "1\t2\t3")  # blank line 3
    with pytest.raises(DataFormatError, match=r"y\.kg, line 4, extra field 3"):
        read_atomic(path)


def test_unparsable_float_names_line_and_field(tmp_path):
    root = small_world(tmp_path)
    text = (root / "ml-100k.inter").read_text().replace("1\t2\t3\t200", "1\t2\t3\t2OO")
    (root / "ml-100k.inter").write_text(text)
    with pytest.raises(DataFormatError, match=r"line 4, timestamp: value '2OO' is not a float"):
        RecBoleReader(root).read()

    path = write(tmp_path / "z.item", "id:token\tv:float_seq", "1\t1.5 2", "2\t3 x")
    with pytest.raises(DataFormatError, match=r"line 3, v: value 2 .*'x'"):
        read_atomic(path)


def test_missing_inter_file_is_named(tmp_path):
    root = small_world(tmp_path)
    (root / "ml-100k.inter").unlink()
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter: missing required file"):
        RecBoleReader(root).input_files()
    with pytest.raises(DataFormatError, match=r"ml-100k\.inter"):
        RecBoleReader(root).read()


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("ml-100k.item", "2\tHeat", "1\tHeat", r"ml-100k\.item, line 3, item_id: duplicate"),
        ("ml-100k.inter", "2\t3\t4", "\t3\t4", r"ml-100k\.inter, line 2, user_id: empty"),
        ("ml-100k.link", "3\tm.lonely", "1\tm.other", r"line 3, entity_id: .*second entity"),
        ("ml-100k.inter", "\t300", "\tnan", r"line 2, timestamp: .*not a finite"),
    ],
)
def test_inconsistent_rows_are_errors(tmp_path, file, old, new, message):
    root = small_world(tmp_path)
    text = (root / file).read_text()
    assert old in text
    (root / file).write_text(text.replace(old, new, 1))
    with pytest.raises(DataFormatError, match=message):
        RecBoleReader(root).read()


def test_parser_handles_crlf_bom_blank_lines_and_column_selection(tmp_path):
    path = tmp_path / "w.inter"
    path.write_bytes(b"\xef\xbb\xbfu:token\tt:float\tx:token_seq\r\na\t1\tp q\r\n\r\nb\t2\t\r\n")
    parsed = read_atomic(path)
    assert parsed.columns["u"].tolist() == ["a", "b"]
    assert parsed.columns["t"].tolist() == [1.0, 2.0]
    assert parsed.columns["x"] == [("p", "q"), ()]
    assert parsed.lines.tolist() == [2, 4]
    assert set(read_atomic(path, ["t"]).columns) == {"t"}
    with pytest.raises(DataFormatError, match=r"line 1, nope: missing column"):
        parsed.column("nope")


# -- cache ------------------------------------------------------------------------------------


def test_cache_round_trip_and_key(tmp_path, monkeypatch):
    root = small_world(tmp_path / "data")
    cache = tmp_path / "cache"
    reader = RecBoleReader(root)
    first = reader.load(cache_dir=cache)
    monkeypatch.setattr(RecBoleReader, "read", lambda self: pytest.fail("cache not used"))
    second = RecBoleReader(root).load(cache_dir=cache)
    assert_same(first, second)
    assert second.kg == first.kg

    key = reader.cache_key()
    assert RecBoleReader(root).cache_key() == key
    with (root / "ml-100k.kg").open("a") as f:
        f.write("m.toy\tfilm.film.genre\tm.comedy\n")
    assert reader.cache_key() != key
