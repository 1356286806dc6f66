"""UniCRS: knowledge-enhanced prompt learning over a frozen causal LM.

Wang et al., KDD 2022, "Towards Unified Conversational Recommender Systems via
Knowledge-Enhanced Prompt Learning"; specs/prompt-core.md. A prompt encoder fuses the
dialogue's text (sentence-encoder token states) with its KG entities (R-GCN) and turns the
result into per-layer key/value prefixes for the frozen LM::

    entities  --EntityEncoder-->  E_all [num_entities, H]     E = E_all[context entities]
    context   --sentence enc.-->  T     [Lt, H]               (TokenProjection)
    fused     = SemanticFusion(T, E)  entity side (rec) / token side (conv)
    prompt    = [task prefix ; fused] --PrefixProjection--> past_key_values
    rec:  scores = LM state at the context's last token . E_all[catalogue]
    conv: LM generates the response; `<movie>` slots are filled with the top items

Three stages: `pretrain` (entity prediction on all turns, no task prefix), `recommend`
(recommender turns, rec prefix) and `converse` (LM loss on response tokens, conv prefix).
As in the released code, the recommendation and conversation prompt encoders both start
from the pre-trained one and then train separately, so tuning the conversation prompt
never moves the recommender that fills its slots.

The LM sees item mentions as `<movie>` slots (context and response); the sentence encoder
sees titles, which it can read. The LM is `model.lm`: "pretrained" is the compact LM
`convrec lm pretrain` caches for the run's dataset (settings `model.compact_lm`), or a
checkpoint directory such as a local copy of microsoft/DialoGPT-small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from convrec.data.kg import InverseMode, KnowledgeGraph
from convrec.data.samples import (
    SLOT_TOKEN,
    ConvSample,
    RecSample,
    build_conv_samples,
    build_rec_samples,
)
from convrec.data.tasks import RecTask
from convrec.graph.encoders import EntityEncoder
from convrec.models.base import (
    Batch,
    ConvRecModel,
    ModelConfig,
    Reply,
    Stage,
    keep_out_of_checkpoints,
    move_to,
)
from convrec.prompts import (
    Prefix,
    PrefixLM,
    PrefixProjection,
    SemanticFusion,
    TaskPrefix,
    TokenProjection,
    lm_shape,
)
from convrec.registry import register_model
from convrec.text.dialogue import render_context, render_turn, speaker_prefix
from convrec.text.encoder import DEFAULT_ENCODER, SentenceEncoder
from convrec.text.lm import PRETRAINED_LM, LMPretrainConfig, freeze, load_causal_lm

IGNORE = -100  # label of positions that carry no LM loss
MEMO_LIMIT = 40_000  # contexts whose encoder states are kept (~1 GB at 128 tokens)


class UniCRSConfig(ModelConfig):
    lm: str = Field(
        PRETRAINED_LM,
        description="frozen causal LM: 'pretrained' (the cached compact LM of the run's "
        "dataset) or a local checkpoint directory / cached hub name",
    )
    compact_lm: LMPretrainConfig = Field(
        default_factory=LMPretrainConfig, description="how the 'pretrained' LM is made"
    )
    text_encoder: str = Field(DEFAULT_ENCODER, description="sentence encoder of the context")
    entity_dim: int | None = Field(
        None, ge=8, description="entity node table width (default: LM hidden size / 2)"
    )
    num_bases: int = Field(8, ge=1, description="R-GCN basis decomposition")
    inverse_edges: InverseMode = Field("same", description="tail->head KG edges")
    self_loops: bool = Field(True, description="an e->e edge per entity")
    n_prefix_rec: int = Field(10, ge=0, description="learnable recommendation prefix vectors")
    n_prefix_conv: int = Field(20, ge=0, description="learnable conversation prefix vectors")
    max_context_tokens: int = Field(128, ge=8, description="LM context tokens (latest kept)")
    max_text_tokens: int = Field(128, ge=8, description="sentence-encoder tokens (latest kept)")
    max_context_entities: int = Field(32, ge=1, description="latest context entities kept")
    max_response_tokens: int = Field(48, ge=4, description="response tokens trained on")
    max_new_tokens: int = Field(48, ge=1, description="longest generated response")
    no_repeat_ngram_size: int = Field(3, ge=0, description="greedy decoding n-gram ban")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="rec cross-entropy smoothing")


class UniCRSPrompt(nn.Module):
    """Entity encoder + token projection + fusion + prefix projection (one prompt side)."""

    def __init__(
        self,
        kg: KnowledgeGraph,
        config: UniCRSConfig,
        text_dim: int,
        n_layer: int,
        n_head: int,
        hidden: int,
    ) -> None:
        super().__init__()
        self.entities = EntityEncoder(
            kg,
            config.entity_dim or hidden // 2,
            hidden,
            num_bases=config.num_bases,
            inverse_edges=config.inverse_edges,
            self_loops=config.self_loops,
        )
        self.tokens = TokenProjection(text_dim, hidden)
        self.fusion = SemanticFusion(hidden)
        self.prefix = PrefixProjection(hidden, n_layer, n_head)

    def forward(
        self,
        batch: Batch,
        token_states: tuple[torch.Tensor, torch.Tensor],
        output: Literal["entity", "token"],
        task_prefix: torch.Tensor | None,
    ) -> tuple[Prefix, torch.Tensor]:
        """The LM prefix for the batch, and every entity's embedding [num_entities, H]."""
        table = self.entities()
        states, states_mask = token_states
        fused, mask = self.fusion(
            self.tokens(states),
            states_mask,
            table[batch["entities"]],
            batch["entity_mask"],
            output,
        )
        if task_prefix is not None and task_prefix.shape[1]:
            fused = torch.cat([task_prefix, fused], dim=1)
            mask = torch.cat([mask.new_ones(task_prefix.shape[:2]), mask], dim=1)
        return Prefix(self.prefix(fused), mask), table


