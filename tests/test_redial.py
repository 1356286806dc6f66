from __future__ import annotations

import csv
import itertools
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest

from convrec.data.datasets.redial import RedialReader
from convrec.data.errors import DataFormatError
from tests.conftest import shared_dataset


@pytest.mark.real_data
def test_redial_counts_match_the_files():
    root = shared_dataset("redial")
    dataset = RedialReader(root).load()
    assert list(dataset.splits) == ["valid"]  # only the KGSF validation file ships here
    assert dataset.kg.num_entities == 64362
    assert dataset.kg.num_items == 6924
    assert dataset.kg.num_relations == 214

    raw = [json.loads(line) for line in (root / "valid_data.jsonl").open()]
    dialogues = dataset.splits["valid"]
    assert len(dialogues) == len(raw) == 901
    for conversation, dialogue in zip(raw, dialogues, strict=True):
        senders = [m["senderWorkerId"] for m in conversation["messages"]]
        changes = sum(a != b for a, b in itertools.pairwise(senders))
        assert len(dialogue.turns) == (changes + 1 if senders else 0)
        assert dialogue.id == str(conversation["conversationId"])
        first_role = "seeker" if senders[0] == conversation["initiatorWorkerId"] else "recommender"
        assert dialogue.turns[0].role == first_role
    assert dataset.counters["valid"]["utterances"] == sum(len(c["messages"]) for c in raw)


@pytest.mark.real_data
def test_redial_mentions_resolved_to_titles_and_items():
    root = shared_dataset("redial")
    dataset = RedialReader(root).load()
    first = dataset.splits["valid"][0]
    turn = first.turns[3]
    assert turn.role == "recommender"
    assert turn.text.endswith("have you seen Man on Wire (2008) ?")
    assert turn.text[turn.mentions[0].start : turn.mentions[0].end] == "Man on Wire (2008)"
    assert dataset.item_title(turn.items[0]) == "Man on Wire (2008)"

    raw = [json.loads(line) for line in (root / "valid_data.jsonl").open()]
    mentions = sum(len(re.findall(r"@\d+", m["text"])) for c in raw for m in c["messages"])
    located = sum(len(t.mentions) for d in dataset.splits["valid"] for t in d.turns)
    assert located + dataset.counters["valid"].get("unmasked_item_mentions", 0) == mentions
    # every ReDial movie is an entity of the KGSF graph (unlinked ones by their ReDial id)
    with (root / "movies_with_mentions.csv").open() as f:
        assert sum(1 for _ in csv.reader(f)) - 1 == 6924 == len(dataset.item_titles)


# --- bad input -------------------------------------------------------------------------


def tiny_redial(root: Path, conversation: dict | None = None) -> Path:
    (root / "kgsf").mkdir(parents=True)
    dump = {
        "id2entity.pkl": {10: "<m:a>", 11: None},
        "entity2entityId.pkl": {"<m:a>": 0, 11: 1, "<g:x>": 2},
        "movie_ids.pkl": [0, 1],
        "subkg.pkl": {0: [(0, 2)], 1: [(0, 2)]},
    }
    for name, value in dump.items():
        (root / "kgsf" / name).write_bytes(pickle.dumps(value))
    (root / "movies_with_mentions.csv").write_text(
        "movieId,movieName,nbMentions\n10,A Movie (2001),3\n11,B  Movie (2002),1\n"
    )
    conversation = conversation or {
        "conversationId": "7",
        "initiatorWorkerId": 1,
        "respondentWorkerId": 2,
        "movieMentions": {"10": "A Movie (2001)"},
        "messages": [
            {"text": "hi", "senderWorkerId": 1},
            {"text": "any tips?", "senderWorkerId": 1},
            {"text": "@10 or @11", "senderWorkerId": 2},
        ],
    }
    (root / "test_data.jsonl").write_text(json.dumps(conversation) + "\n")
    return root


def test_tiny_redial_merges_messages_and_resolves_both_kinds_of_movie(tmp_path):
    dataset = RedialReader(tiny_redial(tmp_path / "r")).read()
    (dialogue,) = dataset.splits["test"]
    assert [(t.role, t.text) for t in dialogue.turns] == [
        ("seeker", "hi any tips?"),
        ("recommender", "A Movie (2001) or B Movie (2002)"),
    ]
    assert dialogue.turns[1].items == (0, 1)
    assert dataset.kg.entities[1] == "redial:11"  # unlinked movie named by its ReDial id
    assert dataset.kg.relations == ("kgsf:0",)


def test_unsafe_pickle_is_refused(tmp_path):
    root = tiny_redial(tmp_path / "r")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (root / "kgsf" / "subkg.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataFormatError, match=r"subkg.pkl: unsafe pickle: refusing to load global"):
        RedialReader(root).read()


def test_sender_who_is_neither_participant(tmp_path):
    conversation = {
        "conversationId": 3,
        "initiatorWorkerId": 1,
        "respondentWorkerId": 2,
        "movieMentions": {},
        "messages": [{"text": "hi", "senderWorkerId": 9}],
    }
    root = tiny_redial(tmp_path / "r", conversation)
    with pytest.raises(DataFormatError) as info:
        RedialReader(root).read()
    assert info.value.line == 1 and info.value.key == "messages[0].senderWorkerId"


def test_message_without_text(tmp_path):
    conversation = {
        "conversationId": 3,
        "initiatorWorkerId": 1,
        "respondentWorkerId": 2,
        "messages": [{"senderWorkerId": 1}],
    }
    root = tiny_redial(tmp_path / "r", conversation)
    with pytest.raises(DataFormatError, match=r"line 1, messages\[0\].text: missing field"):
        RedialReader(root).read()


def test_missing_kg_pickle(tmp_path):
    root = tiny_redial(tmp_path / "r")
    (root / "kgsf" / "movie_ids.pkl").unlink()
    with pytest.raises(DataFormatError, match=r"movie_ids\.pkl: missing required file"):
        RedialReader(root).load()


def test_kg_pickles_beside_the_dialogues_are_found(tmp_path):
    root = tiny_redial(tmp_path / "r")
    for path in (root / "kgsf").iterdir():
        shutil.move(path, root / path.name)
    (root / "kgsf").rmdir()
    assert RedialReader(root).read().kg.num_items == 2


def test_bad_csv_row(tmp_path):
    root = tiny_redial(tmp_path / "r")
    (root / "movies_with_mentions.csv").write_text("movieId,movieName,nbMentions\nabc,Oops,1\n")
    with pytest.raises(DataFormatError, match=r"movies_with_mentions\.csv, line 2"):
        RedialReader(root).read()
