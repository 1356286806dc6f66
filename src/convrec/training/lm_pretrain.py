"""Pre-training the compact causal LM on dialogues, cached by fingerprint.

The corpus is every training dialogue of the chosen datasets written out turn by turn
(`"User: ..."`, `"System: ..."`, each turn ended by the end-of-text token) with item
mentions as `<movie>` slots, which is how the prompt-learning methods later show the LM
contexts and responses. Tokens are packed into fixed-length blocks (no padding). The
checkpoint with the best validation perplexity is kept.

The result is a `save_pretrained` directory (model + tokenizer + `convrec_lm.json` with the
settings, data fingerprints and measured throughput) under
`<cache>/lm/<fingerprint>/`; the fingerprint covers the data files, the reader options
and every pre-training setting, so a second call with the same inputs returns at once,
and an interrupted pre-training resumes from its last checkpoint.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convrec.config import TrainConfig
from convrec.data.cache import default_cache_dir, fingerprint
from convrec.data.datasets import get_reader
from convrec.data.schema import ConversationDataset, Dialogue
from convrec.data.splits import HoldOut
from convrec.models.base import Batch, Stage
from convrec.text.dialogue import render_turn
from convrec.text.encoder import resolve_encoder_path
from convrec.text.lm import (
    PRETRAIN_INFO,
    ExtraCorpus,
    LMPretrainConfig,
    build_causal_lm,
    decoder_from_encoder,
)
from convrec.text.tokenizer import BUNDLED_BPE, load_tokenizer
from convrec.training.checkpoint import seed_everything
from convrec.training.trainer import Trainer

log = logging.getLogger("convrec.lm")

FORMAT_VERSION = 1  # bump when the corpus format changes: old caches are not reused


@dataclass(frozen=True)
class CorpusSource:
    """One dataset whose training dialogues go into the corpus; splits its files lack are
    held out of train as the runs on it hold them out, so the LM never reads them."""

    name: str
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    holdout: HoldOut = field(default_factory=HoldOut)

    @classmethod
    def extra(cls, corpus: ExtraCorpus) -> CorpusSource:
        """The source an `LMPretrainConfig.corpora` entry names."""
        holdout = HoldOut(corpus.valid_fraction, corpus.test_fraction, corpus.split_seed)
        return cls(corpus.dataset, corpus.data_dir, dict(corpus.options), holdout)


def corpus_texts(dialogues: Sequence[Dialogue]) -> list[str]:
    """The dialogues written out turn by turn, as the LM reads them."""
    return [render_turn(turn, "slot") for dialogue in dialogues for turn in dialogue.turns]


def token_stream(dialogues: Sequence[Dialogue], tokenizer: Any) -> torch.Tensor:
    """The corpus as one token sequence, every turn ended by the tokenizer's eos."""
    texts = corpus_texts(dialogues)
    if not texts:
        return torch.zeros(0, dtype=torch.long)
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor(list(itertools.chain.from_iterable([*ids, eos] for ids in encoded)))


