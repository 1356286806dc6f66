"""UniCRS on a small demo world with a tiny GPT-2 checkpoint: the LM stays frozen, the
stages train the prompt side, responses fill slots from the recommender, runs chat."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convrec.cli import app
from convrec.config import TrainConfig, resolve_config
from convrec.data.datasets import load_dataset
from convrec.data.samples import SLOT_TOKEN, build_conv_samples
from convrec.data.tasks import RecTask
from convrec.models.base import Reply
from convrec.models.prompted import _ReplyStream
from convrec.models.unicrs import UniCRS, UniCRSConfig
from convrec.text.encoder import DEFAULT_ENCODER, SentenceEncoder, resolve_encoder_path
from convrec.text.tokenizer import load_tokenizer
from convrec.training.run import train
from convrec.training.trainer import Trainer
from tests.conftest import PROJECT_ROOT
from tests.test_lm import SMALL_DEMO, save_plain_gpt2

SMALL = dict(
    n_prefix_rec=2,
    n_prefix_conv=2,
    entity_dim=16,
    num_bases=2,
    max_context_tokens=48,
    max_text_tokens=32,
    max_new_tokens=8,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_plain_gpt2(tmp_path_factory.mktemp("lm") / "gpt2")


@pytest.fixture(scope="module")
def task() -> RecTask:
    return RecTask(load_dataset("demo", use_cache=False, **SMALL_DEMO))


@pytest.fixture
def model(checkpoint: Path, task: RecTask) -> UniCRS:
    torch.manual_seed(0)
    return UniCRS(UniCRSConfig(lm=str(checkpoint), **SMALL), task)


def test_training_changes_the_prompts_and_never_the_frozen_lm(model, tmp_path) -> None:
    frozen = {
        name: p.detach().clone()
        for name, p in [*model.backbone.named_parameters(), *model.encoder.named_parameters()]
    }
    prompt_before = {n: p.detach().clone() for n, p in model.rec_prompt.named_parameters()}
    conv_before = model.conv_prefix.vectors.detach().clone()
    config = TrainConfig(epochs=1, batch_size=8, max_steps=2, lr=1e-2, eval_batch_size=64)
    Trainer(
        model,
        config,
        seed=0,
        checkpoint_dir=tmp_path,
        validate=lambda m: {"recall@10": 0.0},
        progress=False,
    ).fit()
    for name, p in [*model.backbone.named_parameters(), *model.encoder.named_parameters()]:
        assert torch.equal(p, frozen[name]), f"frozen weight {name} changed"
    assert any(not torch.equal(p, prompt_before[n]) for n, p in model.rec_prompt.named_parameters())
    assert not torch.equal(model.conv_prefix.vectors, conv_before)
    assert bool(model.rec_prefix_on)


def test_checkpoints_hold_only_the_prompt_side(model) -> None:
    keys = set(model.state_dict())
    assert keys and not any(k.startswith(("backbone.", "encoder.")) for k in keys)
    assert {k.split(".")[0] for k in keys} == {
        "rec_prompt",
        "conv_prompt",
        "rec_prefix",
        "conv_prefix",
        "rec_prefix_on",
    }
    model.load_state_dict(model.state_dict(), strict=True)


def test_recommendation_stage_turns_the_rec_prefix_on(model) -> None:
    stages = {s.name: s for s in model.stages()}
    assert [s.name for s in model.stages()] == ["pretrain", "recommend", "converse"]
    before = model.conv_prompt.tokens.proj.weight.detach().clone()
    stages["recommend"].begin()
    assert bool(model.rec_prefix_on)
    # The conversation prompt is sized for the LM, the pre-trained one for the encoder.
    assert torch.equal(model.conv_prompt.tokens.proj.weight, before)
    assert stages["converse"].higher_is_better is False


def test_response_loss_counts_only_response_tokens(model, task) -> None:
    samples = build_conv_samples(task.dataset.dialogues("train"))[:4]
    batch = model._with_response(samples)
    labels, mask = batch["labels"], batch["input_mask"]
    for row, sample in enumerate(samples):
        scored = labels[row][labels[row] != -100].tolist()
        expected = model.tokenizer(" " + sample.response, add_special_tokens=False)["input_ids"]
        expected = [*expected[: model.config.max_response_tokens - 1], model.tokenizer.eos_token_id]
        assert scored == expected
    assert (labels[mask == 0] == -100).all()
    losses = model.response_loss(batch)
    assert losses.shape == (4,) and torch.isfinite(losses).all()


def test_slots_are_filled_with_the_recommenders_top_items(model, task, monkeypatch) -> None:
    samples = build_conv_samples(task.dataset.dialogues("test"))[:2]
    slot = model.tokenizer.convert_tokens_to_ids(SLOT_TOKEN)
    two = model.tokenizer(f" try {SLOT_TOKEN} try {SLOT_TOKEN}", add_special_tokens=False)
    word = model.tokenizer(" try", add_special_tokens=False)["input_ids"]
    eos = model.tokenizer.eos_token_id

    def fake_generate(*args, **kwargs):
        first = [*two["input_ids"], eos]
        second = [*word, eos, slot, slot][: len(first)]
        second += [eos] * (len(first) - len(second))
        return torch.tensor([first, second])

    monkeypatch.setattr(model.backbone, "generate", fake_generate)
    top = model.recommend(model.collate(samples)).topk(2, dim=1).indices
    first, second = model.respond(samples)
    expected = [int(model.task.kg.items[i]) for i in top[0]]
    assert first.items == tuple(expected)
    assert first.slotted == f"try {SLOT_TOKEN} try {SLOT_TOKEN}"
    titles = [task.dataset.item_title(i) for i in expected]
    assert first.text == f"try {titles[0]} try {titles[1]}"
    assert len(first.candidates) == 2 and first.candidates[0][:2] == tuple(expected)
    assert second.items == () and second.text == "try"  # nothing after end-of-text counts


def test_a_streamed_reply_arrives_token_by_token_with_slots_filled(
    model, task, monkeypatch
) -> None:
    sample = build_conv_samples(task.dataset.dialogues("test"))[0]
    ids = model.tokenizer(f" try {SLOT_TOKEN} tonight", add_special_tokens=False)["input_ids"]
    ids = [*ids, model.tokenizer.eos_token_id, model.tokenizer.pad_token_id]

    def scripted_generate(*args, on_token=None, **kwargs):
        for token in ids:
            if on_token is not None:
                on_token(torch.tensor([token]))
        return torch.tensor([ids])

    monkeypatch.setattr(model.backbone, "generate", scripted_generate)
    pieces: list[str] = []
    (reply,) = model.respond([sample], on_text=pieces.append)
    (plain,) = model.respond([sample])
    assert reply == plain  # streaming changes nothing about the reply
    title = task.dataset.item_title(reply.items[0])
    assert reply.text == f"try {title} tonight"
    assert "".join(pieces) == reply.text
    assert pieces[0] == "try" and title in pieces[1] and len(pieces) >= 3
    with pytest.raises(ValueError, match="streams one reply"):
        model.respond([sample, sample], on_text=pieces.append)


def test_a_wordpiece_reply_streams_words_that_later_tokens_do_not_change() -> None:
    """WordPiece's clean-up joins "you ' re" into "you're" when "re" arrives: what was
    streamed must stay a prefix of the reply, and all of the reply arrives."""
    tokenizer = load_tokenizer(resolve_encoder_path(DEFAULT_ENCODER))
    text = "i think you're welcome, it's fun!"

    class Decoding:  # the parts of a PromptedLM the stream reads
        _eos = tokenizer.eos_token_id

        def __init__(self) -> None:
            self.tokenizer = tokenizer

        def _reply(self, ids: list[int], ranked: list[int]) -> Reply:
            return Reply(text=tokenizer.decode(ids))

    pieces: list[str] = []
    stream = _ReplyStream(Decoding(), [], pieces.append)  # type: ignore[arg-type]
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        stream(torch.tensor([token]))
        assert text.startswith("".join(pieces))
    stream(torch.tensor([tokenizer.eos_token_id]))
    stream.finish(text)
    assert "".join(pieces) == text and len(pieces) >= 3


def test_generation_reports_each_step_as_it_is_chosen(model, task) -> None:
    batch = model.collate(build_conv_samples(task.dataset.dialogues("test"))[:2])
    steps: list[torch.Tensor] = []
    generated = model.backbone.generate(
        batch["context_ids"],
        batch["context_mask"],
        model._conv_prompt(batch),
        max_new_tokens=5,
        eos_token_id=-1,  # never ends early
        pad_token_id=model.tokenizer.pad_token_id,
        on_token=steps.append,
    )
    assert generated.shape == (2, 5)
    assert torch.equal(torch.stack(steps, dim=1), generated)


def test_excluded_items_never_fill_a_slot(model, task, monkeypatch) -> None:
    samples = build_conv_samples(task.dataset.dialogues("test"))[:1]
    slot = model.tokenizer.convert_tokens_to_ids(SLOT_TOKEN)
    eos = model.tokenizer.eos_token_id
    monkeypatch.setattr(
        model.backbone, "generate", lambda *a, **k: torch.tensor([[slot, slot, eos]])
    )
    top = model.recommend(model.collate(samples)).topk(3, dim=1).indices[0]
    best = [int(model.task.kg.items[i]) for i in top]
    (reply,) = model.respond(samples, exclude=[{best[0]}])
    assert reply.items == (best[1], best[2])


def test_unicrs_run_with_the_pretrained_lm_evaluates_and_chats(tmp_path) -> None:
    overrides = [
        "data.options={num_movies: 60, num_dialogues: 120}",
        "model.compact_lm.architecture={n_layer: 1, n_embd: 32, n_head: 2}",
        "model.compact_lm.block_size=32",
        "model.compact_lm.max_steps=2",
        *(f"model.{k}={v}" for k, v in SMALL.items()),
        "train.batch_size=8",
        "train.max_steps=2",
    ]
    run_dir = tmp_path / "unicrs"
    metrics = train(resolve_config("unicrs", "demo", overrides=overrides), run_dir, progress=False)
    assert "/lm/" in metrics["lm"]  # resolved from `pretrained` to the cached compact LM
    assert [row["stage"] for row in metrics["history"]] == ["pretrain", "recommend", "converse"]
    conversation = metrics["conversation"]
    for key in ("bleu-2", "dist-2", "dist-2/sent", "rouge-l", "perplexity", "item_ratio"):
        assert key in conversation
    inner = conversation["in_response"]
    assert {"rer@10", "prr@10", "f1@10", "rec_ratio", "mismatch@10"} <= set(inner)
    assert "Recommendation inside responses" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["conversation"]["turns"] > 0
    # per word: the same NLL over whitespace words (counted in test_response_words_...)
    assert conversation["word_perplexity"] > 1
    assert conversation["word_perplexity"] != conversation["perplexity"]
    converse = [row for row in metrics["history"] if row["stage"] == "converse"][-1]
    assert converse["valid/word_perplexity"] > 1

    before = (run_dir / "metrics.json").read_text()
    result = CliRunner().invoke(app, ["evaluate", "--run", str(run_dir), "--split", "valid"])
    assert result.exit_code == 0, result.output
    assert "valid split" in result.output
    valid = json.loads((run_dir / "valid_metrics.json").read_text())
    assert {r["split"] for r in valid["valid"]} == {"valid"}
    assert {r["protocol"]["name"] for r in valid["valid"]} == {"standard", "strict"}
    assert valid["conversation"]["split"] == "valid"
    assert (run_dir / "metrics.json").read_text() == before  # test results untouched

    script = "I would like a thriller\nsomething with a detective\n/reset\nany comedy?\n/quit\n"
    result = subprocess.run(
        [sys.executable, "-m", "convrec", "chat", "--run", str(run_dir)],
        input=script,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("recommends:") == 3


def test_response_words_count_what_the_lm_is_scored_on(model, task) -> None:
    """Whitespace words + end of text, of the response as truncated for the LM."""
    (sample,) = build_conv_samples(task.dataset.dialogues("test"))[:1]
    short = dataclasses.replace(sample, response="I loved that one")
    assert model.response_words([short]) == 4 + 1
    long = dataclasses.replace(sample, response=" ".join(["word"] * 200))
    limit = model.config.max_response_tokens - 1  # " word" is one GPT-2 token
    assert model.response_words([long, short]) == (limit + 1) + (4 + 1)


def test_the_recommender_steers_the_frozen_encoder_with_deep_prompts(model, task) -> None:
    """Default backbone: MiniLM under per-layer key/value prompts; its weights never train
    and never enter checkpoints, and the prompt moves its output."""
    assert model.config.rec_backbone == "encoder"
    assert model.rec_encoder.model is model.encoder.transformer  # one copy of the weights
    assert (model.rec_layers, model.rec_hidden) == (6, 384)
    assert not any(k.startswith("rec_encoder.") for k in model.state_dict())
    batch = model.with_targets(task.train[:4])
    model.entity_loss(batch).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.rec_prompt.prefix.proj.weight.grad.abs().sum() > 0
    user, _ = model._user(batch)
    with torch.no_grad():
        model.rec_prompt.prefix.proj.bias.add_(1.0)
    assert not torch.allclose(model._user(batch)[0], user)


def test_a_masked_out_prefix_leaves_the_encoder_as_it_was(model, task) -> None:
    """Tokens keep the positions of the unprompted encoder: a prefix nobody may attend to
    gives exactly the sentence encoder's own token states."""
    batch = model.collate(task.train[:3])
    prefix, _ = model._rec_prompt(batch)
    prefix.kv_mask = torch.zeros_like(prefix.kv_mask)
    prompted = model.rec_encoder.hidden_states(batch["text_ids"], batch["text_mask"], prefix)
    with torch.no_grad():
        plain = model.encoder.transformer(
            input_ids=batch["text_ids"], attention_mask=batch["text_mask"]
        ).last_hidden_state
    real = batch["text_mask"].bool()
    assert torch.allclose(prompted[real], plain[real], atol=1e-5)


