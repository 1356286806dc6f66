"""The shared half of models that steer a frozen causal LM with knowledge prompts.

UniCRS, STEP and MSCRS differ in how they turn a context's text and KG entities into a
prompt; everything around that is the same and lives here:

- the frozen LM (`model.lm`: "pretrained" is the compact LM `convrec lm pretrain` caches
  for the run's dataset, or a checkpoint directory such as a local DialoGPT-small) and the
  frozen sentence encoder, both kept out of checkpoints;
- batches: the LM context with item mentions as `<movie>` slots (latest tokens kept, then
  "System:"), the sentence-encoder text with titles it can read, the latest context
  entities; responses appended with labels on the response tokens only;
- the encoder's token states, memoised per context (the encoder is frozen and the slowest
  part of a CPU step);
- recommendation: the LM state at the context's last token scored against entity
  embeddings (all entities in training, the catalogue at evaluation);
- conversation: response NLL (only response positions reach the vocabulary-sized output
  layer), validation perplexity, greedy responses whose `<movie>` slots are filled with
  the recommender's top items.

A subclass provides `_user` (LM state + entity table under its recommendation prompt),
`_conv_prompt` (the prefix under which it answers) and `stages`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.nn.utils.rnn import pad_sequence

from convrec.data.kg import KnowledgeGraph
from convrec.data.samples import SLOT_TOKEN, ConvSample, RecSample, build_conv_samples
from convrec.data.tasks import RecTask
from convrec.graph.encoders import EntityEncoder
from convrec.graph.rgcn import GraphSettings
from convrec.models.base import (
    Batch,
    ConvRecModel,
    ModelConfig,
    Reply,
    keep_out_of_checkpoints,
    move_to,
)
from convrec.prompts import LMPrecision, Prefix, PrefixLM, lm_shape
from convrec.text.dialogue import render_context, render_turn, speaker_prefix
from convrec.text.encoder import DEFAULT_ENCODER, SentenceEncoder
from convrec.text.lm import PRETRAINED_LM, LMPretrainConfig, freeze, load_causal_lm

IGNORE = -100  # label of positions that carry no LM loss
MEMO_LIMIT = 40_000  # contexts whose encoder states are kept (~1 GB at 128 tokens)
# Frozen encoder states per (encoder, max tokens), shared by every model of a process, so
# that a sweep of runs in one process (benchmarks/step_ablations.py) encodes a context once.
_TEXT_MEMOS: dict[tuple[str, int], dict[str, torch.Tensor]] = {}


class PromptedLMConfig(ModelConfig, GraphSettings):
    lm: str = Field(
        PRETRAINED_LM,
        description="frozen causal LM: 'pretrained' (the cached compact LM of the run's "
        "dataset) or a local checkpoint directory / cached hub name",
    )
    compact_lm: LMPretrainConfig = Field(
        default_factory=LMPretrainConfig, description="how the 'pretrained' LM is made"
    )
    lm_precision: LMPrecision = Field(
        "float32",
        description="the frozen LM's compute: float32, or bfloat16 autocast (~2.3x faster on "
        "CPU; prompts and losses stay float32)",
    )
    text_encoder: str = Field(DEFAULT_ENCODER, description="sentence encoder of the context")
    entity_dim: int | None = Field(
        None, ge=8, description="entity node table width (default: LM hidden size / 2)"
    )
    max_context_tokens: int = Field(128, ge=8, description="LM context tokens (latest kept)")
    max_text_tokens: int = Field(128, ge=8, description="sentence-encoder tokens (latest kept)")
    max_context_entities: int = Field(32, ge=1, description="latest context entities kept")
    max_response_tokens: int = Field(48, ge=4, description="response tokens trained on")
    max_new_tokens: int = Field(48, ge=1, description="longest generated response")
    no_repeat_ngram_size: int = Field(3, ge=0, description="greedy decoding n-gram ban")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="rec cross-entropy smoothing")


def entity_encoder(kg: KnowledgeGraph, config: PromptedLMConfig, hidden: int) -> EntityEncoder:
    """The R-GCN entity encoder a prompt side uses, sized by the config, output at LM width."""
    return EntityEncoder(kg, config.entity_dim or hidden // 2, hidden, config)


class PromptedLM(ConvRecModel):
    """Base of the prompt-learning models (see module doc)."""

    config: PromptedLMConfig
    can_respond = True

    def __init__(self, config: PromptedLMConfig, task: RecTask) -> None:
        super().__init__(config, task)
        if config.lm == PRETRAINED_LM:
            raise ValueError(
                f"model.lm='pretrained' is resolved by the run (convrec train); to build "
                f"{self.name} directly, pass the directory that `convrec lm pretrain` printed"
            )
        lm, tokenizer = load_causal_lm(config.lm)
        self.backbone = PrefixLM(freeze(lm), config.lm_precision)
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.encoder = SentenceEncoder(
            config.text_encoder, max_tokens=config.max_text_tokens, keep="end"
        )
        self.encoder.requires_grad_(False)
        keep_out_of_checkpoints(self, "backbone")
        keep_out_of_checkpoints(self, "encoder", on_load=self._own_text_memo)
        self.lm_layers, self.lm_heads, self.hidden = lm_shape(lm)
        self.register_buffer("items", torch.from_numpy(task.kg.items), persistent=False)
        self._eos = tokenizer.eos_token_id
        self._slot = tokenizer.convert_tokens_to_ids(SLOT_TOKEN)
        self._system = tokenizer(speaker_prefix("recommender").rstrip())["input_ids"]
        self._conv_valid: list[ConvSample] | None = None
        self._text_memo = _TEXT_MEMOS.setdefault((config.text_encoder, config.max_text_tokens), {})

    def _own_text_memo(self) -> None:
        """Encoder weights came from a checkpoint: states of the shared memo do not apply."""
        self._text_memo = {}

    def train(self, mode: bool = True) -> PromptedLM:
        """Frozen backbones stay in eval mode (no dropout)."""
        super().train(mode)
        self.backbone.eval()
        self.encoder.eval()
        return self

    # -- what a subclass provides --------------------------------------------------------

    def _user(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """LM state at the last context token [B, H] under the recommendation prompt, and
        every entity's embedding [num_entities, H]."""
        raise NotImplementedError

    def _conv_prompt(self, batch: Batch) -> Prefix:
        """The prefix under which the LM writes the response."""
        raise NotImplementedError

    # -- batches ------------------------------------------------------------------------

    def _context_ids(self, samples: Sequence[RecSample | ConvSample]) -> list[list[int]]:
        """Each context as LM tokens: turns ended by end-of-text, the latest
        `max_context_tokens` of them kept, then "System:" (the reply starts there)."""
        turns = [render_turn(t, "slot") for s in samples for t in s.context_turns]
        encoded = iter(
            self.tokenizer(turns, add_special_tokens=False)["input_ids"] if turns else []
        )
        keep = self.config.max_context_tokens - len(self._system)
        contexts = []
        for sample in samples:
            ids: list[int] = []
            for _ in sample.context_turns:
                ids += [*next(encoded), self._eos]
            contexts.append(ids[-keep:] + self._system)
        return contexts

    def _pad_left(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
        return ids, mask

    def collate(self, samples: Sequence[RecSample | ConvSample]) -> Batch:
        """Sentence-encoder texts, context entities and the LM context (left-padded)."""
        return self._collate(samples)[0]

    def _collate(self, samples: Sequence[RecSample | ConvSample]) -> tuple[Batch, list[list[int]]]:
        """The batch, and the unpadded LM contexts (responses are appended to them)."""
        limit = self.config.max_context_entities
        entities = [torch.tensor(s.context_entities[-limit:], dtype=torch.long) for s in samples]
        lengths = torch.tensor([len(e) for e in entities])
        # At least one (masked) column, so that a batch without entities keeps its shape.
        entity_ids = pad_sequence([torch.zeros(1, dtype=torch.long), *entities], batch_first=True)
        entity_ids = entity_ids[1:]
        contexts = self._context_ids(samples)
        context_ids, context_mask = self._pad_left(contexts)
        batch = {
            "texts": [render_context(s.context_turns, "text") for s in samples],
            "entities": entity_ids,
            "entity_mask": torch.arange(entity_ids.shape[1])[None, :] < lengths[:, None],
            "context_ids": context_ids,
            "context_mask": context_mask,
        }
        return batch, contexts

    def _with_response(self, samples: Sequence[ConvSample]) -> Batch:
        """The context followed by the response and end-of-text; labels on the response."""
        batch, contexts = self._collate(samples)
        responses = self.tokenizer([" " + s.response for s in samples], add_special_tokens=False)
        rows, labels = [], []
        for context, response in zip(contexts, responses["input_ids"], strict=True):
            response = [*response[: self.config.max_response_tokens - 1], self._eos]
            rows.append(context + response)
            labels.append([IGNORE] * len(context) + response)
        batch["input_ids"], batch["input_mask"] = self._pad_left(rows)
        padded_labels, _ = self._pad_left(labels)
        batch["labels"] = padded_labels.masked_fill(batch["input_mask"] == 0, IGNORE)
        return batch

    @torch.no_grad()
    def _token_states(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen sentence-encoder token states [B, L, d] and mask [B, L], memoised.

        The encoder is the slowest part of a step on a CPU and is frozen, so each context
        is encoded once per process (half precision, real tokens only; see _TEXT_MEMOS).
        """
        texts = batch["texts"]
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_memo]
        if missing:
            if len(self._text_memo) + len(missing) > MEMO_LIMIT:
                self._text_memo.clear()
            out = self.encoder(self.encoder.tokenize(missing))
            lengths = out["attention_mask"].sum(dim=1).tolist()
            for text, states, length in zip(missing, out["token_embeddings"], lengths, strict=True):
                self._text_memo[text] = states[: int(length)].to("cpu", torch.float16)
        rows = [self._text_memo[t].float() for t in texts]
        states = pad_sequence(rows, batch_first=True).to(self.device)
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        return states, torch.arange(states.shape[1], device=self.device)[None, :] < lengths[:, None]

    # -- recommendation -----------------------------------------------------------------

    def _context_state(self, batch: Batch, prefix: Prefix) -> torch.Tensor:
        """The LM's last-layer state at the context's last token [B, H] under `prefix`."""
        states = self.backbone.hidden_states(batch["context_ids"], batch["context_mask"], prefix)
        return states[:, -1]

    def recommend(self, batch: Batch) -> torch.Tensor:
        user, table = self._user(batch)
        return user @ table[self.items].T

    def with_targets(self, samples: Sequence[RecSample]) -> Batch:
        """Targets as entity ids: training ranks all entities, as UniCRS does."""
        batch = self.collate(samples)
        batch["target_entities"] = torch.tensor([s.target_item for s in samples])
        return batch

    def entity_scores_loss(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-entropy of entity scores [B, num_entities] against the targets, per sample."""
        return F.cross_entropy(
            scores,
            batch["target_entities"],
            reduction="none",
            label_smoothing=self.config.label_smoothing,
        )

    # -- conversation -------------------------------------------------------------------

    def response_losses(
        self, batch: Batch, prefix: Prefix | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample summed NLL of the response tokens and their counts ([B], [B]),
        under `prefix` (default: the model's conversation prompt)."""
        if prefix is None:
            prefix = self._conv_prompt(batch)
        states = self.backbone.hidden_states(batch["input_ids"], batch["input_mask"], prefix)
        # An input-embedding prefix adds positions in front; labels cover the tokens only.
        states = states[:, -batch["input_ids"].shape[1] :]
        labels = batch["labels"][:, 1:]
        scored = labels != IGNORE
        # Only the response positions go through the (vocabulary-sized) output layer.
        logits = self.backbone.logits(states[:, :-1][scored])
        nll = F.cross_entropy(logits, labels[scored], reduction="none")
        rows = scored.nonzero()[:, 0]
        sums = torch.zeros(len(labels), device=nll.device).index_add(0, rows, nll)
        return sums, scored.sum(dim=1)

    def response_loss(self, batch: Batch) -> torch.Tensor:
        sums, counts = self.response_losses(batch)
        return sums / counts.clamp(min=1)

    @torch.no_grad()
    def response_nll(
        self, samples: Sequence[ConvSample], batch_size: int = 64
    ) -> tuple[float, int]:
        """Summed response-token NLL and token count (perplexity = exp(sum / count))."""
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        for start in range(0, len(samples), batch_size):
            batch = move_to(self._with_response(samples[start : start + batch_size]), self.device)
            sums, counts = self.response_losses(batch)
            total += sums.sum().item()
            count += int(counts.sum())
        self.train(was_training)
        return total, count

    def _validate_conversation(self) -> dict[str, float]:
        if self._conv_valid is None:
            self._conv_valid = build_conv_samples(self.task.dataset.dialogues("valid"))
        total, count = self.response_nll(self._conv_valid)
        loss = total / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    @torch.no_grad()
    def respond(self, samples: Sequence[ConvSample], candidates: int = 50) -> list[Reply]:
        """Greedy responses with `<movie>` slots filled by the recommender's top items."""
        was_training = self.training
        self.eval()
        batch = move_to(self.collate(samples), self.device)
        ranking = self.recommend(batch).topk(min(candidates, len(self.items)), dim=1).indices
        ranked = self.items[ranking].tolist()
        generated = self.backbone.generate(
            batch["context_ids"],
            batch["context_mask"],
            self._conv_prompt(batch),
            max_new_tokens=self.config.max_new_tokens,
            eos_token_id=self._eos,
            pad_token_id=self.tokenizer.pad_token_id,
            no_repeat_ngram_size=self.config.no_repeat_ngram_size,
        ).tolist()
        self.train(was_training)
        return [self._reply(ids, items) for ids, items in zip(generated, ranked, strict=True)]

    def _reply(self, ids: list[int], ranked: list[int]) -> Reply:
        if self._eos in ids:
            ids = ids[: ids.index(self._eos)]
        slotted = self.tokenizer.decode(ids, skip_special_tokens=False)
        slotted = slotted.replace(self.tokenizer.pad_token, "").strip()
        filled = ranked[: ids.count(self._slot)]
        text = slotted
        for item in filled:
            text = text.replace(SLOT_TOKEN, self.task.dataset.item_title(item), 1)
        return Reply(
            text=text,
            items=tuple(filled),
            slotted=slotted,
            candidates=tuple(tuple(ranked) for _ in filled),
        )