def pack_tokens(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """Blocks [N, block_size] of a token sequence (the incomplete last block dropped)."""
    usable = len(flat) // block_size * block_size
    return flat[:usable].view(-1, block_size)


def pack_dialogues(dialogues: Sequence[Dialogue], tokenizer: Any, block_size: int) -> torch.Tensor:
    """Token blocks [N, block_size] of the dialogues written out turn by turn."""
    return pack_tokens(token_stream(dialogues, tokenizer), block_size)


def corpus_words(dialogues: Sequence[Dialogue]) -> int:
    """Whitespace-separated words of the corpus text, each end of turn counted as one."""
    return sum(len(text.split()) + 1 for text in corpus_texts(dialogues))


class CausalLMPretraining(nn.Module):
    """The LM with one training stage, in the shape the shared `Trainer` runs."""

    optional_stages: tuple[str, ...] = ()

    def __init__(self, lm: nn.Module, train: torch.Tensor, valid: torch.Tensor) -> None:
        super().__init__()
        self.lm = lm
        self.train_blocks, self.valid_blocks = train, valid

    def fit(self) -> None:
        pass

    def token_losses(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token negative log-likelihoods [B, T-1]."""
        logits = self.lm(input_ids=input_ids).logits[:, :-1]
        targets = input_ids[:, 1:]
        # Class dimension last and contiguous: cross_entropy over [B, V, T] is many times slower.
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        )
        return losses.view_as(targets)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.token_losses(batch["input_ids"]).mean(dim=1)

    @torch.no_grad()
    def validation(self, batch_size: int = 32) -> dict[str, float]:
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        device = next(self.parameters()).device
        for block in self.valid_blocks.split(batch_size):
            losses = self.token_losses(block.to(device))
            total += losses.sum().item()
            count += losses.numel()
        self.train(was_training)
        nll = total / max(count, 1)
        return {"loss": nll, "perplexity": math.exp(min(nll, 50.0))}

    def stages(self) -> list[Stage]:
        return [
            Stage(
                name="lm",
                loss=self.loss,
                samples=lambda: range(len(self.train_blocks)),
                collate=lambda rows: {"input_ids": self.train_blocks[list(rows)]},
                select_metric="loss",
                higher_is_better=False,
                validate=self.validation,
            )
        ]


def _load(source: CorpusSource) -> tuple[ConversationDataset, str]:
    reader = get_reader(source.name)(source.data_dir, **source.options)
    dataset = reader.load()
    if not isinstance(dataset, ConversationDataset):
        raise ValueError(f"dataset {source.name!r} has no dialogues to pre-train an LM on")
    dataset, held_out = source.holdout.apply(dataset)
    return dataset, source.holdout.fingerprint(reader.cache_key(), held_out)


def lm_cache_key(fingerprints: Sequence[tuple[str, str]], config: LMPretrainConfig) -> str:
    return fingerprint(
        [],
        namespace=f"convrec-lm-v{FORMAT_VERSION}",
        options={"data": list(fingerprints), "config": config.model_dump(mode="json")},
    )


def pretrain_lm(
    sources: Sequence[CorpusSource],
    config: LMPretrainConfig | None = None,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """The directory of the compact LM pre-trained on `sources` (trained now if not cached)."""
    config = config or LMPretrainConfig()
    if not sources:
        raise ValueError("pre-training needs at least one dataset")
    loaded = [_load(source) for source in sources]
    key = lm_cache_key([(s.name, fp) for s, (_, fp) in zip(sources, loaded, strict=True)], config)
    root = (cache_dir or default_cache_dir()) / "lm"
    final = root / key[:24]
    if (final / PRETRAIN_INFO).is_file():
        log.info("compact LM found in cache: %s", final)
        return final

    tokenizer = load_tokenizer(
        BUNDLED_BPE if config.base is None else resolve_encoder_path(config.base)
    )
    block = config.block_size
    train = torch.cat([pack_dialogues(d.dialogues("train"), tokenizer, block) for d, _ in loaded])
    # Selected and reported on the first dataset's validation dialogues (the run's own), so
    # that LMs trained on different corpora are compared on the same text.
    reference = loaded[0][0]
    reference_valid = reference.dialogues("valid") if "valid" in reference.splits else []
    valid_tokens = token_stream(reference_valid, tokenizer)
    valid = pack_tokens(valid_tokens, block)
    words_per_token = corpus_words(reference_valid) / max(len(valid_tokens), 1)
    if len(train) < 1 or len(valid) < 1:
        raise ValueError(
            "the datasets have too little text for one training and one validation block"
        )
    seed_everything(config.seed)
    if config.base is None:
        lm = build_causal_lm(config.architecture, tokenizer)
    else:  # seeded too: the LM head's transform is new
        lm, _ = decoder_from_encoder(config.base)
    module = CausalLMPretraining(lm, train, valid)
    work = root / f"{key[:24]}.partial"
    trainer = Trainer(
        module,  # type: ignore[arg-type]  # duck-typed: fit() and stages() are all it needs
        TrainConfig(
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup_ratio=config.warmup_ratio,
            max_steps=config.max_steps,
            patience=config.epochs,
            checkpoint_every=200,
            device="auto",
        ),
        seed=config.seed,
        checkpoint_dir=work / "checkpoints",
        validate=lambda _: module.validation(),
        progress=progress,
    )
    log.info(
        "pre-training the compact LM on %s: %d training blocks of %d tokens",
        ", ".join(s.name for s in sources),
        len(train),
        block,
    )
    started = time.perf_counter()
    state = trainer.fit(resume=True)
    seconds = time.perf_counter() - started
    best = min(state.history, key=lambda row: row["valid/loss"])
    lm.cpu().save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    epochs_run = len(state.history)
    info = {
        "settings": config.model_dump(mode="json"),
        "datasets": [
            {"name": s.name, "options": s.options, "fingerprint": fp}
            for s, (_, fp) in zip(sources, loaded, strict=True)
        ],
        "train_tokens": int(train.numel()),
        "valid_tokens": int(valid.numel()),
        "parameters": sum(p.numel() for p in lm.parameters()),
        "valid_perplexity": best["valid/perplexity"],
        # per word (whitespace-separated, end of turn counted): comparable across tokenizers
        "valid_word_perplexity": math.exp(min(best["valid/loss"] / words_per_token, 50.0)),
        "valid_words_per_token": words_per_token,
        "best_epoch": best["epoch"],
        "epochs_run": epochs_run,
        "seconds_this_process": round(seconds, 1),
        "train_tokens_per_s": [
            round(row["samples_per_s"] * block, 1) for row in state.history if row["samples_per_s"]
        ],
        "history": state.history,
    }
    (work / "model" / PRETRAIN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # a concurrent pre-training finished first; keep its result
        shutil.rmtree(work, ignore_errors=True)
        return final
    (work / "model").rename(final)
    shutil.rmtree(work, ignore_errors=True)
    log.info("compact LM saved to %s (valid perplexity %.1f)", final, best["valid/perplexity"])
    return final
