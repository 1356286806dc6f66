from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from convrec.cli import app
from tests.conftest import shared_dataset
from tests.test_inspired import write_unicrs

runner = CliRunner()


def stats_json(*args: str) -> dict[str, dict[str, dict[str, str]]]:
    result = runner.invoke(app, ["data", "stats", *args, "--json"])
    assert result.exit_code == 0, result.output
    return {
        table["title"]: {
            row[0]: dict(zip(table["columns"][1:], row[1:], strict=True)) for row in table["rows"]
        }
        for table in json.loads(result.stdout)
    }


@pytest.mark.real_data
def test_data_stats_inspired():
    tables = stats_json("--dataset", "inspired", "--data-dir", str(shared_dataset("inspired")))
    graph = tables["inspired: knowledge graph"]
    assert graph["entities"]["count"] == "17,320"
    assert graph["items (catalogue)"]["count"] == "1,472"
    assert graph["relations"]["count"] == "13"
    splits = tables["inspired: dialogues and samples per split"]
    assert splits["dialogues"] == {"train": "801", "valid": "99", "test": "99"}
    assert splits["utterances"]["train"] == "16,982"
    for label in (
        "rec samples: recommender turns",
        "rec samples: recommender turns, new items only",
        "rec samples: all turns",
        "share of targets repeated from context (recommender turns)",
        "item mentions left unmasked",
        "entity links dropped (not in KG)",
    ):
        assert label in splits


@pytest.mark.real_data
def test_data_stats_redial_and_table_output():
    result = runner.invoke(
        app, ["data", "stats", "--dataset", "redial", "--data-dir", str(shared_dataset("redial"))]
    )
    assert result.exit_code == 0, result.output
    assert "64,362" in result.stdout and "901" in result.stdout


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path):
    root = write_unicrs(tmp_path / "d", ['[{"text": "hi", "role": "BOT"}]'])
    result = runner.invoke(app, ["data", "stats", "--dataset", "inspired", "--data-dir", str(root)])
    assert result.exit_code == 2
    assert "train_data_dbpedia.jsonl, line 1, turn 0" in result.output
    assert "Traceback" not in result.output


def test_unknown_dataset_and_missing_directory(tmp_path):
    result = runner.invoke(app, ["data", "stats", "--dataset", "nope"])
    assert result.exit_code == 2 and "unknown dataset 'nope'" in result.output
    result = runner.invoke(
        app, ["data", "stats", "--dataset", "inspired", "--data-dir", str(tmp_path / "missing")]
    )
    assert result.exit_code == 2 and "not a directory" in result.output
    result = runner.invoke(app, ["data", "stats", "--dataset", "inspired"])
    assert result.exit_code == 2 and "needs --data-dir" in result.output


@pytest.mark.real_data
def test_data_stats_movielens():
    root = shared_dataset("movielens-100k")
    table = stats_json("--dataset", "movielens-100k", "--data-dir", str(root))[
        "movielens-100k: interactions and knowledge graph"
    ]
    counts = {row: cells["count"] for row, cells in table.items()}
    assert counts["users"] == "943" and counts["items"] == "1,682"
    assert counts["interactions"] == "100,000" and counts["KG triples"] == "91,631"
    assert counts["items linked to the KG"] == "1,598"


def test_data_stats_demo_is_labelled_synthetic():
    tables = stats_json("--dataset", "demo")
    assert "demo: knowledge graph (synthetic)" in tables
    splits = tables["demo: dialogues and samples per split"]
    assert splits["dialogues"] == {"train": "800", "valid": "100", "test": "100"}


def test_quickstart_trains_evaluates_and_recommends(tmp_path):
    result = runner.invoke(app, ["quickstart", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.stdout
    assert "protocol `standard`" in result.stdout and "protocol `strict`" in result.stdout
    assert result.stdout.count("kbrd top 5") == 3
    assert (tmp_path / "run" / "model.pt").is_file()