def test_an_lm_backbone_recommends_from_the_lms_last_state(checkpoint, task) -> None:
    """The papers' setting (DialoGPT by path): the rec prompt is sized for the LM, and the
    conversation prompt starts from the pre-trained one."""
    torch.manual_seed(0)
    model = UniCRS(UniCRSConfig(lm=str(checkpoint), rec_backbone="lm", **SMALL), task)
    assert not hasattr(model, "rec_encoder") and model.rec_hidden == model.hidden
    with torch.no_grad():
        model.rec_prompt.tokens.proj.weight.add_(1.0)
    stages = {s.name: s for s in model.stages()}
    stages["recommend"].begin()
    assert torch.equal(model.conv_prompt.tokens.proj.weight, model.rec_prompt.tokens.proj.weight)
    scores = model.recommend(model.collate(task.eval_samples("test")[:2]))
    assert scores.shape == (2, task.num_items)


def test_a_recommendation_only_run_on_the_encoder_needs_no_lm(task) -> None:
    model = UniCRS(UniCRSConfig(lm="/nonexistent", conversation=False, **SMALL), task)
    assert model.backbone is None and not model.can_respond
    assert [s.name for s in model.stages()] == ["pretrain", "recommend"]
    batch = model.collate(task.eval_samples("test")[:2])
    assert model.recommend(batch).shape == (2, task.num_items)


