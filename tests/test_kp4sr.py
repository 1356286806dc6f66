"""The `kp4sr` model: item trie, constrained beam search, masks, training, checkpoints."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput
from typer.testing import CliRunner

from convrec.cli import app
from convrec.config import ConfigError, resolve_config
from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import SequentialDataset
from convrec.data.tasks import SeqTask
from convrec.evaluation.ranking import sequential_metric_matrix, target_ranks
from convrec.graph.knowledge_tree import TokenKind, full_visibility_mask, knowledge_tree_mask
from convrec.models.kp4sr import (
    KP4SR,
    ItemTrie,
    KP4SRConfig,
    SeededSample,
    SeededSamples,
    T5NotFoundError,
    beam_rank_scores,
    constrained_beam_search,
)
from convrec.registry import get_model
from convrec.text.templates import TEST_TEMPLATE, TRAIN_TEMPLATES
from tests.test_movielens import write
from tests.test_training_sequential import recbole_slice, train_args

TINY_T5 = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2}
TINY_T5_ONE_LAYER = {**TINY_T5, "num_layers": 1, "num_decoder_layers": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- a small movie world --------------------------------------------------------------------
#
# 12 items; identifiers of one or more BPE tokens; each film has a genre and a director,
# genres and directors point back to films, so trees have both levels.

ITEM_TOKENS = ("3", "12", "57", "301", "1001", "1680", "1681", "1682", "2000", "4321", "9999", "77")
NUM_ITEMS = len(ITEM_TOKENS)


def world() -> SequentialDataset:
    films = [f"m.film{i}" for i in range(NUM_ITEMS)]
    triples = [(films[i], "film.film.genre", f"m.genre{i % 3}") for i in range(NUM_ITEMS)]
    triples += [(films[i], "film.film.directed_by", f"m.director{i % 4}") for i in range(NUM_ITEMS)]
    triples += [
        (f"m.genre{i % 3}", "film.film_genre.films_in_this_genre", films[i]) for i in range(6)
    ]
    triples += [(f"m.director{i % 4}", "film.director.film", films[i]) for i in range(8)]
    kg = KnowledgeGraph.from_named_triples(triples, items=films)
    rng = np.random.default_rng(0)
    # Users walk through the catalogue in steps of one or two, so the next item is learnable.
    sequences = []
    for _ in range(24):
        item, walk = int(rng.integers(NUM_ITEMS)), []
        for _ in range(int(rng.integers(4, 9))):
            walk.append(item)
            item = (item + int(rng.integers(1, 3))) % NUM_ITEMS
        sequences.append(walk)
    flat = np.array([i for s in sequences for i in s], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    return SequentialDataset(
        name="tiny-world",
        kg=kg,
        users=tuple(str(u) for u in range(len(sequences))),
        items=ITEM_TOKENS,
        item_titles=tuple(f"Film {i}" for i in range(NUM_ITEMS)),
        item_entity=np.array([kg.entity_id(f) for f in films], dtype=np.int64),
        offsets=offsets,
        item_seq=flat,
        timestamps=np.arange(len(flat), dtype=np.float64),
    )


@pytest.fixture(scope="module")
def task() -> SeqTask:
    return SeqTask(world(), seed=0)


def make(task: SeqTask, **options) -> KP4SR:
    torch.manual_seed(0)
    options = {"compact_t5": TINY_T5_ONE_LAYER, "num_beams": 5, **options}
    return KP4SR(KP4SRConfig(**options), task)


@pytest.fixture(scope="module")
def model(task) -> KP4SR:
    return make(task).eval()


# -- config ------------------------------------------------------------------------------------


def test_registered_with_a_validated_config() -> None:
    assert get_model("kp4sr") is KP4SR
    assert KP4SR.task_kinds == ("sequential",)
    for bad in ({"knowledge": "graph"}, {"num_beams": 0}, {"hop_num": 3}, {"max_input_tokens": 8}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            KP4SRConfig(**bad)
    with pytest.raises(ValueError, match="d_modle"):
        KP4SRConfig(compact_t5={"d_modle": 64})
    config = resolve_config("kp4sr", "movielens-100k", overrides=["model.knowledge=full"])
    assert config.model.knowledge == "full" and config.model.backbone == "encoder"
    assert (config.model.item_text, config.model.training_prompts) == ("title", "fixed")
    assert config.data.train_positions == "windows" and config.train.weight_decay == 0.01
    with pytest.raises(ConfigError, match=r"model\.knowlege"):
        resolve_config("kp4sr", "movielens-100k", overrides=["model.knowlege=full"])


# -- trie and beam search ----------------------------------------------------------------------

EOS = 1
HAND_ITEMS = [[5], [5, 7], [6, 7], [6, 8, 9], [4, 4]]


def test_trie_allows_only_item_continuations() -> None:
    trie = ItemTrie(HAND_ITEMS, EOS)
    assert trie.depth == 4 and trie.num_items == 5
    assert trie.allowed_tokens([]) == [4, 5, 6]
    assert trie.allowed_tokens([5]) == [EOS, 7]  # item 0 ends here, item 1 goes on
    assert trie.allowed_tokens([5, 7]) == [EOS]
    assert trie.allowed_tokens([6]) == [7, 8]
    assert trie.allowed_tokens([6, 8, 9]) == [EOS]
    assert trie.allowed_tokens([5, EOS]) == []  # complete
    assert trie.allowed_tokens([7]) == [] and trie.allowed_tokens([6, 9]) == []  # off the trie
    for item, tokens in enumerate(HAND_ITEMS):
        assert trie.item_of([*tokens, EOS]) == item
    assert trie.item_of([5]) == -1 and trie.item_of([8, EOS]) == -1
    with pytest.raises(ValueError, match="same identifier"):
        ItemTrie([[5], [5]], EOS)
    with pytest.raises(ValueError, match="eos"):
        ItemTrie([[5, EOS]], EOS)


def test_trie_of_the_model_spells_every_item(model) -> None:
    tokens = model.item_tokens
    assert max(map(len, tokens)) >= 2  # some identifiers take several BPE tokens
    for item, ids in enumerate(tokens):
        assert model.trie.item_of([*ids, model.tokenizer.eos_token_id]) == item
    decoded = [model.tokenizer.decode(ids) for ids in tokens]
    assert decoded == [" " + item for item in ITEM_TOKENS]


def random_scorer(batch: int, vocab: int = 10, seed: int = 0):
    """A fake decoder: next-token log-probs depend on the sample, the last token and length."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(batch, vocab, 5, vocab, generator=generator).log_softmax(-1)

    def next_log_probs(tokens: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(batch)[:, None].expand(-1, tokens.shape[1])
        return table[rows, tokens[..., -1], tokens.shape[-1] - 1]

    def exact(sample: int, item_tokens: list[int]) -> float:
        prefix, total = [0], 0.0
        for token in [*item_tokens, EOS]:
            total += table[sample, prefix[-1], len(prefix) - 1, token].item()
            prefix.append(token)
        return total

    return next_log_probs, exact


def search(num_beams: int, batch: int = 3, items=HAND_ITEMS):
    next_log_probs, exact = random_scorer(batch)
    found, scores = constrained_beam_search(
        ItemTrie(items, EOS), next_log_probs, batch, num_beams, start_token_id=0, pad_token_id=0
    )
    return found, scores, exact


def test_beam_search_with_enough_beams_is_the_exhaustive_ranking() -> None:
    found, scores, exact = search(num_beams=5)
    for sample in range(3):
        log_probs = [exact(sample, tokens) for tokens in HAND_ITEMS]
        expected = sorted(range(5), key=lambda i: -log_probs[i])
        assert found[sample].tolist() == expected
        assert torch.allclose(scores[sample], torch.tensor([log_probs[i] for i in expected]))


def test_beam_search_returns_distinct_valid_ranked_items() -> None:
    items = [list(p) for p in itertools.product([2, 3, 4, 5], repeat=2)] + [[6], [7, 8, 9]]
    found, scores, exact = search(num_beams=6, batch=4, items=items)
    assert found.shape == scores.shape == (4, 6)
    for sample in range(4):
        returned = found[sample].tolist()
        assert len(set(returned)) == 6 and min(returned) >= 0
        assert (scores[sample][:-1] >= scores[sample][1:]).all()  # best first
        exact_scores = torch.tensor([exact(sample, items[i]) for i in returned])
        assert torch.allclose(scores[sample], exact_scores)  # a beam's score is its item's
    # Fewer items than beams: every item once, then -1 / -inf.
    found, scores, _ = search(num_beams=8)
    assert sorted(found[0, :5].tolist()) == list(range(5))
    assert found[:, 5:].eq(-1).all() and torch.isinf(scores[:, 5:]).all()


def test_rank_scores_put_unreturned_items_after_the_list() -> None:
    scores = beam_rank_scores(torch.tensor([[2, 0, 4], [1, -1, -1]]), num_items=6)
    assert scores[0].tolist() == [2.0, -torch.inf, 3.0, -torch.inf, 1.0, -torch.inf]
    assert scores[1].tolist() == [-torch.inf, 3.0, *[-torch.inf] * 4]
    ranks = target_ranks(scores.repeat(6, 1), torch.arange(6).repeat_interleave(2))
    assert ranks[::2].tolist() == [2, 6, 1, 6, 3, 6]  # sample 0: 2, 0, 4; the rest unranked
    assert ranks[1::2].tolist() == [6, 1, 6, 6, 6, 6]
    # An unreturned target is a miss at every cut-off, even one past the returned list.
    hits = sequential_metric_matrix(target_ranks(scores[:1], torch.tensor([1])), ks=(5,))
    assert hits["hr@5"].item() == 0.0


# -- the model -----------------------------------------------------------------------------------


def test_recommend_returns_valid_ranked_items_with_exact_log_probs(task, model) -> None:
    samples = task.eval_samples("test")[:4]
    batch = model.collate(samples)
    items, log_probs = model.beam_search(batch)
    assert items.shape == (4, 5)
    assert all(len(set(row)) == 5 and min(row) >= 0 for row in items.tolist())
    scores = model.recommend(batch)
    assert scores.shape == (4, task.num_items)
    assert (torch.isfinite(scores).sum(dim=1) == 5).all()
    assert sorted(scores[0][torch.isfinite(scores[0])].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    # Each beam's score is its item's log-probability under the full T5 forward (which checks
    # the beams-side-by-side decoder mask and the LM head).
    with torch.no_grad():
        states = model.encode(batch)
        for row in range(4):
            for item, beam_score in zip(items[row].tolist(), log_probs[row].tolist(), strict=True):
                target = torch.tensor([[*model.item_tokens[item], model.tokenizer.eos_token_id]])
                logits = model.t5(
                    encoder_outputs=BaseModelOutput(last_hidden_state=states[row : row + 1]),
                    attention_mask=model.padding_mask(batch)[row : row + 1],
                    decoder_input_ids=model.t5.prepare_decoder_input_ids_from_labels(target),
                ).logits
                exact = logits.log_softmax(-1).gather(-1, target[..., None]).sum().item()
                assert beam_score == pytest.approx(exact, abs=1e-4)


def test_knowledge_modes_give_their_encoder_masks(task) -> None:
    samples = task.eval_samples("test")[:3]
    tree, full, none = (make(task, knowledge=k) for k in ("tree", "full", "none"))
    batch = tree.collate(samples)
    assert (batch["kind"] == TokenKind.LEVEL1).any() and (batch["kind"] == TokenKind.LEVEL2).any()
    assert torch.equal(full.collate(samples)["input_ids"], batch["input_ids"])
    tree_mask, full_mask = tree.encoder_attention_mask(batch), full.encoder_attention_mask(batch)
    assert tree_mask.shape == (3, 1, batch["kind"].shape[1], batch["kind"].shape[1])
    sees = knowledge_tree_mask(batch["kind"], batch["node"], batch["level1"])
    assert torch.equal(tree_mask[:, 0] == 0, sees)
    assert torch.equal(full_mask[:, 0] == 0, full_visibility_mask(batch["kind"]))
    assert not torch.equal(tree_mask, full_mask)
    only_mpp = none.collate(samples)
    assert set(only_mpp["kind"].unique().tolist()) <= {
        TokenKind.PAD,
        TokenKind.MPP_TEXT,
        TokenKind.MPP_ITEM,
    }
    assert only_mpp["input_ids"].shape[1] < batch["input_ids"].shape[1]
    assert torch.equal(
        none.encoder_attention_mask(only_mpp)[:, 0] == 0, full_visibility_mask(only_mpp["kind"])
    )
    # The tree mask changes what the encoder computes (for the MPP text, which sees no KG).
    with torch.no_grad():
        assert not torch.allclose(tree.encode(batch), full.encode(batch))


def test_training_draws_are_seeded_by_epoch_and_position(task, model) -> None:
    sample = task.train[0]
    decode = model.tokenizer.decode

    def drawn(epoch: int, index: int) -> str:
        batch = model.training_batch([SeededSample(sample, (0, epoch, index))])
        return decode(batch["input_ids"][0])

    def prompt(template) -> str:
        user = task.dataset.users[sample.user]
        return model.builder.render_prompt(user, sample.history[-5:], template).text

    assert drawn(0, 0) == drawn(0, 0)
    texts = [drawn(epoch, index) for epoch in range(4) for index in range(4)]
    assert len(set(texts)) > 3  # templates and trees vary with the seed
    used = [t.name for text in texts for t in TRAIN_TEMPLATES if text.startswith(prompt(t))]
    assert len(used) == len(texts) and len(set(used)) > 1  # one train template each
    assert decode(model.collate([sample])["input_ids"][0]).startswith(prompt(TEST_TEMPLATE))
    labels = model.training_batch([SeededSample(sample, (0, 0, 0))])["labels"][0]
    expected = [*model.item_tokens[sample.target], model.tokenizer.eos_token_id]
    assert labels[: len(expected)].tolist() == expected and (labels[len(expected) :] == -100).all()


def test_stage_samples_follow_the_epoch(task) -> None:
    stage = make(task).stages()[0]
    assert stage.name == "train" and stage.select_metric == "ndcg@10"
    draws = stage.samples()
    stage.epoch_begin(3)
    assert draws[5].seed == (0, 3, 5) and draws[5].sample.target == task.train[5].target


def train_steps(model: KP4SR, batch: dict, lr: float, steps: int = 12) -> list[float]:
    """Mean losses of `steps` AdamW steps on one batch (per-sample losses checked)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.loss(batch)
        assert loss.shape == (len(batch["input_ids"]),)  # one loss per sample
        loss.mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.mean().item())
    return losses


def test_training_lowers_the_loss(task) -> None:
    model = make(task, compact_t5={**TINY_T5, "dropout": 0.0}).train()
    stage = model.stages()[0]
    draws = stage.samples()
    batch = stage.collate([draws[i] for i in range(16)])
    losses = train_steps(model, batch, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0]  # from ln(50k) ~ 10.8


def test_attention_dropout_is_its_own_setting(task) -> None:
    no_block_dropout = {**TINY_T5, "dropout": 0.0}
    quiet = make(task, compact_t5=no_block_dropout).train()
    noisy = make(task, compact_t5=no_block_dropout, attention_dropout=0.5).train()
    batch = quiet.collate(task.train[:2])
    with torch.no_grad():
        assert torch.equal(quiet.encode(batch), quiet.encode(batch))  # no dropout anywhere
        assert not torch.equal(noisy.encode(batch), noisy.encode(batch))


def test_a_saved_t5_loads_by_path(task, model, tmp_path) -> None:
    model.t5.save_pretrained(tmp_path / "t5")
    model.tokenizer.save_pretrained(tmp_path / "t5")
    loaded = make(task, t5=str(tmp_path / "t5")).eval()
    assert len(loaded.tokenizer) == len(model.tokenizer)
    assert loaded.item_tokens == model.item_tokens
    for (name, a), (_, b) in zip(
        model.t5.state_dict().items(), loaded.t5.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    batch = model.collate(task.eval_samples("test")[:2])
    assert torch.equal(loaded.recommend(batch), model.recommend(batch))
    with pytest.raises(T5NotFoundError, match="not found locally"):
        make(task, t5=str(tmp_path / "missing"))


def test_a_t5_style_checkpoint_brings_its_own_tokenizer(task, tmp_path) -> None:
    """Like a local t5-small: SentencePiece-style pieces, <pad> 0, </s> 1, <extra_id_0>."""
    characters = sorted("abcdefghijklmnopqrstuvwxyzUE_.,;:0123456789")  # User_7, items
    pieces = ["<pad>", "</s>", "<unk>", "\u2581", *characters, *("\u2581" + c for c in characters)]
    backend = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<extra_id_0>"],
    )
    config = T5Config(
        vocab_size=len(tokenizer) + 8,  # like t5-small, rows to spare: no resize needed
        **TINY_T5_ONE_LAYER,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    model = make(task, t5=str(tmp_path / "t5")).eval()
    assert model.tokenizer.eos_token_id == 1 and model.tokenizer.pad_token_id == 0
    assert model.t5.get_input_embeddings().num_embeddings == len(tokenizer) + 8
    for item, ids in enumerate(model.item_tokens):
        assert model.tokenizer.decode(ids).strip() == ITEM_TOKENS[item]
    items, _ = model.beam_search(model.collate(task.eval_samples("test")[:2]))
    assert all(len(set(row)) == 5 and min(row) >= 0 for row in items.tolist())


# -- the pretrained encoder with an item head -----------------------------------------------


@pytest.fixture(scope="module")
def encoder_model(task) -> KP4SR:
    torch.manual_seed(0)
    config = KP4SRConfig(backbone="encoder", item_text="title", max_input_tokens=160)
    return KP4SR(config, task)


def test_encoder_backbone_reads_titles_and_keeps_the_encoder_frozen(task, encoder_model) -> None:
    with pytest.raises(ValueError, match="512 positions"):
        KP4SRConfig(backbone="encoder", max_input_tokens=600)
    model = encoder_model
    text = model.tokenizer.decode(model.collate(task.eval_samples("test")[:1])["input_ids"][0])
    assert "film" in text and "[MASK]" in text  # titles ("Film 3"), BERT's own mask token
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("scorer.encoder.") for name in trainable)
    assert not any(".encoder." in key for key in model.state_dict())  # the bundled files
    assert not hasattr(model, "t5") and not hasattr(model, "trie")


def test_the_encoder_honours_the_tree_mask(task, encoder_model) -> None:
    """Level-2 tokens reach the masked slot only through what the mask lets through."""
    scorer = encoder_model.scorer
    samples = task.eval_samples("test")[:4]
    batch = encoder_model._inputs(samples, [None] * len(samples))
    level2 = batch["kind"] == TokenKind.LEVEL2
    assert level2.any()
    changed = {**batch, "input_ids": batch["input_ids"].masked_fill(level2, 2000)}
    tree = encoder_model.visibility(batch)
    hidden = tree & ~(level2[:, None, :] & ~level2[:, :, None])  # only level 2 sees level 2
    with torch.no_grad():
        assert torch.allclose(scorer._states(batch, hidden), scorer._states(changed, hidden))
        assert not torch.allclose(scorer._states(batch, tree), scorer._states(changed, tree))


def test_encoder_backbone_learns_and_memoises_evaluation_states(task, encoder_model) -> None:
    model = encoder_model.train()
    stage = model.stages()[0]
    draws = stage.samples()
    batch = stage.collate([draws[i] for i in range(16)])
    assert batch["targets"].tolist() == [draws[i].sample.target for i in range(16)]
    losses = train_steps(model, batch, lr=3e-3)
    assert losses[-1] < 0.8 * losses[0]
    model.eval()
    samples = task.eval_samples("valid")[:5]
    first = model.recommend(model.collate(samples))
    assert first.shape == (5, NUM_ITEMS) and torch.isfinite(first).all()
    assert len(model.scorer._memo) == 5
    again = model.collate(samples)
    assert again["missing"].tolist() == [] and "input_ids" not in again  # all memoised
    assert torch.equal(model.recommend(again), first)
    model.scorer.clear_memo()
    assert torch.allclose(model.recommend(model.collate(samples)), first, atol=1e-6)


def test_items_without_a_free_embedding_are_their_titles_and_a_bias(task) -> None:
    torch.manual_seed(0)
    config = KP4SRConfig(
        backbone="encoder", item_text="title", max_input_tokens=160, item_embedding=False
    )
    model = KP4SR(config, task).train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "scorer.query.weight",
        "scorer.query.bias",
        "scorer.title_map.weight",
        "scorer.item_bias",
    }
    stage = model.stages()[0]
    draws = stage.samples()
    losses = train_steps(model, stage.collate([draws[i] for i in range(16)]), lr=3e-3)
    assert losses[-1] < 0.9 * losses[0]


def test_fixed_training_prompts_are_drawn_once_and_memoised(task, encoder_model) -> None:
    redrawn = SeededSamples(task.train, 0)
    fixed = SeededSamples(task.train, 0, redraw=False, history_items=5)

    def seeds(draws: SeededSamples, epoch: int) -> dict[tuple, tuple]:
        draws.begin_epoch(epoch)
        return {
            (d.sample.user, d.sample.target, d.sample.history.tobytes()): d.seed
            for d in (draws[i] for i in range(len(draws)))
        }

    # The same sample gets the same draw in every epoch (only its position in the epoch moves).
    fixed0, fixed1 = seeds(fixed, 0), seeds(fixed, 1)
    common = fixed0.keys() & fixed1.keys()
    assert common and all(fixed0[k] == fixed1[k] for k in common)
    redrawn0, redrawn1 = seeds(redrawn, 0), seeds(redrawn, 1)
    assert not any(redrawn0[k] == redrawn1[k] for k in redrawn0.keys() & redrawn1.keys())

    config = encoder_model.config.model_copy(update={"training_prompts": "fixed"})
    model = KP4SR(config, task).eval()
    draws = model.stages()[0].samples()
    picked = [draws[i] for i in range(6)]
    batch = model.training_batch(picked)
    assert batch["missing"].tolist() == list(range(6)) and None not in batch["keys"]
    loss = model.loss(batch)
    again = model.training_batch(picked)
    assert again["missing"].tolist() == [] and torch.equal(model.loss(again), loss)
    unseen = encoder_model.training_batch(picked)  # redrawn (the fixture's): never memoised
    assert unseen["keys"] == [None] * 6 and unseen["missing"].tolist() == list(range(6))


# -- end to end ------------------------------------------------------------------------------


def recbole_slice_with_kg(root: Path) -> Path:
    recbole_slice(root, num_users=20, num_items=15)
    write(
        root / "ml-100k.link",
        "item_id:token\tentity_id:token",
        *(f"{i}\tm.{i}" for i in range(1, 16)),
    )
    kg_rows = [f"m.{i}\tfilm.film.genre\tm.g{i % 3}" for i in range(1, 16)]
    kg_rows += [f"m.g{i % 3}\tfilm.film_genre.films_in_this_genre\tm.{i}" for i in range(1, 16)]
    write(root / "ml-100k.kg", "head_id:token\trelation_id:token\ttail_id:token", *kg_rows)
    return root


def test_a_run_trains_evaluates_and_reloads(tmp_path) -> None:
    data = recbole_slice_with_kg(tmp_path / "data")
    settings = [f"model.compact_t5.{k}={v}" for k, v in TINY_T5_ONE_LAYER.items()]
    args = train_args(tmp_path / "run", data, "kp4sr", *settings, "model.num_beams=10")
    args += ["model.backbone=t5", "model.item_text=id", "data.train_positions=random"]
    args += ["train.epochs=1", "train.batch_size=8", "model.max_input_tokens=128"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["evaluate", "--run", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "kp4sr" in (tmp_path / "run" / "report.md").read_text()


def test_the_default_run_reloads_without_the_encoder_weights(tmp_path) -> None:
    """The default backbone (frozen MiniLM + item head): the checkpoint holds the head only,
    and the reloaded run scores the test split exactly as the trained one did."""
    data = recbole_slice_with_kg(tmp_path / "data")
    run = tmp_path / "run"
    args = train_args(run, data, "kp4sr", "train.epochs=2", "train.batch_size=8")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    state = torch.load(run / "model.pt", weights_only=True)["model"]
    assert state and not any(".encoder." in key for key in state)
    trained = json.loads((run / "metrics.json").read_text())["test"][0]["metrics"]
    result = CliRunner().invoke(app, ["evaluate", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["test"][0]["metrics"] == trained
