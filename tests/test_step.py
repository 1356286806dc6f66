"""STEP: the F-Former's branches and masks, the curriculum reaching the losses, the dual
prefixes, recommendation-only runs, and a full demo run that evaluates, chats and resumes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from convrec.config import TrainConfig, resolve_config
from convrec.data.datasets import load_dataset
from convrec.data.samples import build_conv_samples
from convrec.data.tasks import RecTask
from convrec.models.step import STEP, STEPConfig
from convrec.prompting.fformer import FFormer
from convrec.serving.session import ChatSession
from convrec.training.run import load_run, train
from convrec.training.trainer import Trainer
from tests.test_lm import SMALL_DEMO, save_plain_gpt2

SMALL = dict(
    n_queries=3,
    n_prefix_rec=2,
    n_prefix_conv=2,
    entity_dim=16,
    num_bases=2,
    fformer_dropout=0.0,
    max_context_tokens=32,
    max_text_tokens=32,
    max_response_tokens=16,
    max_new_tokens=8,
)


# -- F-Former ----------------------------------------------------------------------------


@pytest.fixture
def fformer() -> FFormer:
    torch.manual_seed(0)
    return FFormer(16, heads=2, layers=2, n_queries=3, dropout=0.0).eval()


def test_fformer_outputs_unit_queries_and_text(fformer) -> None:
    entities, tokens = torch.randn(2, 4, 16), torch.randn(2, 5, 16)
    out = fformer(
        entities, torch.ones(2, 4, dtype=torch.bool), tokens, torch.ones(2, 5, dtype=torch.bool)
    )
    assert out.queries.shape == (2, 3, 16) and out.text.shape == (2, 16)
    assert torch.allclose(out.entity_queries.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    assert torch.allclose(out.text.norm(dim=-1), torch.ones(2), atol=1e-5)
    # Z = (Z1 + Z2) / 2 with both unit vectors: never longer than 1.
    assert (out.queries.norm(dim=-1) <= 1 + 1e-5).all()
    assert torch.isclose(fformer.temperature, torch.tensor(0.07))


def test_fformer_ignores_padding_and_handles_contexts_without_entities(fformer) -> None:
    entities, tokens = torch.randn(2, 4, 16), torch.randn(2, 5, 16)
    entity_mask = torch.tensor([[True, True, False, False], [False] * 4])
    token_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = fformer(entities, entity_mask, tokens, token_mask)
    assert torch.isfinite(out.queries).all()  # the second context has no entity at all
    entities[0, 2:] += 5.0  # padding entities
    tokens[1, 3:] += 5.0  # padding tokens
    again = fformer(entities, entity_mask, tokens, token_mask)
    assert torch.allclose(out.queries, again.queries, atol=1e-5)
    assert torch.allclose(out.text, again.text, atol=1e-5)
    entities[0, 0] += 5.0  # a real entity does matter
    assert not torch.allclose(
        out.entity_queries, fformer(entities, entity_mask, tokens, token_mask).entity_queries
    )


def test_fformer_cross_attends_every_second_layer() -> None:
    fformer = FFormer(16, heads=2, layers=4, n_queries=3, cross_every=2)
    assert [layer.cross_attention is not None for layer in fformer.layers] == [
        True,
        False,
        True,
        False,
    ]


# -- the model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_plain_gpt2(tmp_path_factory.mktemp("lm") / "gpt2")


@pytest.fixture(scope="module")
def task() -> RecTask:
    return RecTask(load_dataset("demo", use_cache=False, **SMALL_DEMO))


def make(checkpoint: Path, task: RecTask, **overrides) -> STEP:
    torch.manual_seed(0)
    return STEP(STEPConfig(lm=str(checkpoint), **{**SMALL, **overrides}), task)


def fit(model: STEP, tmp_path: Path, **settings) -> list[dict]:
    config = TrainConfig(**{"epochs": 1, "batch_size": 64, "lr": 1e-2, **settings})
    improving = itertools.count()  # every epoch is the best so far
    state = Trainer(
        model,
        config,
        seed=0,
        checkpoint_dir=tmp_path,
        validate=lambda m: {"recall@10": float(next(improving))},
        progress=False,
    ).fit()
    return state.history


def test_curriculum_weights_are_logged_per_epoch_and_reach_the_loss(
    checkpoint, task, tmp_path
) -> None:
    model = make(checkpoint, task, conversation=False)
    stages = {s.name: s for s in model.stages()}
    batch = model.with_targets(task.train[:8])
    model.eval()
    stages["pretrain"].epoch_begin(0)  # contrastive only
    contrastive_only = stages["pretrain"].loss(batch)
    stages["pretrain"].epoch_begin(2)  # + triplet + auxiliary
    everything = stages["pretrain"].loss(batch)
    assert not torch.allclose(contrastive_only, everything)

    history = fit(make(checkpoint, task, conversation=False), tmp_path, epochs=3)
    pretrain = [row for row in history if row["stage"] == "pretrain"]
    assert [row["weight/triplet"] for row in pretrain] == [0.0, 0.4, 0.4]
    assert [row["weight/auxiliary"] for row in pretrain] == [0.0, 0.0, 0.3]
    assert {row["weight/alignment"] for row in pretrain} == {0.5}
    recommend = [row for row in history if row["stage"] == "recommend"]
    assert recommend and all(row["weight/alignment"] == 0.2 for row in recommend)
    assert all(row["weight/auxiliary"] == 0.3 for row in recommend)


def test_without_curriculum_every_loss_is_on_from_the_first_epoch(checkpoint, task) -> None:
    model = make(checkpoint, task, curriculum={"mode": "none"}, conversation=False)
    logged = model.stages()[0].epoch_begin(0)
    assert logged["weight/triplet"] == 0.4 and logged["weight/auxiliary"] == 0.3


def test_the_recommendation_prefix_is_p_rec_then_the_fused_queries(
    checkpoint, task, monkeypatch
) -> None:
    model = make(checkpoint, task).eval()
    seen, project = [], model.rec_projection.forward

    def recording(prompt: torch.Tensor):
        seen.append(tuple(prompt.shape))
        return project(prompt)

    monkeypatch.setattr(model.rec_projection, "forward", recording)
    batch = model.collate(task.train[:4])
    model.recommend(batch)
    model.rec_prefix_on.fill_(True)
    model.recommend(batch)
    width = model.rec_hidden  # the prompted encoder (MiniLM: 384)
    assert seen == [(4, 3, width), (4, 2 + 3, width)]  # pretraining: Z only; then [P_rec ; Z]


def test_raw_prompt_queries_are_the_unnormalised_branch_outputs(checkpoint, task) -> None:
    model = make(checkpoint, task, prompt_queries="raw").eval()
    batch = model.collate(task.train[:4])
    with torch.no_grad():
        out, _ = model.rec_side(batch, model._token_states(batch))
    # Z averages two unit vectors; the raw outputs keep their own lengths.
    assert (out.queries.norm(dim=-1) <= 1 + 1e-5).all()
    assert not torch.allclose(out.raw_queries.norm(dim=-1), out.queries.norm(dim=-1))
    assert torch.equal(model.rec_side.prompt(out), out.raw_queries)
    assert torch.equal(make(checkpoint, task).rec_side.prompt(out), out.queries)
    scaled_model = make(checkpoint, task, prompt_queries="scaled")
    scaled = scaled_model.rec_side
    assert torch.allclose(scaled.prompt(out), out.queries * math.sqrt(scaled_model.rec_hidden))
    assert scaled.query_scale.requires_grad


def test_the_conversation_prefix_is_an_input_embedding_prefix(checkpoint, task) -> None:
    model = make(checkpoint, task).eval()
    prefix = model._conv_prompt(model.collate(task.train[:4]))
    assert prefix.key_values is None
    assert prefix.embeds.shape == (4, 2 + 3, 32)  # P_conv ; LayerNorm(Linear(Z))


def test_the_conversation_prefix_starts_at_the_scale_of_the_lms_token_embeddings(
    checkpoint, task
) -> None:
    model = make(checkpoint, task).eval()
    prefix = model._conv_prompt(model.collate(task.train[:4]))
    queries = prefix.embeds[:, model.config.n_prefix_conv :]
    tokens = model.backbone.lm.get_input_embeddings().weight.norm(dim=1).mean()
    assert queries.norm(dim=-1).mean().item() == pytest.approx(tokens.item(), rel=0.05)


def test_the_bce_loss_weighs_the_positive_as_much_as_all_negatives(checkpoint, task) -> None:
    model = make(checkpoint, task, rec_loss="bce", conversation=False).eval()
    batch = model.with_targets(task.train[:4])
    model._phase_weight = 0.0  # L_rec only
    with torch.no_grad():
        loss = model.recommendation_loss(batch)
        user, table = model._user(batch)
    scores = user @ table.T
    target = scores.gather(1, batch["target_entities"][:, None])[:, 0]
    softplus = torch.nn.functional.softplus
    negatives = (softplus(scores).sum(1) - softplus(target)) / (scores.shape[1] - 1)
    assert torch.allclose(loss, softplus(-target) + negatives, atol=1e-4)


def test_training_moves_prompts_never_the_frozen_lm_and_bce_works(
    checkpoint, task, tmp_path
) -> None:
    model = make(checkpoint, task, rec_loss="bce")
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    fformer = model.rec_side.fformer.query_init.detach().clone()
    history = fit(model, tmp_path, max_steps=1)
    assert [row["stage"] for row in history] == ["pretrain", "recommend", "converse"]
    assert all(torch.equal(p, frozen[n]) for n, p in model.backbone.named_parameters())
    assert not torch.equal(model.rec_side.fformer.query_init, fformer)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in history)
    keys = {k.split(".")[0] for k in model.state_dict()}
    assert keys == {
        "rec_side",
        "rec_prefix",
        "rec_projection",
        "conv_side",
        "conv_prefix",
        "conv_adapter",
        "rec_prefix_on",
        "pretrain_epochs",
    }


def test_models_of_one_process_share_the_frozen_encoder_states(checkpoint, task) -> None:
    first, second = make(checkpoint, task), make(checkpoint, task, n_queries=2)
    batch = first.collate(task.train[:4])
    first._token_states(batch)
    assert first._text_memo is second._text_memo and batch["texts"][0] in second._text_memo
    # Encoder weights loaded from a checkpoint make the shared states stale for that model.
    second.load_state_dict({**second.state_dict(), **second.encoder.state_dict(prefix="encoder.")})
    assert second._text_memo is not first._text_memo and not second._text_memo


def test_recommendation_only_models_have_no_conversation_side(checkpoint, task, tmp_path) -> None:
    model = make(checkpoint, task, conversation=False)
    assert not model.can_respond
    assert [s.name for s in model.stages()] == ["pretrain", "recommend"]
    assert not hasattr(model, "conv_side")
    # The run's config (configs/step.yaml) still sets the skipped stage: accepted, unused.
    history = fit(model, tmp_path, max_steps=1, stages={"converse": {"lr": 1e-4}})
    assert [row["stage"] for row in history] == ["pretrain", "recommend"]
    with pytest.raises(ValueError, match="no stage 'converze'"):
        fit(make(checkpoint, task), tmp_path / "typo", stages={"converze": {"lr": 1e-4}})


def test_the_conversation_loss_adds_only_target_free_alignment(checkpoint, task) -> None:
    model = make(checkpoint, task).eval()
    converse = model.stages()[2]
    logged = converse.epoch_begin(0)
    assert logged["weight/triplet"] == 0.0 and logged["weight/auxiliary"] == 0.0
    batch = model._with_response(build_conv_samples(task.dataset.dialogues("train"))[:4])
    sums, counts = model.response_losses(batch)
    with torch.no_grad():
        total = converse.loss(batch)
        assert (total > sums / counts).all()  # the contrastive term is positive


def test_step_run_evaluates_chats_and_resumes(tmp_path) -> None:
    overrides = [
        "data.options={num_movies: 60, num_dialogues: 120}",
        "model.compact_lm.architecture={n_layer: 1, n_embd: 32, n_head: 2}",
        "model.compact_lm.block_size=32",
        "model.compact_lm.max_steps=2",
        *(f"model.{k}={v}" for k, v in SMALL.items()),
        "train.batch_size=8",
        "train.max_steps=2",
    ]
    config = resolve_config("step", "demo", overrides=overrides)
    metrics = train(config, tmp_path / "step", progress=False)
    assert [row["stage"] for row in metrics["history"]].count("pretrain") >= 1
    assert {"bleu-2", "dist-2", "perplexity"} <= set(metrics["conversation"])
    assert "rer@10" in metrics["conversation"]["in_response"]
    _, run_task, model = load_run(tmp_path / "step")
    session = ChatSession(model, run_task)
    reply = session.send("I would like a thriller")
    assert isinstance(reply.text, str)
    again = train(config, tmp_path / "step", resume=True, progress=False)
    assert again["test"] == metrics["test"]
