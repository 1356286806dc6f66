"""Conversation metrics on a stub model whose replies and ranking are known."""

from __future__ import annotations

import pytest

from convrec.data.datasets import load_dataset
from convrec.data.samples import SLOT_TOKEN, build_conv_samples
from convrec.data.tasks import RecTask
from convrec.evaluation.conversation import conversation_metrics
from convrec.models.base import ModelConfig, Reply
from tests.conftest import IndexRanker


class FixedRanking(IndexRanker):
    """Ranks the catalogue in index order; answers with the reference text and, when it
    has items, one slot filled with the top item."""

    name = "fixed"
    description = "stub"
    Config = ModelConfig
    can_respond = True

    def ranking(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.task.kg.items[:50])

    def respond(self, samples):
        replies = []
        for sample in samples:
            if sample.response_items:
                top = self.ranking()
                replies.append(Reply(f"try {SLOT_TOKEN}", (top[0],), f"try {SLOT_TOKEN}", (top,)))
            else:
                replies.append(Reply(sample.response, (), sample.response))
        return replies


@pytest.fixture(scope="module")
def task() -> RecTask:
    return RecTask(load_dataset("demo", use_cache=False, num_movies=60, num_dialogues=120))


def test_in_response_metrics_equal_the_recommender_when_every_slot_is_its_ranking(task):
    model = FixedRanking(ModelConfig(), task)
    metrics = conversation_metrics(model, task, "test", progress=False)
    samples = build_conv_samples(task.dataset.dialogues("test"))
    with_items = [s for s in samples if s.response_items]
    inner = metrics["in_response"]
    assert metrics["turns"] == len(samples) and inner["turns"] == len(with_items)
    assert inner["rec_ratio"] == 1.0
    assert metrics["item_ratio"] == pytest.approx(len(with_items) / len(samples))
    # each turn's one slot carries the recommender's ranking: no mismatch at any k
    top = model.ranking()
    for k in (1, 10, 50):
        gold = [set(s.response_items) for s in with_items]
        expected = sum(len(g & set(top[:k])) for g in gold) / sum(len(g) for g in gold)
        assert inner[f"recommender_recall@{k}"] == pytest.approx(expected)
        assert inner[f"rer@{k}"] == pytest.approx(expected)
        assert inner[f"mismatch@{k}"] == 0.0 or expected == 0.0
    assert 0.0 < inner["recommender_recall@50"] <= 1.0


def test_a_catalogue_smaller_than_a_cutoff_is_measured_at_the_cutoffs_it_has():
    small = RecTask(load_dataset("demo", use_cache=False, num_movies=30, num_dialogues=60))
    assert 10 < small.num_items < 50
    inner = conversation_metrics(FixedRanking(ModelConfig(), small), small, progress=False)[
        "in_response"
    ]
    assert "mismatch@10" in inner and "mismatch@50" not in inner
