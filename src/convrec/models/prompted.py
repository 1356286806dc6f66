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

import logging
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from convrec.data.samples import (
    SLOT_TOKEN,
    ConvSample,
    PretrainTargets,
    RecSample,
    build_conv_samples,
    build_pretrain_samples,
)
from convrec.data.tasks import RecTask
from convrec.graph.encoders import EntityEncoder
from convrec.graph.rgcn import GraphSettings
from convrec.models.base import (
    Batch,
    ConvRecModel,
    ModelConfig,
    Reply,
    Stage,
    keep_out_of_checkpoints,
    move_to,
)
from convrec.prompting.backbone import PrecisionSetting, resolve_precision
from convrec.prompting.encoder import Pooling, PrefixEncoder
from convrec.prompting.entity_names import EntityNames, NamedEntityEncoder
from convrec.prompting.lm import PrefixLM, lm_shape
from convrec.prompting.prefix import Prefix
from convrec.text.dialogue import render_context, render_turn, speaker_prefix
from convrec.text.encoder import DEFAULT_ENCODER, SentenceEncoder
from convrec.text.lm import PRETRAINED_LM, LMPretrainConfig, freeze, load_causal_lm

IGNORE = -100  # label of positions that carry no LM loss
MEMO_LIMIT = 40_000  # contexts whose encoder states are kept (~1 GB at 128 tokens)
# Frozen encoder states per (encoder, max tokens), shared by every model of a process, so
# that a sweep of runs in one process (benchmarks/step_ablations.py) encodes a context once.
_TEXT_MEMOS: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
RecBackbone = Literal["encoder", "lm"]
Candidates = Literal["entities", "items"]

log = logging.getLogger("convrec.model")


class PromptedLMConfig(ModelConfig, GraphSettings):
    lm: str = Field(
        PRETRAINED_LM,
        description="frozen causal LM: 'pretrained' (the cached compact LM of the run's "
        "dataset) or a local checkpoint directory / cached hub name",
    )
    compact_lm: LMPretrainConfig = Field(
        default_factory=LMPretrainConfig, description="how the 'pretrained' LM is made"
    )
    lm_precision: PrecisionSetting = Field(
        "float32",
        description="the frozen backbones' compute (LM and prompted encoder): float32, "
        "bfloat16 autocast (~2.3x faster on a CPU with AVX512-BF16; prompts and losses stay "
        "float32), or auto: bfloat16 where the hardware computes it, float32 elsewhere",
    )
    text_encoder: str = Field(
        DEFAULT_ENCODER,
        description="frozen pretrained encoder of the context (sentence-transformers name or "
        "directory, or a BERT / RoBERTa checkpoint directory): its token states feed the "
        "prompts, and with rec_backbone 'encoder' it is the recommender's backbone",
    )
    rec_backbone: RecBackbone = Field(
        "encoder",
        description="what the recommendation prompt steers: 'encoder' (text_encoder under "
        "per-layer key/value prompts, P-tuning v2; the user vector is its pooled output) or "
        "'lm' (the causal LM's state at the last context token, as the papers with DialoGPT)",
    )
    rec_pooling: Pooling = Field(
        "mean",
        description="user vector of the 'encoder' backbone: mean over the context's tokens "
        "(the sentence encoder's own pooling) or the [CLS] state",
    )
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
    rec_candidates: Candidates = Field(
        "entities",
        description="what the recommendation stage's softmax ranks: every KG entity "
        "(UniCRS) or the catalogue items (as evaluation does)",
    )
    item_bias: bool = Field(
        False,
        description="a learned score bias per entity (a popularity prior) added to "
        "the user-entity dot product",
    )
    entity_names: bool = Field(
        False,
        description="every entity's row adds the frozen text encoder's vector of its name "
        "(item title, KG label) times a learned scale (convrec.prompting.entity_names)",
    )
    name_scale: float = Field(
        10.0, gt=0, description="initial scale of the name vectors (a cosine's temperature)"
    )
    rec_normalize: bool = Field(
        False,
        description="L2-normalise the user vector, as the sentence encoder normalises its "
        "output: scores are then cosines times the entity rows' norms",
    )
    rec_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the user vector")
    head_lr_scale: float = Field(
        1.0,
        gt=0,
        description="learning rate of the score head's own parameters (item bias, name "
        "scale) relative to the stage's: they start at zero or at a fixed temperature and "
        "must move further in few steps than the prompt does",
    )
    pretrain_with_response: bool = Field(
        True,
        description="prompt pre-training reads the context and the turn itself (UniCRS's "
        "released code); false: the context before the turn (the paper's description)",
    )
    pretrain_targets: PretrainTargets = Field(
        "items_and_entities",
        description="what prompt pre-training predicts of a turn: its movies and other KG "
        "entities (released code), or its movies only",
    )
    conversation: bool = Field(
        True,
        description="train the conversation prompt and answer in words; false: a "
        "recommendation-only run (pretrain + recommend), e.g. for ablations",
    )

    @property
    def uses_lm(self) -> bool:
        """Whether the run needs the causal LM (a recommendation-only run on the encoder
        does not, so it skips the LM's pre-training and loading)."""
        return self.conversation or self.rec_backbone == "lm"


