from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from convrec.data.datasets.inspired import InspiredReader
from convrec.data.errors import DataFormatError
from convrec.data.samples import build_rec_samples
from tests.conftest import shared_dataset


def independent_rec_counts(path: Path, entity2id: dict, items: set, turns: str) -> tuple[int, int]:
    """(standard, new-items-only) sample counts straight from the JSON, without convrec."""
    standard = strict = 0
    with path.open() as f:
        for line in f:
            seen: set[int] = set()
            for index, turn in enumerate(json.loads(line)):
                targets = []
                for uri in turn["movie_link"]:
                    if (
                        uri in entity2id
                        and entity2id[uri] in items
                        and entity2id[uri] not in targets
                    ):
                        targets.append(entity2id[uri])
                if index > 0 and (turns == "all" or turn["role"] == "RECOMMENDER"):
                    standard += len(targets)
                    strict += sum(t not in seen for t in targets)
                seen |= set(targets)
                seen |= {entity2id[u] for u in turn["entity_link"] if u in entity2id}
    return standard, strict


@pytest.mark.real_data
def test_inspired_counts_match_the_files():
    root = shared_dataset("inspired")
    dataset = InspiredReader(root).load()
    assert {s: len(d) for s, d in dataset.splits.items()} == {"train": 801, "valid": 99, "test": 99}
    assert dataset.kg.num_items == 1472
    assert dataset.kg.num_entities == 17320
    assert dataset.kg.num_relations == 13
    assert "self_loop" in dataset.kg.relations
    assert sum(len(d.turns) for d in dataset.splits["train"]) == 16982
    assert dataset.counters["train"]["utterances"] == 16982

    entity2id = json.loads((root / "entity2id.json").read_text())
    items = set(json.loads((root / "item_ids.json").read_text()))
    subkg = json.loads((root / "dbpedia_subkg.json").read_text())
    triples = {(int(h), r, t) for h, edges in subkg.items() for r, t in edges}
    assert dataset.kg.num_triples == len(triples)
    for split in ("train", "valid", "test"):
        path = root / f"{split}_data_dbpedia.jsonl"
        for turns in ("recommender", "all"):
            standard, strict = independent_rec_counts(path, entity2id, items, turns)
            dialogues = dataset.splits[split]
            assert len(build_rec_samples(dialogues, turns=turns)) == standard
            assert len(build_rec_samples(dialogues, turns=turns, new_items_only=True)) == strict


@pytest.mark.real_data
def test_inspired_mentions_point_at_movie_names():
    root = shared_dataset("inspired")
    dataset = InspiredReader(root).load()
    turn = dataset.splits["train"][0].turns[2]
    assert turn.text[turn.mentions[0].start : turn.mentions[0].end] == "Knives Out"
    assert dataset.item_title(turn.items[0]) == "Knives Out (2019)"
    # Every movie link is either located in its text or counted as left unmasked.
    with (root / "train_data_dbpedia.jsonl").open() as f:
        links = sum(len(turn["movie_link"]) for line in f for turn in json.loads(line))
    located = sum(len(t.mentions) for d in dataset.splits["train"] for t in d.turns)
    assert located + dataset.counters["train"]["unmasked_item_mentions"] == links
    assert 0 < dataset.counters["train"]["unmasked_item_mentions"] < 0.2 * links
    for dialogue in dataset.splits["test"]:
        for t in dialogue.turns:
            assert all(m.item in t.items for m in t.mentions)


# --- bad input -------------------------------------------------------------------------

GOOD_TURN = {
    "text": "Have you seen Knives Out?",
    "role": "RECOMMENDER",
    "movie": ["Knives Out (2019)"],
    "movie_link": ["<m:knives>"],
    "movie_name": ["Knives Out"],
    "entity_link": ["<g:mystery>", "<unknown>"],
    "entity_name": ["mystery", "unknown"],
}