def test_recommendation_can_rank_the_catalogue_with_a_learned_item_bias(checkpoint, task) -> None:
    """rec_candidates=items: the recommendation stage's softmax is over the catalogue (its
    targets are catalogue positions); pre-training still ranks every entity. item_bias adds
    a trained bias per entity to the scores, in training and at evaluation."""
    torch.manual_seed(0)
    config = UniCRSConfig(
        lm=str(checkpoint), rec_candidates="items", item_bias=True, conversation=False, **SMALL
    )
    model = UniCRS(config, task)
    stages = {s.name: s for s in model.stages()}
    samples = task.train[:4]
    batch = stages["recommend"].collate(samples)
    user, table = model._user(batch)
    scores, targets = model.training_scores(user, table, batch)
    assert scores.shape == (4, task.num_items)
    assert [int(model.task.kg.items[t]) for t in targets] == [s.target_item for s in samples]
    pretrain = stages["pretrain"].collate(samples)
    assert model.training_scores(user, table, pretrain)[0].shape == (4, task.kg.num_entities)
    stages["recommend"].loss(batch).sum().backward()
    assert model.entity_bias.grad[model.items].abs().sum() > 0
    with torch.no_grad():
        model.entity_bias[model.items[0]] += 100.0
        assert (model.recommend(model.collate(samples)).argmax(dim=1) == 0).all()