def start_from(target: nn.Module, source: nn.Module) -> bool:
    """Copy the pre-trained prompt side `source` into `target` where the two have the same
    shapes (both steer the same backbone width); return whether it did.

    With the encoder as the recommender's backbone the conversation prompt is sized for
    the LM, so it cannot inherit the pre-trained prompt and starts from its own init.
    """
    theirs, ours = source.state_dict(), target.state_dict()
    if theirs.keys() != ours.keys() or any(theirs[k].shape != ours[k].shape for k in ours):
        return False
    target.load_state_dict(theirs)
    return True


class PromptedLM(ConvRecModel):
    """Base of the prompt-learning models (see module doc)."""

    config: PromptedLMConfig
    optional_stages = ("converse",)  # off when model.conversation is false

    def __init__(self, config: PromptedLMConfig, task: RecTask) -> None:
        super().__init__(config, task)
        self.can_respond = config.conversation
        self.precision = resolve_precision(config.lm_precision)
        if config.lm_precision == "auto":
            log.info("frozen backbones in %s (lm_precision: auto)", self.precision)
        self.encoder = SentenceEncoder(
            config.text_encoder, max_tokens=config.max_text_tokens, keep="end"
        )
        self.encoder.requires_grad_(False)
        keep_out_of_checkpoints(self, "encoder", on_load=self._own_text_memo)
        self.backbone: PrefixLM | None = None
        if config.uses_lm:
            self._load_lm(config)
        # The recommendation side's backbone: the text encoder's own (frozen) weights under
        # deep prompts, or the LM. `rec_*` is the shape its prompt must have.
        if config.rec_backbone == "encoder":
            self.rec_encoder = PrefixEncoder(self.encoder.transformer, self.precision)
            keep_out_of_checkpoints(self, "rec_encoder")
            self.rec_layers = self.rec_encoder.n_layer
            self.rec_heads = self.rec_encoder.n_head
            self.rec_hidden = self.rec_encoder.hidden
        else:
            self.rec_layers, self.rec_heads, self.rec_hidden = (
                self.lm_layers,
                self.lm_heads,
                self.hidden,
            )
        self.register_buffer("items", torch.from_numpy(task.kg.items), persistent=False)
        self.register_buffer("item_index", torch.from_numpy(task.kg.item_index), persistent=False)
        if config.item_bias:
            self.entity_bias = nn.Parameter(torch.zeros(task.kg.num_entities))
        self.user_dropout = nn.Dropout(config.rec_dropout)
        self._conv_valid: list[ConvSample] | None = None
        self._conv_valid_words: int | None = None
        self._text_memo = _TEXT_MEMOS.setdefault((config.text_encoder, config.max_text_tokens), {})

    def _load_lm(self, config: PromptedLMConfig) -> None:
        """The frozen causal LM, its tokenizer and shape (`hidden`: the conversation width)."""
        if config.lm == PRETRAINED_LM:
            raise ValueError(
                f"model.lm='pretrained' is resolved by the run (convrec train); to build "
                f"{self.name} directly, pass the directory that `convrec lm pretrain` printed"
            )
        lm, tokenizer = load_causal_lm(config.lm)
        self.backbone = PrefixLM(freeze(lm), self.precision)
        keep_out_of_checkpoints(self, "backbone")
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.lm_layers, self.lm_heads, self.hidden = lm_shape(lm)
        self._eos = tokenizer.eos_token_id
        self._slot = tokenizer.convert_tokens_to_ids(SLOT_TOKEN)
        self._system = tokenizer(speaker_prefix("recommender").rstrip(), add_special_tokens=False)[
            "input_ids"
        ]

    def entity_encoder(self, hidden: int) -> EntityEncoder:
        """The R-GCN entity encoder of one prompt side (UniCRS), at the backbone width
        `hidden`, with the entity-name prior when `model.entity_names` is on."""
        config = self.config
        dim = config.entity_dim or hidden // 2
        if not config.entity_names:
            return EntityEncoder(self.task.kg, dim, hidden, config)
        names = EntityNames.of_dataset(self.task.dataset, self.encoder, hidden, config.name_scale)
        return NamedEntityEncoder(self.task.kg, dim, hidden, config, names)

    def head_lr_scale(self, parameter: nn.Parameter) -> float:
        """Stage learning-rate factor: `model.head_lr_scale` for the score head's own
        parameters (item bias, name scales), 1 for the prompt."""
        head = [getattr(self, "entity_bias", None)]
        head += [m.scale for m in self.modules() if isinstance(m, EntityNames)]
        return self.config.head_lr_scale if any(parameter is p for p in head) else 1.0

    def _own_text_memo(self) -> None:
        """Encoder weights came from a checkpoint: states of the shared memo do not apply."""
        self._text_memo = {}

    def train(self, mode: bool = True) -> PromptedLM:
        """Frozen backbones stay in eval mode (no dropout)."""
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        self.encoder.eval()  # also the prompted rec encoder: the same module
        return self

    # -- what a subclass provides --------------------------------------------------------

    def _user(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """LM state at the last context token [B, H] under the recommendation prompt, and
        every entity's embedding [num_entities, H]."""
        raise NotImplementedError

    def _conv_prompt(self, batch: Batch) -> Prefix:
        """The prefix under which the LM writes the response."""
        raise NotImplementedError

    def _pretrain_samples(self) -> list[RecSample]:
        """Prompt pre-training samples of the training split (see build_pretrain_samples)."""
        return build_pretrain_samples(
            self.task.dataset.dialogues("train"),
            with_response=self.config.pretrain_with_response,
            targets=self.config.pretrain_targets,
        )

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
        batch = {
            "texts": [render_context(s.context_turns, "text") for s in samples],
            "entities": entity_ids,
            "entity_mask": torch.arange(entity_ids.shape[1])[None, :] < lengths[:, None],
        }
        contexts = []
        if self.backbone is not None:
            contexts = self._context_ids(samples)
            batch["context_ids"], batch["context_mask"] = self._pad_left(contexts)
        if self.config.rec_backbone == "encoder":
            features = self.encoder.tokenize(batch["texts"])
            batch["text_ids"] = features["input_ids"]
            batch["text_mask"] = features["attention_mask"]
        return batch, contexts

    def _scored_responses(self, samples: Sequence[ConvSample]) -> list[list[int]]:
        """Each response's tokens as the LM is trained and scored on them: at most
        max_response_tokens - 1, then end-of-text."""
        responses = self.tokenizer([" " + s.response for s in samples], add_special_tokens=False)
        limit = self.config.max_response_tokens - 1
        return [[*response[:limit], self._eos] for response in responses["input_ids"]]

    def _with_response(self, samples: Sequence[ConvSample]) -> Batch:
        """The context followed by the response and end-of-text; labels on the response."""
        batch, contexts = self._collate(samples)
        rows, labels = [], []
        for context, response in zip(contexts, self._scored_responses(samples), strict=True):
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

    def _user_state(self, batch: Batch, prefix: Prefix) -> torch.Tensor:
        """The user vector [B, rec_hidden] under the recommendation prefix: the prompted
        encoder's pooled output, or the LM's last-layer state at the context's last token."""
        if self.config.rec_backbone == "encoder":
            user = self.rec_encoder.user(
                batch["text_ids"], batch["text_mask"], prefix, self.config.rec_pooling
            )
        else:
            states = self.backbone.hidden_states(
                batch["context_ids"], batch["context_mask"], prefix
            )
            user = states[:, -1]
        if self.config.rec_normalize:
            user = F.normalize(user, dim=-1)
        return self.user_dropout(user)

    def recommend(self, batch: Batch) -> torch.Tensor:
        user, table = self._user(batch)
        return self.scores(user, table, "items")

    def scores(
        self, user: torch.Tensor, table: torch.Tensor, candidates: Candidates
    ) -> torch.Tensor:
        """User vectors [B, H] against every entity [B, N] or the catalogue [B, items]."""
        if candidates == "items":
            table = table[self.items]
        scores = user @ table.T
        if self.config.item_bias:
            bias = self.entity_bias
            scores = scores + (bias[self.items] if candidates == "items" else bias)
        return scores

    def training_scores(
        self, user: torch.Tensor, table: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores over the batch's candidates and the targets' columns in them."""
        targets = batch["target_entities"]
        if batch["candidates"] == "items":
            return self.scores(user, table, "items"), self.item_index[targets]
        return self.scores(user, table, "entities"), targets

    def with_targets(
        self, samples: Sequence[RecSample], candidates: Candidates = "entities"
    ) -> Batch:
        """Targets as entity ids, ranked among all entities (prompt pre-training, whose
        targets include non-item entities) or among the catalogue (`candidates`)."""
        batch = self.collate(samples)
        batch["target_entities"] = torch.tensor([s.target_item for s in samples])
        batch["candidates"] = candidates
        # Samples of one context (one per target) share a group: not each other's negatives.
        groups: dict[tuple[str, int, int], int] = {}
        keys = [(s.dialogue_id, s.turn_index, len(s.context_turns)) for s in samples]
        batch["context_group"] = torch.tensor([groups.setdefault(k, len(groups)) for k in keys])
        return batch

    def recommendation_loss_of(
        self, user: torch.Tensor, table: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """Cross-entropy of the user's scores against the targets, per sample."""
        scores, targets = self.training_scores(user, table, batch)
        return F.cross_entropy(
            scores, targets, reduction="none", label_smoothing=self.config.label_smoothing
        )

    def recommendation_samples_collate(self, samples: Sequence[RecSample]) -> Batch:
        """The recommendation stage's batches: targets among `model.rec_candidates`."""
        return self.with_targets(samples, self.config.rec_candidates)

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

    def response_words(self, samples: Sequence[ConvSample]) -> int:
        """Whitespace words of the scored responses, end of text counted as one (as the
        LM pre-training counts them): NLL per word compares LMs with other tokenizers."""
        scored = self._scored_responses(samples)
        texts = self.tokenizer.batch_decode([response[:-1] for response in scored])
        return sum(len(text.split()) + 1 for text in texts)

    def _converse_stage(
        self,
        loss: Callable[[Batch], torch.Tensor],
        parameters: Callable[[], Iterable[nn.Parameter]],
        epoch_begin: Callable[[int], dict[str, float]] | None = None,
    ) -> Stage:
        """Conversation tuning: response NLL on training recommender turns, selected by
        validation loss (the same for every prompt method; only the prompt differs)."""
        return Stage(
            name="converse",
            loss=loss,
            samples=lambda: build_conv_samples(self.task.dataset.dialogues("train")),
            collate=self._with_response,
            select_metric="loss",
            higher_is_better=False,
            validate=self._validate_conversation,
            parameters=parameters,
            epoch_begin=epoch_begin,
        )

    def _validate_conversation(self) -> dict[str, float]:
        if self._conv_valid is None:
            self._conv_valid = build_conv_samples(self.task.dataset.dialogues("valid"))
        if self._conv_valid_words is None:
            self._conv_valid_words = self.response_words(self._conv_valid)
        total, count = self.response_nll(self._conv_valid)
        loss = total / max(count, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "word_perplexity": math.exp(min(total / max(self._conv_valid_words, 1), 50.0)),
        }

    @torch.no_grad()
    def respond(
        self,
        samples: Sequence[ConvSample],
        *,
        exclude: Sequence[Collection[int]] | None = None,
        on_text: Callable[[str], None] | None = None,
        candidates: int = 50,
    ) -> list[Reply]:
        """Greedy responses with `<movie>` slots filled by the recommender's top items."""
        if on_text is not None and len(samples) != 1:
            raise ValueError(f"on_text streams one reply, not {len(samples)}")
        was_training = self.training
        self.eval()
        batch = move_to(self.collate(samples), self.device)
        scores = self.recommend(batch)
        if exclude is not None:
            scores = self.without_items(scores, exclude)
        best = scores.topk(min(candidates, len(self.items)), dim=1)
        ranked = [
            self.items[ranking[torch.isfinite(values)]].tolist()
            for values, ranking in zip(best.values, best.indices, strict=True)
        ]
        stream = _ReplyStream(self, ranked[0], on_text) if on_text is not None else None
        generated = self.backbone.generate(
            batch["context_ids"],
            batch["context_mask"],
            self._conv_prompt(batch),
            max_new_tokens=self.config.max_new_tokens,
            eos_token_id=self._eos,
            pad_token_id=self.tokenizer.pad_token_id,
            no_repeat_ngram_size=self.config.no_repeat_ngram_size,
            on_token=stream,
        ).tolist()
        self.train(was_training)
        replies = [self._reply(ids, items) for ids, items in zip(generated, ranked, strict=True)]
        if stream is not None:
            stream.finish(replies[0].text)
        return replies

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


class _ReplyStream:
    """Hands a reply's text to `on_text` as its tokens are generated: after each token
    the reply so far is decoded (slots filled) and what it adds is passed on; text that
    ends inside a multi-byte character waits for the next token.

    A tokenizer that cleans up spaces when decoding (WordPiece: "you ' re" -> "you're")
    can change the end of the text with the next token, one space back at most; its last
    two words wait until more follows or the reply ends."""

    def __init__(
        self, model: PromptedLM, ranked: list[int], on_text: Callable[[str], None]
    ) -> None:
        self.model, self.ranked, self.on_text = model, ranked, on_text
        self.ids: list[int] = []
        self.sent = ""
        self.ended = False
        self.hold_back = bool(getattr(model.tokenizer, "clean_up_tokenization_spaces", False))

    def __call__(self, token: torch.Tensor) -> None:
        token_id = int(token[0])
        if self.ended or token_id == self.model._eos:
            self.ended = True
            return
        self.ids.append(token_id)
        text = self.model._reply(self.ids, self.ranked).text
        if self.hold_back:
            last = text.rfind(" ")
            text = text[: text.rfind(" ", 0, max(last, 0)) + 1]
        self._send(text)

    def finish(self, text: str) -> None:
        self._send(text)

    def _send(self, text: str) -> None:
        if (
            text.startswith(self.sent)
            and len(text) > len(self.sent)
            and not text.endswith("\ufffd")
        ):
            self.on_text(text[len(self.sent) :])
            self.sent = text