def write_unicrs(root: Path, train_lines: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "entity2id.json").write_text(json.dumps({"<m:knives>": 0, "<g:mystery>": 1}))
    (root / "relation2id.json").write_text(json.dumps({"<genre>": 0, "self_loop": 1}))
    (root / "dbpedia_subkg.json").write_text(json.dumps({"0": [[0, 1], [1, 0]]}))
    (root / "item_ids.json").write_text("[0]")
    seeker = {**GOOD_TURN, "role": "SEEKER", "text": "Hi", "movie_link": [], "movie_name": []}
    lines = train_lines or [json.dumps([seeker, GOOD_TURN])]
    (root / "train_data_dbpedia.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_tiny_unicrs_dataset_reads_and_counts_dropped_links(tmp_path):
    dataset = InspiredReader(write_unicrs(tmp_path / "d")).read()
    turn = dataset.splits["train"][0].turns[1]
    assert turn.items == (0,) and turn.entities == (1,)
    assert turn.text[turn.mentions[0].start : turn.mentions[0].end] == "Knives Out"
    assert dataset.counters["train"]["dropped_entity_links"] == 2  # "<unknown>" in both turns
    assert list(dataset.splits) == ["train"]


def line_error(tmp_path: Path, turn: object, raw: str | None = None) -> DataFormatError:
    lines = [json.dumps([GOOD_TURN]), raw if raw is not None else json.dumps([GOOD_TURN, turn])]
    root = write_unicrs(tmp_path / "bad", lines)
    with pytest.raises(DataFormatError) as info:
        InspiredReader(root).read()
    return info.value


def test_malformed_json_line_names_file_and_line(tmp_path):
    error = line_error(tmp_path, None, raw='[{"text": "unterminated')
    assert error.path.name == "train_data_dbpedia.jsonl" and error.line == 2
    assert "malformed JSON" in str(error)


def test_turn_without_text(tmp_path):
    turn = {k: v for k, v in GOOD_TURN.items() if k != "text"}
    error = line_error(tmp_path, turn)
    assert "train_data_dbpedia.jsonl, line 2, turn 1.text: missing field" in str(error)


def test_unknown_role(tmp_path):
    error = line_error(tmp_path, {**GOOD_TURN, "role": "BOT"})
    assert error.line == 2 and error.key == "turn 1.role"
    assert "unknown role 'BOT'" in str(error)


def test_wrong_field_type(tmp_path):
    error = line_error(tmp_path, {**GOOD_TURN, "movie_link": "<m:knives>"})
    assert error.key == "turn 1.movie_link" and "expected a list" in str(error)


def test_dialogue_that_is_not_a_list(tmp_path):
    error = line_error(tmp_path, None, raw=json.dumps({"text": "hi"}))
    assert error.line == 2 and "expected a JSON list of turns" in str(error)


def test_bad_kg_row_names_the_head(tmp_path):
    root = write_unicrs(tmp_path / "d")
    (root / "dbpedia_subkg.json").write_text(json.dumps({"0": [[0, 1], [0, 99]]}))
    with pytest.raises(DataFormatError) as info:
        InspiredReader(root).read()
    assert info.value.path.name == "dbpedia_subkg.json" and info.value.key == "0[1]"
    assert "tail id < 2" in str(info.value)


def test_non_dense_entity_ids(tmp_path):
    root = write_unicrs(tmp_path / "d")
    (root / "entity2id.json").write_text(json.dumps({"<m:knives>": 0, "<g:mystery>": 7}))
    with pytest.raises(DataFormatError, match=r"entity2id.json, <g:mystery>: expected a dense"):
        InspiredReader(root).read()


@pytest.mark.parametrize("missing", ["entity2id.json", "item_ids.json", "dbpedia_subkg.json"])
def test_missing_required_file(tmp_path, missing):
    root = write_unicrs(tmp_path / "d")
    (root / missing).unlink()
    with pytest.raises(DataFormatError, match=re.escape(f"{missing}: missing required file")):
        InspiredReader(root).load()


def test_no_split_file(tmp_path):
    root = write_unicrs(tmp_path / "d")
    (root / "train_data_dbpedia.jsonl").unlink()
    with pytest.raises(DataFormatError, match=r"none of train_data_dbpedia\.jsonl"):
        InspiredReader(root).load()
