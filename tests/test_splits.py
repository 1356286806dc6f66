"""Validation and test dialogues held out of train for datasets published without them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convrec.cli import app
from convrec.config import DataConfig
from convrec.data.datasets import load_dataset
from convrec.data.datasets.redial import RedialReader
from convrec.data.schema import ConversationDataset
from convrec.data.splits import HoldOut
from tests.test_redial import tiny_redial

runner = CliRunner()


@pytest.fixture(scope="module")
def train_only() -> ConversationDataset:
    """The demo world's train split alone, as a dataset published without valid/test."""
    demo = load_dataset("demo", use_cache=False, num_movies=60, num_dialogues=200)
    assert isinstance(demo, ConversationDataset)
    return dataclasses.replace(demo, splits={"train": demo.splits["train"]})


def ids(dialogues) -> list[str]:
    return [d.id for d in dialogues]


def test_held_out_splits_partition_train_by_dialogue_in_file_order(train_only):
    train = ids(train_only.splits["train"])
    carved, record = HoldOut(valid_fraction=0.1, test_fraction=0.2, seed=3).apply(train_only)
    sizes = {s: len(carved.splits[s]) for s in ("train", "valid", "test")}
    assert sizes == {
        "train": len(train) - round(0.1 * len(train)) - round(0.2 * len(train)),
        "valid": round(0.1 * len(train)),
        "test": round(0.2 * len(train)),
    }
    parts = [ids(carved.splits[s]) for s in ("train", "valid", "test")]
    assert sorted(d for part in parts for d in part) == sorted(train)  # disjoint, and nothing lost
    position = {d: i for i, d in enumerate(train)}
    for part in parts:
        assert [position[d] for d in part] == sorted(position[d] for d in part)
    assert record["valid"] == {
        "carved_from": "train",
        "fraction": 0.1,
        "seed": 3,
        "dialogues": sizes["valid"],
    }
    assert record["test"]["dialogues"] == sizes["test"] > 0
    assert set(carved.counters) >= {"valid", "test"}


def test_the_hold_out_depends_on_its_seed_only(train_only):
    first, _ = HoldOut(seed=1).apply(train_only)
    again, _ = HoldOut(seed=1).apply(train_only)
    other, _ = HoldOut(seed=2).apply(train_only)
    assert ids(first.splits["valid"]) == ids(again.splits["valid"])
    assert ids(first.splits["valid"]) != ids(other.splits["valid"])


def test_splits_that_exist_are_never_touched():
    demo = load_dataset("demo", use_cache=False, num_movies=60, num_dialogues=200)
    carved, record = HoldOut(valid_fraction=0.3, test_fraction=0.3).apply(demo)
    assert record == {} and carved is demo
    no_valid = dataclasses.replace(demo, splits={k: demo.splits[k] for k in ("train", "test")})
    carved, record = HoldOut(valid_fraction=0.1, test_fraction=0.5).apply(no_valid)
    assert list(record) == ["valid"]
    assert carved.splits["test"] is demo.splits["test"]


def test_a_hold_out_without_a_training_split_says_which_option_names_one(train_only):
    test_only = dataclasses.replace(train_only, splits={"test": train_only.splits["train"]})
    for holdout in (HoldOut(), HoldOut(valid_fraction=0.0)):  # whether or not one is carved
        with pytest.raises(ValueError, match=r"data\.options\.split_files\.train=FILE"):
            holdout.apply(test_only)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"valid_fraction": 1.0}, "less than 1"),
        ({"test_fraction": -0.1}, "greater than or equal to 0"),
        ({"valid_fraction": 0.5, "test_fraction": 0.5}, "must leave training dialogues"),
    ],
)
def test_fractions_that_leave_nothing_to_train_on_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**fields)


def test_the_fingerprint_names_the_hold_out(train_only):
    holdout = HoldOut(seed=1)
    assert holdout.fingerprint("abc", {}) == "abc"
    _, one = holdout.apply(train_only)
    _, two = HoldOut(seed=2).apply(train_only)
    assert len({holdout.fingerprint("abc", one), holdout.fingerprint("abc", two), "abc"}) == 3


