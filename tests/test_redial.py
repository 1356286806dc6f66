from __future__ import annotations

import csv
import itertools
import json
import os
import pickle
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from convrec.data.datasets.redial import RedialReader, dbpedia_name
from convrec.data.errors import DataFormatError
from convrec.data.stats import dataset_stats
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


@pytest.mark.real_data
def test_redial_links_text_entities_on_the_real_file():
    root = shared_dataset("redial")
    dataset = RedialReader(root).load()
    kg, dialogues = dataset.kg, dataset.splits["valid"]
    linked = Counter(e for d in dialogues for t in d.turns for e in t.entities)
    assert sum(linked.values()) > 1000  # 2,064 when written; 0 before entity linking
    assert not any(kg.is_item(e) for e in linked)  # items come from @ mentions only
    assert not any(re.search(r"__\d+>$", kg.entities[e]) for e in linked)  # no duplicates
    top = {kg.entities[e] for e, _ in linked.most_common(30)}
    resource = "<http://dbpedia.org/resource/{}>".format
    assert {resource("Comedy"), resource("Tom_Hanks"), resource("Thriller_(genre)")} <= top
    names = {kg.entities[e] for e in linked}
    assert resource("Time_(magazine)") not in names  # "a long time" is not the magazine
    assert resource("Lot_(department)") not in names  # nor "a lot" a film-studio lot
    counts = dataset.counters["valid"]
    assert counts["linked_entity_mentions"] >= sum(linked.values())
    assert 0 < counts["ambiguous_entity_names"] < 0.05 * counts["entity_names"]

    tables = {t.title: t for t in dataset_stats(dataset)}
    per_split = tables["redial: dialogues and samples per split"]
    assert per_split.value("entity mentions", "valid") == f"{sum(linked.values()):,}"
    graph = tables["redial: knowledge graph"]
    assert graph.value("entity names left out as ambiguous", "count") == (
        f"{counts['ambiguous_entity_names']:,}"
    )

    plain = RedialReader(root, link_entities="none").load()
    assert all(t.entities == () for d in plain.splits["valid"] for t in d.turns)
    assert [t.items for d in plain.splits["valid"] for t in d.turns] == [
        t.items for d in dialogues for t in d.turns
    ]


# --- entity linking of the text --------------------------------------------------------

DBPEDIA = "<http://dbpedia.org/resource/{}>".format
LINKING_KG = {
    "id2entity.pkl": {10: DBPEDIA("Treasure_Island_(1950_film)"), 11: None},
    "entity2entityId.pkl": {
        DBPEDIA("Treasure_Island_(1950_film)"): 0,
        11: 1,
        DBPEDIA("Tom_Hanks"): 2,
        DBPEDIA("Tom_Hanks__1"): 3,  # a DBpedia duplicate: not a second "Tom Hanks"
        DBPEDIA("Island"): 4,
        DBPEDIA("Thriller_(genre)"): 5,
        DBPEDIA("Time_(magazine)"): 6,
        DBPEDIA("1999"): 7,
        "<http://www.imdb.com/name/nm0000158/>": 8,
        DBPEDIA("Ra%C3%BAl_Juli%C3%A1"): 9,
        DBPEDIA("Raul_Julia"): 10,  # normalises like the one above: ambiguous
        DBPEDIA("AC/DC"): 11,
    },
    "movie_ids.pkl": [0, 1],
    "subkg.pkl": {0: [(0, 2), (1, 4), (2, 5)], 1: [(0, 2), (1, 4)], 3: [(0, 9), (0, 10)]},
}
LINKING_CONVERSATION = {
    "conversationId": "8",
    "initiatorWorkerId": 1,
    "respondentWorkerId": 2,
    "movieMentions": {"10": "Treasure Island (1950)"},
    "messages": [
        {"text": "I loved @10, and Tom Hanks!", "senderWorkerId": 1},
        {"text": "Any THRILLER from 1999? No time to lose. Raul Julia?", "senderWorkerId": 1},
        {"text": "Try @11: set on an island, with tom hanks. Island life!", "senderWorkerId": 2},
        {"text": "AC/DC fans love it", "senderWorkerId": 2},
    ],
}


def linking_redial(root: Path) -> Path:
    return tiny_redial(
        root,
        LINKING_CONVERSATION,
        kg=LINKING_KG,
        catalogue="10,Treasure Island (1950),3\n11,Tom Hanks Island Thriller (2002),1\n",
    )


