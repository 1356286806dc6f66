"""Entity linking of free text: names, normalisation, longest match, conflicts."""

from __future__ import annotations

import pytest

from convrec.data.datasets.demo import generate_demo_world
from convrec.data.kg import KnowledgeGraph
from convrec.data.linking import EntityLinker, normalise

MOVIES = {
    "movie:The Silent Harbor (1994)": "The Silent Harbor (1994)",
    "movie:The Silent Harbor 2 (1998)": "The Silent Harbor 2 (1998)",
    "movie:Bo's Carnival (1977)": "Bo's Carnival (1977)",
    "movie:Halloween (1978)": "Halloween (1978)",
    "movie:Halloween (2018)": "Halloween (2018)",
    "movie:Up (2009)": "Up (2009)",
    "movie:Hanna (2011)": "Hanna (2011)",
    "movie:Paris": "Paris",
}
OTHERS = (
    "genre:sci-fi",
    "genre:drama",
    "person:Alejandro Amenábar",
    "person:It",
    "person:Hanna",
    "place:Paris",
    "thing:Harbor Lights of Paris",
)


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.from_named_triples(
        [("movie:The Silent Harbor (1994)", "genre", "genre:drama")],
        items=MOVIES,
        extra_entities=OTHERS,
    )


@pytest.fixture(scope="module")
def linker(kg: KnowledgeGraph) -> EntityLinker:
    return EntityLinker(kg, {kg.entity_id(name): title for name, title in MOVIES.items()})


def names(kg: KnowledgeGraph, ids: tuple[int, ...]) -> list[str]:
    return [kg.entities[i] for i in ids]


def test_normalise_drops_case_punctuation_apostrophes_and_accents() -> None:
    assert normalise("  Bo's   CARNIVAL!! ") == "bos carnival"
    assert normalise("Sci-Fi") == "sci fi"
    assert normalise("Amenábar") == "amenabar"


def test_title_in_lowercase_with_other_punctuation_is_found(kg, linker) -> None:
    text = "i loved bos carnival... and the silent harbor, honestly"
    linked = linker.link(text)
    assert names(kg, linked.items) == [
        "movie:Bo's Carnival (1977)",
        "movie:The Silent Harbor (1994)",
    ]
    assert linked.entities == ()
    # mentions locate the titles as the user wrote them
    assert [text[m.start : m.end] for m in linked.mentions] == ["bos carnival", "the silent harbor"]
    assert linker.link("The Silent Harbor (1994)!").items == linked.items[1:]


def test_entities_by_label_without_namespace_in_order_each_once(kg, linker) -> None:
    linked = linker.link("Drama, scifi or SCI-FI by Alejandro Amenabar? Mostly drama.")
    assert names(kg, linked.entities) == [
        "genre:drama",
        "genre:sci-fi",
        "person:Alejandro Amenábar",
    ]
    assert linked.items == () and linked.mentions == ()


def test_overlapping_longer_name_wins(kg, linker) -> None:
    sequel = linker.link("what about the silent harbor 2")
    assert names(kg, sequel.items) == ["movie:The Silent Harbor 2 (1998)"]
    # "the silent harbor" (3 words) overlaps "harbor lights of paris" (4): the longer wins,
    # even though the shorter one starts first
    linked = linker.link("the silent harbor lights of paris")
    assert linked.items == ()
    assert names(kg, linked.entities) == ["thing:Harbor Lights of Paris"]


def test_unknown_text_gives_nothing(linker) -> None:
    for text in ("", "   ", "nothing I know of, really", "!!!"):
        linked = linker.link(text)
        assert (linked.items, linked.entities, linked.mentions) == ((), (), ())


def test_short_stop_word_and_ambiguous_names_are_skipped(kg, linker) -> None:
    # "It" (2 chars) and "Up" (a stop word) never fire; the full title "Up (2009)" does
    assert linker.link("it is up to you").entities == ()
    assert linker.link("it is up to you").items == ()
    assert names(kg, linker.link("up 2009").items) == ["movie:Up (2009)"]
    # "Halloween" names two items: left out rather than guessed; the full titles link
    assert linker.link("halloween").items == ()
    assert names(kg, linker.link("Halloween (2018)").items) == ["movie:Halloween (2018)"]
    assert linker.ambiguous == 1


def test_full_names_beat_aliases_and_items_beat_other_entities(kg, linker) -> None:
    # "Hanna" is a person's full name and only an alias of "Hanna (2011)"
    assert names(kg, linker.link("hanna").entities) == ["person:Hanna"]
    # "Paris" is the full name of a film and of a place: the catalogue item wins
    assert names(kg, linker.link("paris").items) == ["movie:Paris"]


def test_demo_turns_link_as_the_dataset_links_them() -> None:
    """The demo world's turns are generated from names, so linking must recover them all."""
    dataset = generate_demo_world(0, num_movies=60, num_dialogues=60)
    linker = EntityLinker.for_dataset(dataset)
    turns = [t for split in ("train", "test") for d in dataset.dialogues(split) for t in d.turns]
    assert sum(bool(t.items or t.entities) for t in turns) > 100
    for turn in turns:
        linked = linker.link(turn.text)
        assert set(linked.items) == set(turn.items), turn.text
        assert set(linked.entities) == set(turn.entities), turn.text
        lowered = linker.link(turn.text.lower().replace("'", ""))
        assert set(lowered.items) == set(turn.items), turn.text