@register_model
class UniCRS(ConvRecModel):
    name = "unicrs"
    description = "UniCRS: KG + text prompts as prefixes of a frozen LM (rec + conversation)"
    Config = UniCRSConfig
    can_respond = True

    def __init__(self, config: UniCRSConfig, task: RecTask) -> None:
        super().__init__(config, task)
        if config.lm == PRETRAINED_LM:
            raise ValueError(
                "model.lm='pretrained' is resolved by the run (convrec train); to build UniCRS "
                "directly, pass the directory that `convrec lm pretrain` printed"
            )
        lm, tokenizer = load_causal_lm(config.lm)
        self.backbone = PrefixLM(freeze(lm))
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.encoder = SentenceEncoder(
            config.text_encoder, max_tokens=config.max_text_tokens, keep="end"
        )
        self.encoder.requires_grad_(False)
        keep_out_of_checkpoints(self, "backbone")
        keep_out_of_checkpoints(self, "encoder", on_load=lambda: self._text_memo.clear())

        n_layer, n_head, hidden = lm_shape(lm)
        side = (task.kg, config, self.encoder.dim, n_layer, n_head, hidden)
        self.rec_prompt = UniCRSPrompt(*side)
        self.conv_prompt = UniCRSPrompt(*side)
        self.rec_prefix = TaskPrefix(config.n_prefix_rec, hidden)
        self.conv_prefix = TaskPrefix(config.n_prefix_conv, hidden)
        # Set when the recommendation stage begins; checkpoints carry it.
        self.register_buffer("rec_prefix_on", torch.zeros((), dtype=torch.bool))
        self.register_buffer("items", torch.from_numpy(task.kg.items), persistent=False)
        self._eos = tokenizer.eos_token_id
        self._slot = tokenizer.convert_tokens_to_ids(SLOT_TOKEN)
        self._system = tokenizer(speaker_prefix("recommender").rstrip())["input_ids"]
        self._conv_valid: list[ConvSample] | None = None
        self._text_memo: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> UniCRS:
        """Frozen backbones stay in eval mode (no dropout)."""
        super().train(mode)
        self.backbone.eval()
        self.encoder.eval()
        return self

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

    # -- prompts ------------------------------------------------------------------------

    @torch.no_grad()
    def _token_states(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen sentence-encoder token states [B, L, d] and mask [B, L], memoised.

        The encoder is the slowest part of a step on a CPU and is frozen, so each context
        is encoded once per process (half precision, real tokens only).
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

    def _rec_prompt(self, batch: Batch) -> tuple[Prefix, torch.Tensor]:
        size = batch["context_ids"].shape[0]
        prefix = self.rec_prefix(size) if bool(self.rec_prefix_on) else None
        return self.rec_prompt(batch, self._token_states(batch), "entity", prefix)

    def _conv_prompt(self, batch: Batch) -> Prefix:
        size = batch["context_ids"].shape[0]
        prefix, _ = self.conv_prompt(
            batch, self._token_states(batch), "token", self.conv_prefix(size)
        )
        return prefix

    def _user(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """LM state at the last context token [B, H] and every entity's embedding."""
        prefix, table = self._rec_prompt(batch)
        states = self.backbone.hidden_states(batch["context_ids"], batch["context_mask"], prefix)
        return states[:, -1], table

    # -- recommendation -----------------------------------------------------------------

    def recommend(self, batch: Batch) -> torch.Tensor:
        user, table = self._user(batch)
        return user @ table[self.items].T

    def with_targets(self, samples: Sequence[RecSample]) -> Batch:
        """Targets as entity ids: training ranks all entities, as UniCRS does."""
        batch = self.collate(samples)
        batch["target_entities"] = torch.tensor([s.target_item for s in samples])
        return batch

    def entity_loss(self, batch: Batch) -> torch.Tensor:
        user, table = self._user(batch)
        return F.cross_entropy(
            user @ table.T,
            batch["target_entities"],
            reduction="none",
            label_smoothing=self.config.label_smoothing,
        )

    # -- conversation -------------------------------------------------------------------

    def response_losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample summed NLL of the response tokens and their counts ([B], [B])."""
        states = self.backbone.hidden_states(
            batch["input_ids"], batch["input_mask"], self._conv_prompt(batch)
        )
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

    # -- stages -------------------------------------------------------------------------

    def _begin_recommendation(self) -> None:
        """Both task prompts start from the pre-trained prompt encoder."""
        self.conv_prompt.load_state_dict(self.rec_prompt.state_dict())
        self.rec_prefix_on.fill_(True)

    def stages(self) -> list[Stage]:
        def prompt_params(*modules: nn.Module) -> Any:
            return lambda: [p for m in modules for p in m.parameters()]

        # Prompt pre-training: every item mentioned in any turn (UniCRS).
        pretrain = build_rec_samples(self.task.dataset.dialogues("train"), turns="all")
        return [
            Stage(
                name="pretrain",
                loss=self.entity_loss,
                samples=lambda: pretrain,
                collate=self.with_targets,
                parameters=prompt_params(self.rec_prompt),
            ),
            Stage(
                name="recommend",
                loss=self.entity_loss,
                samples=lambda: self.task.train,
                collate=self.with_targets,
                parameters=prompt_params(self.rec_prompt, self.rec_prefix),
                begin=self._begin_recommendation,
            ),
            Stage(
                name="converse",
                loss=self.response_loss,
                samples=lambda: build_conv_samples(self.task.dataset.dialogues("train")),
                collate=self._with_response,
                select_metric="loss",
                higher_is_better=False,
                validate=self._validate_conversation,
                parameters=prompt_params(self.conv_prompt, self.conv_prefix),
            ),
        ]
