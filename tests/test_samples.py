from __future__ import annotations

import pytest

from convrec.data.kg import KnowledgeGraph
from convrec.data.samples import (
    build_conv_samples,
    build_pretrain_samples,
    build_rec_samples,
    render_response,
)
from convrec.data.schema import Dialogue, Mention, Turn

# entities: 0 genre, 1 person, 2..5 movies (items)
KG = KnowledgeGraph(["genre", "person", "m2", "m3", "m4", "m5"], ["r"], [], items=[2, 3, 4, 5])

DIALOGUE = Dialogue(
    id="d",
    turns=(
        Turn("recommender", "Hi! Seen M2?", items=(2,), mentions=(Mention(2, 9, 11),)),
        Turn(
            "seeker",
            "I like comedy and M3.",
            items=(3,),
            entities=(0,),
            mentions=(Mention(3, 18, 20),),
        ),
        Turn(
            "recommender",
            "Try M4 or M3.",
            items=(4, 3),
            mentions=(Mention(4, 4, 6), Mention(3, 10, 12)),
        ),
        Turn(
            "seeker",
            "With Tom? M5 maybe.",
            items=(5,),
            entities=(1,),
            mentions=(Mention(5, 10, 12),),
        ),
        Turn(
            "recommender",
            "Then M2 or M5!",
            items=(2, 5),
            mentions=(Mention(2, 5, 7), Mention(5, 11, 13)),
        ),
    ),
)


def targets(samples):
    return [(s.turn_index, s.target_item) for s in samples]


def test_recommender_turns_one_sample_per_target_first_turn_skipped():
    samples = build_rec_samples([DIALOGUE])
    # turn 0 has no context; turn 2 gives two samples; turn 4 gives two.
    assert targets(samples) == [(2, 4), (2, 3), (4, 2), (4, 5)]
    assert samples[0].context_turns == DIALOGUE.turns[:2]
    # entities before items within a turn, first mention first, no duplicates
    assert samples[0].context_entities == (2, 0, 3)
    assert samples[2].context_entities == (2, 0, 3, 4, 1, 5)


def test_new_items_only_drops_targets_repeated_from_context():
    strict = build_rec_samples([DIALOGUE], new_items_only=True)
    # M3 (turn 2) was said at turn 1; M2 and M5 (turn 4) at turns 0 and 3.
    assert targets(strict) == [(2, 4)]


def test_pretraining_as_released_reads_the_turn_and_predicts_its_movies_and_entities():
    samples = build_pretrain_samples([DIALOGUE])
    # every turn of either role after the first: its movies, then its other entities
    assert targets(samples) == [(1, 3), (1, 0), (2, 4), (2, 3), (3, 5), (3, 1), (4, 2), (4, 5)]
    turn_1 = samples[0]
    assert turn_1.context_turns == DIALOGUE.turns[:2]  # the context and the turn itself
    assert turn_1.context_entities == (2,)  # entities of the earlier turns only


def test_pretraining_as_the_paper_describes_it_reads_the_context_before_the_turn():
    samples = build_pretrain_samples([DIALOGUE], with_response=False, targets="items")
    assert targets(samples) == targets(build_rec_samples([DIALOGUE], turns="all"))
    assert samples[0].context_turns == DIALOGUE.turns[:1]
    with pytest.raises(ValueError, match="targets must be"):
        build_pretrain_samples([DIALOGUE], targets="everything")  # type: ignore[arg-type]


def test_all_turns():
    assert targets(build_rec_samples([DIALOGUE], turns="all")) == [
        (1, 3),
        (2, 4),
        (2, 3),
        (3, 5),
        (4, 2),
        (4, 5),
    ]
    assert targets(build_rec_samples([DIALOGUE], turns="all", new_items_only=True)) == [
        (1, 3),
        (2, 4),
        (3, 5),
    ]
    with pytest.raises(ValueError, match="turns must be"):
        build_rec_samples([DIALOGUE], turns="seeker")  # type: ignore[arg-type]


def test_conversation_samples_and_item_rendering():
    samples = build_conv_samples([DIALOGUE])
    assert [s.turn_index for s in samples] == [2, 4]
    assert samples[0].response == "Try <movie> or <movie>."
    assert samples[0].response_items == (4, 3)
    tokens = build_conv_samples([DIALOGUE], item_mode="item_token", kg=KG)
    assert tokens[1].response == "Then <item_0> or <item_3>!"
    kept = build_conv_samples([DIALOGUE], item_mode="text", turns="all")
    assert [s.turn_index for s in kept] == [1, 2, 3, 4]
    assert kept[0].response == "I like comedy and M3."
    with pytest.raises(ValueError, match="needs the knowledge graph"):
        render_response(DIALOGUE.turns[0], "item_token")
