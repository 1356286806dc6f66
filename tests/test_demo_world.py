"""The synthetic demo world: deterministic, well-formed, and with a learnable ground truth."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys

import numpy as np
import pytest

# Import the module itself (it registers "demo"), not the package, whose other readers are
# written separately.
from convrec.data.datasets import demo
from convrec.data.datasets.base import load_dataset
from convrec.data.datasets.demo import DemoReader, generate_demo_world
from convrec.data.schema import ROLES, ConversationDataset, Turn

SMALL = {"num_movies": 80, "num_dialogues": 60}


@pytest.fixture(scope="module")
def world() -> ConversationDataset:
    return generate_demo_world(0)


def _turns(dataset: ConversationDataset) -> list[Turn]:
    return [turn for dialogues in dataset.splits.values() for d in dialogues for turn in d.turns]


def _surface(dataset: ConversationDataset, item: int) -> str:
    """The title as it appears in text: the catalogue title without its year."""
    return re.sub(r" \(\d{4}\)$", "", dataset.item_titles[item])


def _digest(dataset: ConversationDataset) -> str:
    return hashlib.sha256(
        repr(
            (
                dataset.splits,
                dataset.kg.entities,
                dataset.kg.triples.tolist(),
                sorted(dataset.item_titles.items()),
            )
        ).encode()
    ).hexdigest()


def test_same_seed_gives_the_same_dataset_and_another_seed_another():
    a, b = generate_demo_world(3, **SMALL), generate_demo_world(3, **SMALL)
    assert a.kg == b.kg
    assert a.splits == b.splits
    assert a.item_titles == b.item_titles
    assert a == b
    c = generate_demo_world(4, **SMALL)
    assert c.kg != a.kg
    assert c.splits != a.splits


def test_generation_does_not_depend_on_the_hash_seed():
    code = (
        "from convrec.data.datasets.demo import generate_demo_world as g; "
        "import tests.test_demo_world as t; "
        f"print(t._digest(g(3, **{SMALL!r})))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.stdout.strip() == _digest(generate_demo_world(3, **SMALL))


def test_sizes_match_the_options(world: ConversationDataset):
    assert world.name == "demo" and world.synthetic
    assert {s: len(d) for s, d in world.splits.items()} == {"train": 800, "valid": 100, "test": 100}
    assert world.kg.num_items == 300
    assert world.kg.relations == ("decade", "director", "genre", "sequel_of", "starring")
    assert world.counters == {
        split: {
            "dropped_entity_links": 0,
            "dropped_item_links": 0,
            "unmasked_item_mentions": 0,
            "utterances": sum(len(d.turns) for d in world.splits[split]),
        }
        for split in ("train", "valid", "test")
    }
    for split, dialogues in world.splits.items():
        assert [d.id for d in dialogues] == [f"demo-{split}-{n}" for n in range(len(dialogues))]
        assert all(6 <= len(d.turns) <= 12 for d in dialogues)

    small = generate_demo_world(
        1,
        num_movies=50,
        num_dialogues=50,
        valid_fraction=0.2,
        test_fraction=0.2,
        min_turns=4,
        max_turns=5,
    )
    assert {s: len(d) for s, d in small.splits.items()} == {"train": 30, "valid": 10, "test": 10}
    assert small.kg.num_items == 50
    assert all(4 <= len(d.turns) <= 5 for d in small.splits["train"])


def test_catalogue_titles_are_unique_and_carry_the_year(world: ConversationDataset):
    kg = world.kg
    assert sorted(world.item_titles) == kg.items.tolist()
    titles = list(world.item_titles.values())
    assert len(set(titles)) == len(titles)
    for entity, title in world.item_titles.items():
        assert re.fullmatch(r".+ \((19[6-9]\d|20[0-2]\d)\)", title)
        assert kg.entities[entity] == f"movie:{title}"
    assert any(t.split(" (")[0].endswith(" 2") for t in titles)  # sequels exist


def test_every_movie_has_genre_director_cast_and_decade(world: ConversationDataset):
    kg = world.kg
    heads, rels, tails = kg.triples.T
    for relation in ("genre", "director", "starring", "decade"):
        r = kg.relations.index(relation)
        assert np.array_equal(np.unique(heads[rels == r]), kg.items), relation
    sequel_of, director = kg.relations.index("sequel_of"), kg.relations.index("director")
    assert (kg.item_index[tails[rels != sequel_of]] < 0).all()  # only sequels point at movies
    assert np.bincount(heads[rels == director], minlength=kg.num_entities).max() == 1
    prefixes = {name.split(":", 1)[0] for name in kg.entities}
    assert prefixes == {"movie", "genre", "person", "decade"}


def test_mentions_are_the_exact_title_spans(world: ConversationDataset):
    for turn in _turns(world):
        assert {m.item for m in turn.mentions} == set(turn.items)
        last_end = 0
        for m in turn.mentions:
            assert last_end <= m.start < m.end <= len(turn.text)
            assert turn.text[m.start : m.end] == _surface(world, m.item)
            last_end = m.end


def test_links_are_catalogue_items_and_kg_entities(world: ConversationDataset):
    kg = world.kg
    for dialogue in world.splits["train"]:
        roles = [t.role for t in dialogue.turns]
        assert all(r in ROLES for r in roles)
        assert all(a != b for a, b in itertools.pairwise(roles))  # alternating
        for turn in dialogue.turns:
            assert all(kg.is_item(i) for i in turn.items)
            assert all(0 <= e < kg.num_entities and not kg.is_item(e) for e in turn.entities)
            assert len(set(turn.items)) == len(turn.items)
            for e in turn.entities:  # linked entities are named in the text
                assert kg.entities[e].split(":", 1)[1] in turn.text
    openers = [d.turns[0].role for d in world.splits["train"]]
    assert 0.6 < openers.count("recommender") / len(openers) < 0.95


def test_suggestions_follow_what_the_seeker_said(world: ConversationDataset):
    """The ground truth is learnable: new suggestions share a KG neighbour with the seeker's
    stated genres / people / decades, far more often than a random movie would."""
    kg = world.kg
    neighbours: dict[int, set[int]] = {}
    for h, _, t in kg.triples.tolist():
        neighbours.setdefault(h, set()).add(t)
    rng = np.random.default_rng(0)
    fits = chance = total = repeats = mentions = pairs = 0
    for dialogue in world.splits["train"]:
        said: set[int] = set()
        context: set[int] = set()
        for turn in dialogue.turns:
            if turn.role == "seeker":
                said |= set(turn.entities)
            else:
                pairs += len(turn.items) == 2
                for item in turn.items:
                    mentions += 1
                    if item in context:
                        repeats += 1
                    elif said:
                        total += 1
                        fits += bool(neighbours[item] & said)
                        chance += bool(neighbours[int(rng.choice(kg.items))] & said)
            context |= set(turn.items)
    assert total > 1000
    assert fits / total > 0.8
    assert fits / total > 2 * chance / total
    assert 0.05 < repeats / mentions < 0.4  # re-mentions of context items exist, as in real data
    assert pairs > 50  # some turns suggest two movies


def test_seekers_state_genres_and_mention_movies(world: ConversationDataset):
    kg = world.kg
    seeker_turns = [t for t in _turns(world) if t.role == "seeker"]
    stated = [kg.entities[e].split(":")[0] for t in seeker_turns for e in t.entities]
    assert {"genre", "person", "decade"} <= set(stated)
    assert sum(bool(t.items) for t in seeker_turns) > 0.2 * len(seeker_turns)


def test_reader_loads_through_the_cache(tmp_path, monkeypatch: pytest.MonkeyPatch):
    assert DemoReader.needs_data_dir is False and DemoReader.input_files(DemoReader()) == []
    first = load_dataset("demo", cache_dir=tmp_path, **SMALL)
    assert len(list((tmp_path / "datasets").glob("demo-*.pkl"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(demo, "generate_demo_world", fail)
    second = DemoReader(**SMALL).load(cache_dir=tmp_path)
    assert second == first == generate_demo_world(0, **SMALL)
    assert isinstance(second, ConversationDataset) and second.synthetic


def test_reader_rejects_unknown_and_bad_options():
    with pytest.raises(ValueError, match="unknown option"):
        DemoReader(num_users=3)
    with pytest.raises(ValueError, match="num_movies"):
        DemoReader(num_movies=5).read()