def test_text_entities_are_linked_outside_movie_titles(tmp_path):
    dataset = RedialReader(linking_redial(tmp_path / "r")).read()
    (dialogue,) = dataset.splits["test"]
    seeker, recommender = dialogue.turns
    assert recommender.text.startswith("Try Tom Hanks Island Thriller (2002): set on an island")
    name = dataset.kg.label
    # "Island" is in the first title, and all three names in the second: none of them is
    # linked from a title; the turn's own words are, once each, in order of appearance
    assert [name(e) for e in seeker.entities] == ["Tom Hanks", "Thriller (genre)"]
    assert [dataset.kg.entities[e] for e in recommender.entities] == [
        DBPEDIA("Island"),
        DBPEDIA("Tom_Hanks"),
        DBPEDIA("AC/DC"),  # named "AC/DC", not by its last path segment "DC"
    ]
    assert seeker.items == (0,) and recommender.items == (1,)
    # not linked: "time" (the magazine), "1999" (no letter), "Raul Julia" (two entities)
    counts = dataset.counters["test"]
    assert counts["linked_entity_mentions"] == 2 + 4  # "island" twice in the second turn
    assert counts["ambiguous_entity_names"] == 1


def test_link_entities_none_keeps_items_and_links_no_entity(tmp_path):
    root = linking_redial(tmp_path / "r")
    linked = RedialReader(root).read()
    plain = RedialReader(root, link_entities="none").read()
    (dialogue,) = plain.splits["test"]
    assert [t.entities for t in dialogue.turns] == [(), ()]
    assert [t.items for t in dialogue.turns] == [t.items for t in linked.splits["test"][0].turns]
    assert [t.text for t in dialogue.turns] == [t.text for t in linked.splits["test"][0].turns]
    assert "linked_entity_mentions" not in plain.counters["test"]
    # the option is part of the cache key: one setting is never served the other's data
    assert RedialReader(root).cache_key() != RedialReader(root, link_entities="none").cache_key()


@pytest.mark.parametrize("value", ["all", "None", None, False, ["text"]])
def test_bad_link_entities_value_is_a_clear_error(tmp_path, value):
    root = tiny_redial(tmp_path / "r")
    with pytest.raises(ValueError, match=r"link_entities.*must be one of 'text', 'none', not"):
        RedialReader(root, link_entities=value)


def test_dbpedia_names():
    assert dbpedia_name(DBPEDIA("Tom_Hanks")) == "Tom Hanks"
    assert dbpedia_name(DBPEDIA("AC/DC")) == "AC/DC"  # not "DC", the last path segment
    assert dbpedia_name(DBPEDIA("Christopher_%22Play%22_Martin")) == 'Christopher "Play" Martin'
    assert dbpedia_name(DBPEDIA("Drama_(genre)")) == "Drama (genre)"
    assert dbpedia_name(DBPEDIA("Red_Dragon_(novel)")) == "Red Dragon (novel)"  # two words
    for unnamed in ("Tom_Hanks__1", "1999", "12_", "Lot_(department)", "Hanna_(2011_film)", ""):
        assert dbpedia_name(DBPEDIA(unnamed)) is None, unnamed
    for uri in ("<http://www.imdb.com/name/nm0000158/>", "redial:11", "Tom_Hanks"):
        assert dbpedia_name(uri) is None, uri


# --- bad input -------------------------------------------------------------------------


def tiny_redial(
    root: Path,
    conversation: dict | None = None,
    kg: dict | None = None,
    catalogue: str = "10,A Movie (2001),3\n11,B  Movie (2002),1\n",
) -> Path:
    (root / "kgsf").mkdir(parents=True)
    dump = kg or {
        "id2entity.pkl": {10: "<m:a>", 11: None},
        "entity2entityId.pkl": {"<m:a>": 0, 11: 1, "<g:x>": 2},
        "movie_ids.pkl": [0, 1],
        "subkg.pkl": {0: [(0, 2)], 1: [(0, 2)]},
    }
    for name, value in dump.items():
        (root / "kgsf" / name).write_bytes(pickle.dumps(value))
    (root / "movies_with_mentions.csv").write_text("movieId,movieName,nbMentions\n" + catalogue)
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
