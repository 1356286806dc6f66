"""Readers never give silently wrong data: wrong types, directories in place of files,
empty splits and dropped links are errors or are counted and reported."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from convrec.cli import app
from convrec.data.datasets.inspired import InspiredReader
from convrec.data.datasets.movielens import RecBoleReader
from convrec.data.datasets.redial import RedialReader
from convrec.data.errors import DataFormatError
from convrec.data.stats import dataset_stats
from tests.test_inspired import GOOD_TURN, write_unicrs
from tests.test_movielens import INTER_HEADER, small_world, write
from tests.test_redial import tiny_redial

runner = CliRunner()


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("movie", "X", "turn 1.movie"),  # once renamed the item to "X"
        ("movie", [7], "turn 1.movie[0]"),
        ("movie_link", [["<m:knives>"]], "turn 1.movie_link[0]"),
        ("movie_name", [None], "turn 1.movie_name[0]"),
        ("entity_link", [1], "turn 1.entity_link[0]"),
    ],
)
def test_inspired_fields_of_the_wrong_type_are_errors(tmp_path, field, value, key):
    lines = [json.dumps([GOOD_TURN]), json.dumps([GOOD_TURN, {**GOOD_TURN, field: value}])]
    root = write_unicrs(tmp_path / "d", lines)
    with pytest.raises(DataFormatError) as info:
        InspiredReader(root).read()
    assert (info.value.path.name, info.value.line, info.value.key) == (
        "train_data_dbpedia.jsonl",
        2,
        key,
    )


def test_inspired_titles_come_from_the_movie_field(tmp_path):
    dataset = InspiredReader(write_unicrs(tmp_path / "d")).read()
    assert dataset.item_titles == {0: "Knives Out (2019)"}


@pytest.mark.parametrize(
    ("mentions", "problem"),
    [
        ("oops", "movieMentions: expected an object"),
        ({"10": 5}, "movieMentions.10: expected a title"),
    ],
)
def test_redial_movie_mentions_of_the_wrong_type_are_errors(tmp_path, mentions, problem):
    conversation = {
        "conversationId": "7",
        "initiatorWorkerId": 1,
        "respondentWorkerId": 2,
        "movieMentions": mentions,
        "messages": [{"text": "@10", "senderWorkerId": 2}],
    }
    with pytest.raises(DataFormatError, match=problem):
        RedialReader(tiny_redial(tmp_path / "r", conversation)).read()


def test_redial_empty_movie_mentions_as_published(tmp_path):
    conversation = {
        "conversationId": "7",
        "initiatorWorkerId": 1,
        "respondentWorkerId": 2,
        "movieMentions": [],  # ReDial writes an empty list, not {}
        "messages": [{"text": "hi", "senderWorkerId": 1}],
    }
    dataset = RedialReader(tiny_redial(tmp_path / "r", conversation)).read()
    assert dataset.splits["test"][0].turns[0].text == "hi"


def test_a_directory_in_place_of_a_file_is_named(tmp_path):
    root = tiny_redial(tmp_path / "r")
    (root / "movies_with_mentions.csv").unlink()
    (root / "movies_with_mentions.csv").mkdir()
    for read in (RedialReader(root).read, RedialReader(root).load):  # --no-cache and cached
        with pytest.raises(DataFormatError, match=r"movies_with_mentions\.csv: is a directory"):
            read()
    root = tiny_redial(tmp_path / "r2")
    (root / "kgsf" / "id2entity.pkl").unlink()
    (root / "kgsf" / "id2entity.pkl").mkdir()
    with pytest.raises(DataFormatError, match=r"id2entity\.pkl: is a directory"):
        RedialReader(root).read()
    result = runner.invoke(app, ["data", "stats", "-d", "redial", "--data-dir", str(root)])
    assert result.exit_code == 2 and "id2entity.pkl: is a directory" in result.stderr


def test_a_split_path_that_is_a_directory_is_not_skipped(tmp_path):
    root = tiny_redial(tmp_path / "r")
    (root / "train_data.jsonl").mkdir()
    with pytest.raises(DataFormatError, match=r"train_data\.jsonl: is a directory"):
        RedialReader(root).read()


def test_an_empty_split_file_is_said(tmp_path, caplog):
    root = tiny_redial(tmp_path / "r")
    (root / "valid_data.jsonl").write_text("\n")
    for _ in range(2):  # read, then served from the cache: said both times
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="convrec.data"):
            dataset = RedialReader(root).load()
        assert dataset.splits["valid"] == ()
        assert "valid_data.jsonl: no dialogues in this file" in caplog.text


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    root = tiny_redial(tmp_path / "r")
    (root / "movies_with_mentions.csv").write_bytes(
        b"movieId,movieName,nbMentions\n10,A Movie (2001),3\n11,B \xff Movie,1\n"
    )
    with pytest.raises(DataFormatError, match=r"movies_with_mentions.csv, line 3: not UTF-8"):
        RedialReader(root).read()


def test_recbole_interactions_with_only_a_header_are_an_error(tmp_path):
    root = small_world(tmp_path)
    write(root / "ml-100k.inter", INTER_HEADER)
    with pytest.raises(DataFormatError, match=r"ml-100k.inter: no interactions"):
        RecBoleReader(root).read()


def test_recbole_links_to_unknown_items_are_counted_and_reported(tmp_path):
    root = small_world(tmp_path)
    with (root / "ml-100k.link").open("a") as f:
        f.write("999\tm.nowhere\n")
    dataset = RecBoleReader(root).read()
    assert dataset.counters["links_skipped_unknown_item"] == 1
    (table,) = dataset_stats(dataset)
    assert table.value("item links dropped (item in neither .item nor .inter)", "count") == "1"
    result = runner.invoke(app, ["data", "stats", "-d", "movielens-100k", "--data-dir", str(root)])
    assert result.exit_code == 0 and "item links dropped" in result.stdout