def test_entity_names_add_the_encoders_vector_of_each_name(checkpoint, task) -> None:
    """entity_names: each row of the entity table adds scale * the frozen encoder's
    normalised vector of the entity's name (item titles for items); the vectors are derived
    data (not in checkpoints), the scale trains at the head's learning rate."""
    torch.manual_seed(0)
    config = UniCRSConfig(
        lm="/nonexistent",
        conversation=False,
        entity_names=True,
        name_scale=3.0,
        item_bias=True,
        head_lr_scale=20.0,
        rec_normalize=True,
        **SMALL,
    )
    model = UniCRS(config, task)
    entities = model.rec_prompt.entities
    item = int(task.kg.items[0])
    expected = model.encoder.encode([task.dataset.item_title(item)])[0]
    expected = expected / expected.norm()
    assert torch.allclose(entities.names.vectors[item], expected, atol=1e-5)
    with torch.no_grad():
        graph_only = super(type(entities), entities).forward()
        assert torch.allclose(entities(), graph_only + 3.0 * entities.names.vectors, atol=1e-5)
    keys = set(model.state_dict())
    assert "rec_prompt.entities.names.scale" in keys
    assert not any(k.endswith("names.vectors") for k in keys)
    assert model.head_lr_scale(entities.names.scale) == 20.0
    assert model.head_lr_scale(model.entity_bias) == 20.0
    assert model.head_lr_scale(entities.nodes) == 1.0
    # rec_normalize: the user vector is a unit vector, as the sentence encoder's output.
    user, _ = model._user(model.collate(task.eval_samples("test")[:3]))
    assert torch.allclose(user.norm(dim=1), torch.ones(3), atol=1e-5)


def test_name_vectors_are_cached_on_disk_by_the_names_and_the_encoder(monkeypatch) -> None:
    """Encoding ReDial's 64k names takes minutes: a second process reads them back; other
    names (or other encoder weights) are another key."""
    from convrec.prompting import entity_names

    encoder = SentenceEncoder()
    names = ["Alien (1979)", "Ridley Scott"]
    first = entity_names.name_vectors(encoder, names)
    assert torch.allclose(first.norm(dim=1), torch.ones(2), atol=1e-5)
    entity_names._NAME_VECTORS.clear()  # as a new process

    def not_again(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(encoder, "encode", not_again)
    assert torch.equal(entity_names.name_vectors(encoder, names), first)
    with pytest.raises(AssertionError, match="encoded again"):
        entity_names.name_vectors(encoder, [*names, "Heat (1995)"])
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    with pytest.raises(AssertionError, match="encoded again"):
        entity_names.name_vectors(encoder, names)
