"""Causal LM backbones: loading a checkpoint by path, and the cached compact pre-training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
from typer.testing import CliRunner

from convrec.cli import app
from convrec.config import resolve_config
from convrec.data.datasets import load_dataset
from convrec.data.samples import SLOT_TOKEN
from convrec.data.splits import HoldOut
from convrec.text.encoder import SentenceEncoder
from convrec.text.lm import (
    CompactLMConfig,
    LMNotFoundError,
    LMPretrainConfig,
    build_causal_lm,
    decoder_from_encoder,
    load_causal_lm,
    pretrain_info,
)
from convrec.text.tokenizer import bundled_bpe_files, load_tokenizer
from convrec.training import lm_pretrain
from convrec.training import run as run_module
from convrec.training.lm_pretrain import CorpusSource, pack_dialogues, pretrain_lm

SMALL_DEMO = {"num_movies": 60, "num_dialogues": 120}
TINY = LMPretrainConfig(
    architecture=CompactLMConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64),
    block_size=32,
    epochs=1,
    batch_size=8,
    max_steps=2,
)


def save_plain_gpt2(directory: Path) -> Path:
    """A checkpoint shaped like a hub GPT-2/DialoGPT: 50,257 tokens, no convrec tokens."""
    vocab, merges = bundled_bpe_files()
    tokenizer = GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64)
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_a_saved_checkpoint_loads_by_path_with_convrec_tokens(tmp_path) -> None:
    path = save_plain_gpt2(tmp_path / "gpt2")
    model, tokenizer = load_causal_lm(path)
    assert len(tokenizer) > 50257 and tokenizer.pad_token is not None
    assert tokenizer.convert_tokens_to_ids(SLOT_TOKEN) >= 50257
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    ids = torch.tensor([tokenizer(f"I love {SLOT_TOKEN}")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_a_missing_lm_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(LMNotFoundError, match="does not download"):
        load_causal_lm(tmp_path / "nowhere")


def test_compact_lm_has_the_tokenizer_vocabulary() -> None:
    tokenizer = load_tokenizer()
    model = build_causal_lm(CompactLMConfig(n_layer=1, n_embd=32, n_head=2), tokenizer)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    with pytest.raises(ValueError, match="divisible"):
        build_causal_lm(CompactLMConfig(n_embd=30, n_head=4), tokenizer)


def test_dialogues_are_packed_turn_by_turn_with_slots() -> None:
    dataset = load_dataset("demo", **SMALL_DEMO)
    tokenizer = load_tokenizer()
    dialogues = dataset.dialogues("train")[:3]
    blocks = pack_dialogues(dialogues, tokenizer, 16)
    assert blocks.shape[1] == 16 and blocks.dtype == torch.long
    text = tokenizer.decode(blocks.flatten().tolist())
    first = dialogues[0].turns[0]
    assert text.startswith("User: " if first.role == "seeker" else "System: ")
    assert "<|endoftext|>" in text
    if any(t.mentions for d in dialogues for t in d.turns):
        assert SLOT_TOKEN in text


def test_pretraining_is_cached_by_fingerprint(tmp_path, monkeypatch) -> None:
    source = CorpusSource("demo", None, SMALL_DEMO)
    path = pretrain_lm([source], TINY, cache_dir=tmp_path, progress=False)
    info = pretrain_info(path)
    assert info is not None and info["settings"]["max_steps"] == 2
    assert info["train_tokens"] > 0 and info["valid_perplexity"] > 1
    model, _ = load_causal_lm(path)
    assert model.config.n_layer == 1

    def no_training(*args, **kwargs):
        raise AssertionError("a cached LM was trained again")

    monkeypatch.setattr(lm_pretrain.Trainer, "fit", no_training)
    assert pretrain_lm([source], TINY, cache_dir=tmp_path, progress=False) == path
    other = TINY.model_copy(update={"lr": 5e-4})
    with pytest.raises(AssertionError, match="trained again"):
        pretrain_lm([source], other, cache_dir=tmp_path, progress=False)  # another key


def test_cli_pretrain_rejects_an_unknown_setting() -> None:
    result = CliRunner().invoke(
        app, ["lm", "pretrain", "--dataset", "demo", "architecture.depth=3"]
    )
    assert result.exit_code == 2
    assert "architecture.depth" in result.output


def test_a_pretrained_encoder_becomes_a_causal_decoder_with_its_vocabulary() -> None:
    """base=all-MiniLM-L6-v2: BERT's weights with causal self-attention, its WordPiece
    vocabulary plus convrec's tokens, [SEP] ending a turn; a later token cannot change an
    earlier position's logits, and the LM head's output layer is the embedding table."""
    model, tokenizer = decoder_from_encoder("all-MiniLM-L6-v2")
    assert model.config.is_decoder and tokenizer.eos_token == "[SEP]"
    assert tokenizer.convert_tokens_to_ids(SLOT_TOKEN) >= 30522
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    encoder = SentenceEncoder().transformer
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(model.bert.state_dict()[name], encoder.state_dict()[name])
    ids = torch.tensor(
        [tokenizer(f"User: I love {SLOT_TOKEN}!", add_special_tokens=False)["input_ids"]]
    )
    changed = ids.clone()
    changed[0, -1] = 1000
    model.eval()
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    assert torch.equal(a[0, :-1], b[0, :-1]) and not torch.equal(a[0, -1], b[0, -1])


def test_a_wordpiece_decoder_writes_words_back_together() -> None:
    """WordPiece decodes with a space between all tokens; replies (and the words that
    per-word perplexity counts) read "you're", not "you ' re". BPE stays exact."""
    _, wordpiece = decoder_from_encoder("all-MiniLM-L6-v2")
    text = f"i think you're welcome! it's {SLOT_TOKEN}, isn't it?"
    ids = wordpiece(text, add_special_tokens=False)["input_ids"]
    assert wordpiece.decode(ids) == text
    bpe = load_tokenizer()
    spaced = "Hustlers . I liked it , really"
    assert bpe.decode(bpe(spaced, add_special_tokens=False)["input_ids"]) == spaced


def test_pretraining_a_decoder_from_an_encoder_reports_perplexity_per_word(tmp_path) -> None:
    """Validation is the first dataset's; per-word perplexity converts by the corpus's
    words per token, so LMs with different tokenizers compare."""
    config = TINY.model_copy(update={"base": "all-MiniLM-L6-v2"})
    extra = CorpusSource("demo", None, {**SMALL_DEMO, "seed": 1})
    path = pretrain_lm(
        [CorpusSource("demo", None, SMALL_DEMO), extra], config, cache_dir=tmp_path, progress=False
    )
    info = pretrain_info(path)
    ratio = info["valid_words_per_token"]
    assert 0.3 < ratio < 1.5
    expected = math.exp(math.log(info["valid_perplexity"]) / ratio)
    assert info["valid_word_perplexity"] == pytest.approx(expected, rel=1e-6)
    one = pretrain_lm(
        [CorpusSource("demo", None, SMALL_DEMO)], config, cache_dir=tmp_path, progress=False
    )
    assert pretrain_info(one)["train_tokens"] < info["train_tokens"]
    model, tokenizer = load_causal_lm(path)
    assert model.config.is_decoder and tokenizer.eos_token == "[SEP]"


def test_a_run_adds_the_extra_corpora_with_their_hold_out(monkeypatch) -> None:
    """model.compact_lm.corpora: the run's own dataset first (its validation selects the
    LM), then each extra dataset with the hold-out it names."""
    seen = {}

    def fake_pretrain(sources, config, progress=True):
        seen["sources"] = sources
        return Path("/lm")

    monkeypatch.setattr(lm_pretrain, "pretrain_lm", fake_pretrain)  # run.py imports it late
    corpora = "[{dataset: demo, options: {seed: 3}, valid_fraction: 0.2, test_fraction: 0.1}]"
    config = resolve_config(
        "unicrs", "demo", None, overrides=[f"model.compact_lm.corpora={corpora}"]
    )
    resolved = run_module.resolve_backbones(config, progress=False)
    assert resolved.model.lm == "/lm"
    own, extra = seen["sources"]
    assert own.name == "demo" and own.holdout == config.data.holdout()
    assert extra.options == {"seed": 3} and extra.holdout == HoldOut(0.2, 0.1, 0)


def test_the_cli_pretrains_the_lm_a_run_with_the_same_settings_finds(isolated_cache) -> None:
    """`convrec lm pretrain` adds the `corpora` sources as a run does, so a run with the
    same `model.compact_lm` finds the cached LM instead of training another."""
    settings = [
        "architecture.n_layer=1",
        "architecture.n_embd=32",
        "architecture.n_head=2",
        "block_size=32",
        "epochs=1",
        "max_steps=2",
        "corpora=[{dataset: demo, options: {seed: 3}}]",
    ]
    result = CliRunner().invoke(
        app, ["lm", "pretrain", "--dataset", "demo", "--no-progress", *settings]
    )
    assert result.exit_code == 0, result.output
    path = result.output.split("compact LM: ")[1].split()[0]
    info = pretrain_info(path)
    assert [d["options"] for d in info["datasets"]] == [{}, {"seed": 3}]
    config = resolve_config(
        "unicrs", "demo", None, overrides=[f"model.compact_lm.{s}" for s in settings]
    )
    assert run_module.resolve_backbones(config, progress=False).model.lm == path
    # --model: the model's own compact_lm settings (here its demo section), then these.
    for_model = [s for s in settings if not s.startswith("epochs")]
    result = CliRunner().invoke(
        app, ["lm", "pretrain", "-d", "demo", "--model", "unicrs", "--no-progress", *for_model]
    )
    assert result.exit_code == 0, result.output
    assert result.output.split("compact LM: ")[1].split()[0] == path
    result = CliRunner().invoke(
        app, ["lm", "pretrain", "-d", "demo", "-m", "unicrs", "model.conversation=false"]
    )
    assert result.exit_code == 2 and "compact_lm" in result.output
