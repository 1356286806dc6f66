"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

The user is the last hidden state of a causal Transformer over their latest items; an item
scores its dot product with that state (one item table serves input and output)::

    items [B, W]   the last <= max_len history items, left-padded, the latest item last
    x = E[items] * sqrt(hidden) + P[positions]     positions right-aligned: latest = max_len - 1
    h = TransformerEncoder(x, mask)                position t attends to items at <= t only
    scores = h[:, -1] @ E[items of the catalogue]^T           [B, num_items]

Training is the paper's loss: next-item cross-entropy at the positions of a sequence, with
a full softmax over the catalogue instead of the paper's one sampled negative. A task sample
(history, target) becomes the window history + [target]; the model reads window[:-1] and
predicts window[1:]. With `data.train_positions: last` a user has one sample whose target is
their last training item, so an epoch is exactly the paper's pass over each user's latest
max_len + 1 items; "random" or "all" train on prefixes too, and `loss_positions: target`
restricts the loss to each sample's own target (RecBole's samples). The default
(configs/sasrec.yaml) is overlapping windows (`train_positions: windows`, `window_stride:
k`) with the loss at their last k positions (`loss_positions: k`): every training item is
predicted once an epoch, as with whole sequences, but each with at least max_len - k items
before it, as with RecBole's prefixes. A sample's loss is the mean over its trained
positions: every sample weighs the same, and the trainer's per-sample reduction holds
(`loss_weighting: position` divides the sum by max_len instead, so that every trained
position weighs the same, as RecBole's prefixes do).

Deliberate differences from the reference code (pmixer/SASRec.pytorch):
- padded positions are masked out as attention keys (the reference lets real positions
  attend to padding), so a history's scores do not depend on how much padding its batch has;
- positions are right-aligned, so the latest item always has the same position embedding;
- the blocks are torch's pre-LayerNorm `TransformerEncoderLayer`: x + Attn(LN(x)), then
  x + FFN(LN(x)); the reference adds the attention output to LN(x) instead of x.
  `layer_norm: post` gives RecBole's layout instead (LN(embeddings), then LN(x + Attn(x))
  and LN(x + FFN(x)), embeddings not scaled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from convrec.data.schema import TaskKind
from convrec.data.sequences import SeqSample, left_padded
from convrec.data.tasks import SeqTask
from convrec.models.base import Batch, ConvRecModel, ModelConfig, Stage
from convrec.registry import register_model

PADDING = 0  # item token of an empty position; item i is token i + 1
NO_TARGET = -100  # next-item target of a position that is not trained


class SASRecConfig(ModelConfig):
    hidden: int = Field(64, ge=1, description="size of item and position embeddings and states")
    num_blocks: int = Field(2, ge=1, description="self-attention blocks")
    num_heads: int = Field(1, ge=1, description="attention heads per block (divides hidden)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout on embeddings and blocks")
    max_len: int = Field(
        50, ge=1, description="positions the model reads: the last max_len items of a history"
    )
    loss_positions: Literal["all", "target"] | PositiveInt = Field(
        "all",
        description="train next-item prediction at every position of a sample's window (all, "
        "SASRec), only at the sample's target, or at its last k positions (an integer k; "
        "with data.train_positions=windows and data.window_stride=k every training item is "
        "predicted once an epoch, each with at least max_len - k items before it)",
    )

    layer_norm: Literal["pre", "post"] = Field(
        "pre",
        description="pre: x + f(LN(x)) blocks, a final LN, embeddings scaled by sqrt(hidden) "
        "(the reference code's layout); post: LN(x + f(x)) blocks after LN(embeddings), "
        "unscaled (RecBole's)",
    )
    loss_weighting: Literal["sample", "position"] = Field(
        "sample",
        description="sample: a sample's loss is the mean over its trained positions (every "
        "sample weighs the same); position: their sum / max_len (every trained position "
        "weighs the same, as in RecBole, where each prefix is a sample)",
    )

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> SASRecConfig:
        if self.hidden % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden ({self.hidden})")
        return self


@register_model
class SASRec(ConvRecModel):
    name = "sasrec"
    description = "SASRec: causal self-attention over a user's item sequence (sequential data)"
    Config = SASRecConfig
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("sequential",)

    def __init__(self, config: SASRecConfig, task: SeqTask) -> None:
        super().__init__(config, task)  # type: ignore[arg-type]
        self.item_embedding = nn.Embedding(task.num_items + 1, config.hidden, padding_idx=PADDING)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(
            config.hidden,
            config.num_heads,
            dim_feedforward=config.hidden,
            dropout=config.dropout,
            activation="relu",
            batch_first=True,
            norm_first=config.layer_norm == "pre",
        )
        pre = config.layer_norm == "pre"
        self.blocks = nn.TransformerEncoder(
            block,
            config.num_blocks,
            norm=nn.LayerNorm(config.hidden) if pre else None,
            enable_nested_tensor=False,
        )
        self.input_norm = nn.Identity() if pre else nn.LayerNorm(config.hidden)
        self.embedding_scale = config.hidden**0.5 if pre else 1.0
        nn.init.xavier_normal_(self.item_embedding.weight)
        nn.init.xavier_normal_(self.position_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[PADDING].zero_()

    # -- batches ---------------------------------------------------------------------------

    def collate(self, samples: Sequence[SeqSample]) -> Batch:
        """Item tokens of the histories [B, W], left-padded with 0; targets are not read."""
        histories = left_padded([s.history for s in samples], self.config.max_len)
        return {"items": torch.from_numpy(histories + 1)}

    def training_batch(self, samples: Sequence[SeqSample]) -> Batch:
        """Inputs [B, W] and the next item to predict at each position [B, W].

        Training samples always have a history, so W >= 1. A position gets a target when
        its input is an item (and, with `loss_positions: target` or k, only the last one
        or the last k do).
        """
        windows = [np.append(s.history, s.target) for s in samples]
        tokens = left_padded(windows, self.config.max_len + 1) + 1
        inputs, following = tokens[:, :-1], tokens[:, 1:] - 1
        following = np.where(inputs != PADDING, following, NO_TARGET)
        trained = self.config.loss_positions
        if trained != "all":
            following[:, : -(1 if trained == "target" else trained)] = NO_TARGET
        return {"items": torch.from_numpy(inputs), "next_items": torch.from_numpy(following)}

    # -- the network -----------------------------------------------------------------------

    def attention_mask(self, padding: torch.Tensor) -> torch.Tensor:
        """[B * heads, W, W], True where query i may not attend to key j: later positions
        and padding. Every position still sees itself, so a padded row stays finite."""
        width = padding.shape[1]
        ones = torch.ones(width, width, dtype=torch.bool, device=padding.device)
        blocked = ones.triu(diagonal=1)[None] | padding[:, None, :]
        blocked &= ~torch.eye(width, dtype=torch.bool, device=padding.device)
        return blocked.repeat_interleave(self.config.num_heads, dim=0)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """States [B, W, hidden]: position t summarises the items up to t."""
        width = items.shape[1]
        if width > self.config.max_len:
            raise ValueError(f"{width} positions, but max_len is {self.config.max_len}")
        positions = torch.arange(self.config.max_len - width, self.config.max_len)
        x = self.item_embedding(items) * self.embedding_scale
        x = self.input_norm(x + self.position_embedding(positions.to(items.device)))
        padding = items == PADDING
        x = self.dropout(x).masked_fill(padding[..., None], 0.0)
        return self.blocks(x, mask=self.attention_mask(padding))

    def item_scores(self, states: torch.Tensor) -> torch.Tensor:
        """Scores [..., num_items] of states [..., hidden] against every catalogue item."""
        return F.linear(states, self.item_embedding.weight[PADDING + 1 :])

    def recommend(self, batch: Batch) -> torch.Tensor:
        return self.item_scores(self.encode(batch["items"])[:, -1])

    # -- training --------------------------------------------------------------------------

    def loss(self, batch: Batch) -> torch.Tensor:
        """Per sample [B]: mean full-softmax cross-entropy over its trained positions."""
        states = self.encode(batch["items"])
        following = batch["next_items"]
        trained = following != NO_TARGET
        losses = F.cross_entropy(
            self.item_scores(states[trained]), following[trained], reduction="none"
        )
        rows = trained.nonzero(as_tuple=True)[0]
        per_sample = torch.zeros(len(following), device=losses.device, dtype=losses.dtype)
        per_sample.index_add_(0, rows, losses)
        if self.config.loss_weighting == "position":
            # A constant divisor: the trainer's mean over samples is then the mean over
            # trained positions up to a constant factor, independent of the batch.
            return per_sample / self.config.max_len
        return per_sample / trained.sum(dim=1).clamp(min=1)

    def stages(self) -> list[Stage]:
        samples = self.task.train  # the current epoch's samples; epoch_begin redraws them
        return [
            Stage(
                name="recommend",
                loss=self.loss,
                samples=lambda: samples,
                collate=self.training_batch,
                select_metric="ndcg@10",
                epoch_begin=samples.begin_epoch,
            )
        ]