def redial_dialogues(count: int) -> list[dict]:
    return [
        {
            "conversationId": str(100 + i),
            "initiatorWorkerId": 1,
            "respondentWorkerId": 2,
            "movieMentions": {"10": "A Movie (2001)"},
            "messages": [
                {"text": "hi, any tips?", "senderWorkerId": 1},
                {"text": f"@{10 + i % 2} is good", "senderWorkerId": 2},
                {"text": "thanks", "senderWorkerId": 1},
                {"text": f"also @{11 - i % 2}", "senderWorkerId": 2},
            ],
        }
        for i in range(count)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_split_files_read_exactly_the_files_named(tmp_path):
    root = tiny_redial(tmp_path / "r")
    write_jsonl(root / "dialogues.jsonl", redial_dialogues(5))
    dataset = RedialReader(root, split_files={"train": "dialogues.jsonl"}).read()
    assert list(dataset.splits) == ["train"] and len(dataset.splits["train"]) == 5
    assert list(RedialReader(root).read().splits) == ["test"]  # default: {split}_data.jsonl


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"training": "a.jsonl"}, "must map splits"),
        ({"train": ""}, "must map splits"),
        ({"train": 3}, "must map splits"),
        ("a.jsonl", "must map splits"),
        ({"train": "a.jsonl", "test": "a.jsonl"}, "one file for two splits"),
    ],
)
def test_bad_split_files_are_refused_when_the_reader_is_made(tmp_path, files, message):
    with pytest.raises(ValueError, match=message):
        RedialReader(tiny_redial(tmp_path / "r"), split_files=files)


def test_a_named_split_file_that_is_missing_is_named(tmp_path):
    reader = RedialReader(tiny_redial(tmp_path / "r"), split_files={"train": "nope.jsonl"})
    with pytest.raises(Exception, match=r"nope\.jsonl"):
        reader.read()


def test_train_on_the_published_layout_holds_validation_out_and_says_so(tmp_path):
    """ReDial as published: train_data.jsonl + test_data.jsonl, no validation file."""
    root = tiny_redial(tmp_path / "r")
    write_jsonl(root / "train_data.jsonl", redial_dialogues(30))
    run = tmp_path / "run"
    small = ["model.dim=16", "model.attention_dim=16", "model.num_bases=2", "train.epochs=1"]
    args = ["train", "--model", "kbrd", "--dataset", "redial", "--data-dir", str(root)]
    result = runner.invoke(app, [*args, "--run-dir", str(run), "--no-progress", *small])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["held_out"] == {
        "valid": {"carved_from": "train", "fraction": 0.1, "seed": 0, "dialogues": 3}
    }
    log = (run / "train.log").read_text()
    assert "redial has no valid file: 3 of the training file's dialogues held out" in log
    # Another hold-out is other data: the fingerprint says so.
    other = tmp_path / "other"
    result = runner.invoke(
        app, [*args, "--run-dir", str(other), "--no-progress", *small, "data.split_seed=1"]
    )
    assert result.exit_code == 0, result.output
    other_metrics = json.loads((other / "metrics.json").read_text())
    assert other_metrics["data_fingerprint"] != metrics["data_fingerprint"]


def test_a_dataset_without_test_needs_a_test_fraction(tmp_path):
    root = tiny_redial(tmp_path / "r")
    (root / "test_data.jsonl").unlink()
    write_jsonl(root / "train_data.jsonl", redial_dialogues(30))
    args = ["train", "--model", "popularity", "--dataset", "redial", "--data-dir", str(root)]
    run = tmp_path / "run"
    result = runner.invoke(app, [*args, "--run-dir", str(run), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "has no test split (it has train, valid)" in result.stderr
    assert "data.test_fraction=0.2" in result.stderr
    assert not run.exists()
    result = runner.invoke(
        app, [*args, "--run-dir", str(run), "--no-progress", "data.test_fraction=0.2"]
    )
    assert result.exit_code == 0, result.output
    held_out = json.loads((run / "metrics.json").read_text())["held_out"]
    assert {s: h["dialogues"] for s, h in held_out.items()} == {"test": 6, "valid": 3}


def test_the_shared_layout_without_a_training_file_says_which_option_names_one(tmp_path):
    root = tiny_redial(tmp_path / "r")
    (root / "test_data.jsonl").rename(root / "valid_data.jsonl")
    args = ["train", "--model", "kbrd", "--dataset", "redial", "--data-dir", str(root)]
    run = tmp_path / "run"
    result = runner.invoke(app, [*args, "--run-dir", str(run), "data.test_fraction=0.2"])
    assert result.exit_code == 2, result.output
    assert "dataset 'redial' has no training split (it has valid)" in result.stderr
    assert "data.options.split_files.train=FILE" in result.stderr
    assert not run.exists()


def test_lm_pretraining_needs_training_dialogues_and_says_how_to_name_them(tmp_path):
    root = tiny_redial(tmp_path / "r")  # test_data.jsonl only
    result = runner.invoke(app, ["lm", "pretrain", "--dataset", "redial", "--data-dir", str(root)])
    assert result.exit_code == 2, result.output
    assert "dataset 'redial' has no training split (it has test)" in result.stderr
    assert "data.options.split_files.train=FILE" in result.stderr
