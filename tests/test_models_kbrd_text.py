"""The `kbrd` and `text` recommenders on a tiny synthetic demo world."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from convrec.data.datasets.demo import generate_demo_world
from convrec.data.samples import RecSample
from convrec.data.tasks import RecTask
from convrec.evaluation.recommendation import METRIC_MATRIX, rank_targets, validation_metrics
from convrec.models.kbrd import KBRD, KBRDConfig
from convrec.models.text import TextConfig, TextRecommender
from convrec.registry import get_model
from convrec.text.dialogue import render_context
from convrec.text.encoder import (
    DEFAULT_ENCODER,
    EncoderNotFoundError,
    SentenceEncoder,
    load_sentence_encoder,
)


@pytest.fixture(scope="module")
def task() -> RecTask:
    return RecTask(generate_demo_world(0, num_movies=60, num_dialogues=120))


@pytest.fixture(scope="module")
def samples(task: RecTask) -> list[RecSample]:
    return task.train[:8]


def test_both_models_are_registered() -> None:
    assert get_model("kbrd") is KBRD
    assert get_model("text") is TextRecommender


# -- kbrd ----------------------------------------------------------------------------------


def make_kbrd(task: RecTask, **options) -> KBRD:
    torch.manual_seed(0)
    return KBRD(KBRDConfig(dim=16, attention_dim=8, num_bases=2, **options), task)


def test_kbrd_scores_the_catalogue_and_loss_is_per_sample(task, samples) -> None:
    model = make_kbrd(task)
    batch = model.with_targets(samples)
    assert model.recommend(batch).shape == (len(samples), task.num_items)
    assert model.loss(batch).shape == (len(samples),)


def test_kbrd_context_without_entities_scores_the_item_bias(task, samples) -> None:
    model = make_kbrd(task)
    with torch.no_grad():
        model.item_bias.normal_()
    empty = dataclasses.replace(samples[0], context_entities=())
    scores = model.recommend(model.with_targets([empty, samples[1]]))
    torch.testing.assert_close(scores[0], model.item_bias.detach())
    assert not torch.allclose(scores[1], model.item_bias.detach())
    # Only empty contexts: the padded batch has no entity column at all.
    alone = model.recommend(model.with_targets([empty]))
    torch.testing.assert_close(alone[0], model.item_bias.detach())


def test_kbrd_scores_do_not_depend_on_padding(task, samples) -> None:
    model = make_kbrd(task).eval()
    short = min(samples, key=lambda s: len(s.context_entities))
    longest = max(samples, key=lambda s: len(s.context_entities))
    assert len(short.context_entities) < len(longest.context_entities)
    alone = model.recommend(model.with_targets([short]))
    padded = model.recommend(model.with_targets([short, longest]))
    torch.testing.assert_close(alone[0], padded[0])


def test_kbrd_keeps_the_latest_context_entities(task, samples) -> None:
    model = make_kbrd(task, max_context_entities=2)
    sample = max(samples, key=lambda s: len(s.context_entities))
    batch = model.with_targets([sample])
    assert batch["entities"][0].tolist() == list(sample.context_entities[-2:])
    assert batch["mask"].all()


def test_kbrd_gradients_reach_the_entity_table(task, samples) -> None:
    model = make_kbrd(task)
    model.loss(model.with_targets(samples)).mean().backward()
    grad = model.entity_embedding.weight.grad
    assert grad is not None
    # Through the R-GCN, every catalogue item's embedding gets a gradient from the softmax.
    assert grad[torch.from_numpy(task.kg.items)].abs().sum(dim=1).gt(0).all()
    assert model.rgcn.weight.grad is not None and model.rgcn.weight.grad.abs().sum() > 0


def test_kbrd_training_steps_reduce_the_loss(task, samples) -> None:
    model = make_kbrd(task)
    batch = model.with_targets(samples)
    stage = model.stages()[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = stage.loss(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# -- the sentence encoder ------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_model(task: RecTask) -> TextRecommender:
    torch.manual_seed(0)
    return TextRecommender(TextConfig(max_tokens=64), task)


def test_default_encoder_loads_offline(text_model) -> None:
    import os

    assert "HF_HUB_OFFLINE" in os.environ  # set by loading the bundled model
    assert text_model.encoder.dim == 384
    vectors = text_model.encoder.encode(["a scary movie", "a funny movie", "a scary film"])
    assert vectors.shape == (3, 384)
    similarity = vectors @ vectors.T
    assert similarity[0, 2] > similarity[0, 1]  # real pretrained weights, not random ones


def test_unknown_encoder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(EncoderNotFoundError, match="not found locally"):
        load_sentence_encoder(str(tmp_path / "no-such-model"))


def test_encoder_exposes_token_states_and_keeps_the_end(text_model) -> None:
    encoder: SentenceEncoder = text_model.encoder
    long_text = "filler " * 100 + "the very last words"
    features = encoder.tokenize(["short", long_text])
    assert features["input_ids"].shape[1] == encoder.max_tokens == 64
    tail = encoder.tokenizer.decode(features["input_ids"][1], skip_special_tokens=True)
    assert tail.endswith("the very last words")
    output = encoder(features)
    assert output["token_embeddings"].shape == (2, 64, 384)
    assert output["sentence_embedding"].shape == (2, 384)


# -- text ----------------------------------------------------------------------------------


def test_render_context_prefixes_speakers(samples) -> None:
    text = render_context(samples[0].context_turns)
    assert text.startswith(("User: ", "System: "))
    assert samples[0].context_turns[-1].text in text


def test_text_scores_and_loss_shapes(text_model, samples, task) -> None:
    batch = text_model.with_targets(samples)
    assert text_model.recommend(batch).shape == (len(samples), task.num_items)
    assert text_model.loss(batch).shape == (len(samples),)


def test_frozen_text_model_trains_only_the_item_table_and_memoises(
    text_model, samples, monkeypatch
) -> None:
    model = text_model.train()
    assert not model.encoder.training  # a frozen encoder never uses dropout
    model.clear_cache()
    stage = model.stages()[0]
    # the trainer trains what requires grad when a stage names no parameters
    assert stage.parameters is None
    params = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in model.item_scorer.parameters()}
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    scorer_before = model.item_scorer.weight.detach().clone()

    batch = model.with_targets(samples)
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    stage.loss(batch).mean().backward()
    optimizer.step()

    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[name]), name
    assert not torch.equal(model.item_scorer.weight, scorer_before)
    assert len(model._context_cache) == len(set(batch["contexts"]))

    def fail(*args, **kwargs):
        raise AssertionError("a memoised context was encoded again")

    monkeypatch.setattr(model.encoder, "encode", fail)
    model.recommend(batch)  # served from the cache


def test_frozen_encoder_stays_out_of_checkpoints(text_model, samples) -> None:
    state = text_model.state_dict()
    assert set(state) == {"item_scorer.weight", "item_scorer.bias"}
    text_model.recommend(text_model.with_targets(samples[:2]))
    text_model.load_state_dict(state, strict=True)
    assert text_model._context_cache  # same encoder weights: the memo is still valid

    encoder_weights = {f"encoder.{k}": v for k, v in text_model.encoder.state_dict().items()}
    text_model.load_state_dict({**state, **encoder_weights}, strict=True)
    assert not text_model._context_cache  # new encoder weights: stale vectors are gone


def test_fine_tuned_encoder_gets_gradients(task, samples) -> None:
    model = TextRecommender(TextConfig(max_tokens=16, freeze_encoder=False), task).train()
    model.loss(model.with_targets(samples[:2])).mean().backward()
    no_grad = [name for name, p in model.encoder.named_parameters() if p.grad is None]
    assert all(".pooler." in name for name in no_grad)  # BERT's pooler is not used
    assert not model._context_cache
    assert any(k.startswith("encoder.") for k in model.state_dict())


def test_default_encoder_name() -> None:
    assert TextConfig().encoder == DEFAULT_ENCODER


# -- shipped defaults ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["kbrd", "text"])
@pytest.mark.parametrize("dataset", ["inspired", "demo"])
def test_shipped_yaml_defaults_validate(model: str, dataset: str) -> None:
    from convrec.config import resolve_config

    config = resolve_config(model, dataset)
    if dataset == "inspired":  # the class defaults are the values tuned on INSPIRED
        assert config.model == get_model(model).Config()


def test_validation_reports_the_strict_protocol_beside_the_standard_one(task) -> None:
    """`strict/<metric>` equals ranking the strict validation samples themselves."""
    model = make_kbrd(task)
    with torch.no_grad():
        model.item_bias.normal_()
    metrics = validation_metrics(model, task)
    strict = task.eval_samples("valid", "strict")
    assert 0 < len(strict) < len(task.eval_samples("valid"))
    ranks = rank_targets(model, task, strict)
    expected = METRIC_MATRIX["conversational"](ranks)
    for name, values in expected.items():
        assert metrics[f"strict/{name}"] == pytest.approx(values.mean().item())
    assert metrics["recall@10"] != metrics["strict/recall@10"]
