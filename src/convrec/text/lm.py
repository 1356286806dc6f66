"""Causal language-model backbones: a compact GPT-2 built from a config, or a checkpoint.

The prompt-learning methods steer a frozen causal LM (DialoGPT in the papers). No model
hub is reachable here, so the default is a GPT-2 architecture sized for a CPU, pre-trained
by `convrec lm pretrain` on training dialogues and cached; a real checkpoint (a local
directory written by `save_pretrained`, or a hub name already in the local Hugging Face
cache) loads through the same `load_causal_lm`, with its own tokenizer.

Default size: 4 layers, width 256, 4 heads. Measured on this project's 2-core CPU with
batch 16 x 128 tokens (`python benchmarks/lm_throughput.py`): 767 training tokens/s with
the 50k-token output layer, and 8,042 tokens/s for the frozen body's forward + backward
that prefix-tuning needs; 6 x 384 gives 466 and 2,914, DialoGPT-small's 12 x 768 161 and
449. The compact size is what lets LM pre-training plus UniCRS's three stages finish on
INSPIRED in the 45 minutes the project allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from convrec.settings import Settings
from convrec.text.tokenizer import load_tokenizer

PRETRAIN_INFO = "convrec_lm.json"  # written next to a checkpoint that convrec pre-trained
# The value of a model's `lm` setting that means "the compact LM pre-trained on this run's
# dataset with the model's `compact_lm` settings" (the run resolves it to a cached path).
PRETRAINED_LM = "pretrained"


class CompactLMConfig(Settings):
    """Architecture of the compact GPT-2 (the vocabulary comes from the tokenizer)."""

    n_layer: int = Field(4, ge=1, description="transformer blocks")
    n_embd: int = Field(256, ge=8, description="hidden size")
    n_head: int = Field(4, ge=1, description="attention heads (must divide n_embd)")
    n_positions: int = Field(512, ge=16, description="longest sequence, prefix excluded")
    dropout: float = Field(0.1, ge=0, lt=1, description="residual, embedding, attention dropout")


class ExtraCorpus(Settings):
    """Another dataset whose training dialogues join the LM's corpus (never its validation
    or test dialogues: give the hold-out its own runs use, so that a run on it never
    scores an LM that read its test split)."""

    dataset: str = Field(description="registered dataset name, e.g. redial")
    data_dir: str | None = Field(None, description="its directory (not needed for demo)")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options")
    valid_fraction: float = Field(0.1, ge=0, lt=1, description="as data.valid_fraction")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="as data.test_fraction")
    split_seed: int = Field(0, description="as data.split_seed")


class LMPretrainConfig(Settings):
    """How the compact LM is pre-trained (causal LM loss on packed dialogue text)."""

    base: str | None = Field(
        None,
        description="null: a GPT-2 built from `architecture` and trained from scratch; or a "
        "pretrained BERT-family encoder (all-MiniLM-L6-v2, or a directory) made a causal "
        "decoder with its own weights and WordPiece vocabulary, then trained on the corpus",
    )
    corpora: list[ExtraCorpus] = Field(
        default_factory=list,
        description="datasets whose training dialogues are added to the run's own",
    )
    architecture: CompactLMConfig = Field(default_factory=CompactLMConfig)
    block_size: int = Field(128, ge=8, description="tokens per packed training sequence")
    epochs: int = Field(2, ge=1, description="passes over the training dialogues")
    batch_size: int = Field(16, ge=1, description="sequences per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (warm-up, linear decay)")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="share of steps warming up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (tests)")
    seed: int = Field(0, description="initialisation and batch order")


def build_causal_lm(config: CompactLMConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 whose vocabulary is exactly the tokenizer's."""
    if config.n_embd % config.n_head:
        raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(gpt2)


class LMNotFoundError(FileNotFoundError):
    """A causal LM named by path or hub name is not available locally."""


def load_local_model(
    model_class: Any,
    name_or_path: str | Path,
    load_tokenizer_for: Callable[[str], PreTrainedTokenizerBase],
    *,
    missing: type[FileNotFoundError],
    hint: str,
    **model_options: Any,
) -> tuple[Any, PreTrainedTokenizerBase]:
    """A Hugging Face model from local files only, and its tokenizer fitted to it.

    convrec never downloads: a name that is neither a checkpoint directory nor in the local
    Hugging Face cache raises `missing` with `hint` (what to use instead). Tokens the
    tokenizer adds grow the model's embedding table (new rows freshly initialised), and a
    missing pad id is taken from the tokenizer. `model_options` go to `from_pretrained`
    (e.g. is_decoder=True).
    """
    path = str(name_or_path)
    try:
        model = model_class.from_pretrained(path, local_files_only=True, **model_options)
    except (OSError, ValueError) as error:
        raise missing(
            f"{path!r} was not found locally: it is not a checkpoint directory and not in the "
            f"local Hugging Face cache, and convrec does not download models. {hint} "
            f"({type(error).__name__}: {error})"
        ) from error
    tokenizer = load_tokenizer_for(path)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def decoder_from_encoder(
    name_or_path: str | Path, *, num_items: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A pretrained BERT-family encoder as a causal LM: its weights with causal
    self-attention (`is_decoder`), its tokenizer with convrec's tokens, and an LM head
    whose output layer is tied to the word embeddings (the transform before it is new)."""
    from convrec.text.encoder import resolve_encoder_path

    return load_local_model(
        AutoModelForCausalLM,
        resolve_encoder_path(str(name_or_path)),
        lambda p: load_tokenizer(p, num_items=num_items),
        missing=LMNotFoundError,
        hint="Use all-MiniLM-L6-v2 (bundled) or the directory of a BERT / RoBERTa checkpoint.",
        is_decoder=True,
    )


def load_causal_lm(
    name_or_path: str | Path, *, num_items: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its own tokenizer from local files, with convrec's special tokens
    (padding, `<movie>`, [REC], [GEN], item tokens) added where the checkpoint lacks them."""
    return load_local_model(
        AutoModelForCausalLM,
        name_or_path,
        lambda path: load_tokenizer(path, num_items=num_items),
        missing=LMNotFoundError,
        hint="Use the compact LM (`convrec lm pretrain`) or a directory written by "
        "save_pretrained.",
    )


def pretrain_info(path: str | Path) -> dict | None:
    """What convrec recorded when it pre-trained the checkpoint at `path` (None otherwise)."""
    info = Path(path) / PRETRAIN_INFO
    return json.loads(info.read_text()) if info.is_file() else None


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients, eval mode: how the prompt-learning methods hold their LM."""
    model.requires_grad_(False)
    return model.eval()
