"""KP4SR's MPP and relation templates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from transformers import GPT2TokenizerFast

from convrec.data.kg import KnowledgeGraph
from convrec.data.recbole import read_atomic
from convrec.text.templates import (
    MASK_TOKEN,
    RELATION_TEMPLATES,
    TEST_TEMPLATE,
    TRAIN_TEMPLATES,
    PromptTemplate,
    RelationTemplate,
    Segment,
    entity_texts,
    fallback_template,
    mpp_template,
    relation_template,
    user_text,
)
from convrec.text.tokenizer import bundled_bpe_files
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def gpt2() -> GPT2TokenizerFast:
    vocab, merges = bundled_bpe_files()
    return GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))


def test_mpp_renders_segments_tagged_with_history_positions():
    template = PromptTemplate("t", "{user} has watched {history} and will watch {mask} next .")
    prompt = template.render(user_text("23"), ["12", "57", "301"])

    assert prompt.text == "User_23 has watched 12 , 57 , 301 and will watch <extra_id_0> next ."
    assert prompt.segments == (
        Segment("User_23 has watched"),
        Segment(" 12", 0),
        Segment(" ,"),
        Segment(" 57", 1),
        Segment(" ,"),
        Segment(" 301", 2),
        Segment(" and will watch <extra_id_0> next ."),
    )
    assert prompt.num_items == 3
    spans = prompt.item_spans()
    assert [(k, prompt.text[a:b]) for k, a, b in spans] == [(0, "12"), (1, "57"), (2, "301")]


def test_mpp_history_may_open_the_sentence_and_repeat_items():
    prompt = PromptTemplate("t", "{history} then {mask} for {user}").render("u", ["7", "7"])
    assert prompt.text == "7 , 7 then <extra_id_0> for u"
    assert [s.item for s in prompt.segments] == [0, -1, 1, -1]
    assert prompt.segments[0].text == "7"  # the sentence's first segment has no leading space


@pytest.mark.parametrize("template", [*TRAIN_TEMPLATES, TEST_TEMPLATE], ids=lambda t: t.name)
def test_every_mpp_template_masks_the_next_item_once(template: PromptTemplate):
    prompt = template.render(user_text("5"), ["1", "2"], MASK_TOKEN)
    assert prompt.text.count(MASK_TOKEN) == 1
    assert [prompt.text[a:b] for _, a, b in prompt.item_spans()] == ["1", "2"]
    assert "User_5" in prompt.text
    assert "  " not in prompt.text and prompt.text == prompt.text.strip()


def test_test_template_is_held_out_and_training_templates_are_distinct():
    patterns = [t.pattern for t in TRAIN_TEMPLATES]
    assert 4 <= len(patterns) == len(set(patterns))
    assert TEST_TEMPLATE.pattern not in patterns
    assert mpp_template() is TEST_TEMPLATE
    rng = np.random.default_rng(0)
    drawn = {mpp_template(rng).name for _ in range(200)}
    assert drawn == {t.name for t in TRAIN_TEMPLATES}


@pytest.mark.parametrize(
    "pattern",
    [
        "{user} watched {mask} next .",
        "{history} {history} {mask}",
        "{history}: {mask}",
        "{history}",
    ],
)
def test_malformed_mpp_templates_are_rejected(pattern: str):
    with pytest.raises(ValueError, match="template"):
        PromptTemplate("bad", pattern)


def test_mpp_needs_history():
    with pytest.raises(ValueError, match="at least one history item"):
        TEST_TEMPLATE.render("u", [])


def test_relation_template_renders_and_splits_into_pieces():
    template = relation_template("film.film.directed_by")
    assert template.pattern == "[X] is directed by [Y] ."
    assert template.render("12", "e4") == " 12 is directed by e4 ."
    assert template.pieces() == ("[X]", " is directed by", "[Y]", " .")
    assert RelationTemplate("the [Y] of [X] .").pieces() == (" the", "[Y]", " of", "[X]", " .")
    with pytest.raises(ValueError, match=r"one \[X\] and one \[Y\]"):
        RelationTemplate("[X] is [X] .")


@pytest.mark.parametrize(
    ("relation", "pattern"),
    [
        ("music.artist.genre", "[X] has genre [Y] ."),
        ("book.written_work.original_language", "[X] has original language [Y] ."),
        ("<http://dbpedia.org/ontology/starring>", "[X] has starring [Y] ."),
        ("http://schema.org/birthPlace", "[X] has birth place [Y] ."),
        ("", "[X] has relation [Y] ."),
    ],
)
def test_fallback_template_reads_the_relation_name(relation: str, pattern: str):
    assert fallback_template(relation).pattern == pattern
    assert relation_template(relation).pattern == pattern


def test_relation_templates_are_well_formed_freebase_names():
    for relation, pattern in RELATION_TEMPLATES.items():
        assert relation.count(".") == 2, relation
        RelationTemplate(pattern)  # one [X], one [Y]
        assert pattern.endswith(" ."), relation
    assert len(set(RELATION_TEMPLATES.values())) == len(RELATION_TEMPLATES)


def test_every_relation_of_the_real_movielens_kg_has_a_written_template():
    # The .kg file's relation column, read with the RecBole parser (the whole reader runs in
    # tests/test_knowledge_tree.py, which checks the same on the KG it builds).
    kg_file = shared_dataset("movielens-100k") / "ml-100k.kg"
    relations = sorted(set(read_atomic(kg_file, ("relation_id",)).column("relation_id", "token")))
    assert len(relations) == 24
    missing = [r for r in relations if r not in RELATION_TEMPLATES]
    assert missing == [], f"relations without a template (they would use the fallback): {missing}"


def test_piecewise_tokenisation_equals_whole_sentence_tokenisation(gpt2: GPT2TokenizerFast):
    prompt = TRAIN_TEMPLATES[0].render(user_text("23"), ["12", "1570", "301"])
    whole = gpt2(prompt.text, add_special_tokens=False)["input_ids"]
    pieces = gpt2([s.text for s in prompt.segments], add_special_tokens=False)["input_ids"]
    assert list(itertools.chain.from_iterable(pieces)) == whole

    template = relation_template("film.film.written_by")
    sentence = template.render("1570", "m.0bxtg")
    slots = {"[X]": " 1570", "[Y]": " m.0bxtg"}
    texts = [slots.get(piece, piece) for piece in template.pieces()]
    pieces = gpt2(texts, add_special_tokens=False)["input_ids"]
    whole = gpt2(sentence, add_special_tokens=False)["input_ids"]
    assert list(itertools.chain.from_iterable(pieces)) == whole


def test_entity_texts_name_items_by_identifier_and_others_by_id_or_mid():
    kg = KnowledgeGraph.from_named_triples(
        [("m.toy", "film.film.directed_by", "m.lasseter")], items=["m.toy", "m.heat"]
    )  # entities sorted: m.heat, m.lasseter, m.toy
    item_texts = ["1", "2", "3"]
    item_entity = np.array([kg.entity_id("m.toy"), -1, kg.entity_id("m.heat")])
    assert entity_texts(kg, item_texts, item_entity) == ["3", "e1", "1"]
    assert entity_texts(kg, item_texts, item_entity, naming="mid") == ["3", "m.lasseter", "1"]
    with pytest.raises(ValueError, match="naming"):
        entity_texts(kg, item_texts, item_entity, naming="title")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same items"):
        entity_texts(kg, item_texts[:2], item_entity)
