"""STEP's F-Former: learnable queries that read a context's KG entities and its text.

A BLIP-2-style Q-Former (STEP, specs/step.md). K learnable queries Q0 go through
transformer layers in which they self-attend and, every `cross_every`-th layer, also
cross-attend to a memory (the context's entity embeddings, or its text token states). The
same layers also run in text mode over the context's tokens (self-attention only). Query
and text tokens share the attention weights but have their own feed-forward weights::

    entity branch   Z1 = L2norm(W_e F(Q0; H))            H: context entity embeddings
    text branch     t  = L2norm(W_t text(T)[CLS])         T: context token states
    reverse branch  Z2 = L2norm(W_e F(Z1; text(T)))       Z1 reads the text
    fused           Z  = (Z1 + Z2) / 2                    [B, K, d]
    similarity      s(b, c) = max_k <Z_b,k, t_c> / tau    tau learnable, init 0.07

Every memory gets a zero "nothing" slot that is always visible, so that a context without
entities (the first turn of a dialogue) still has a defined cross-attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, 4 * hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * hidden, hidden),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FFormerLayer(nn.Module):
    """Post-norm transformer layer (as BERT and BLIP-2's Q-Former)."""

    def __init__(self, hidden: int, heads: int, cross: bool, dropout: float) -> None:
        super().__init__()
        self.self_attention = nn.MultiheadAttention(hidden, heads, dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(hidden)
        self.cross_attention = (
            nn.MultiheadAttention(hidden, heads, dropout, batch_first=True) if cross else None
        )
        self.cross_norm = nn.LayerNorm(hidden) if cross else None
        self.query_ffn, self.query_norm = FeedForward(hidden, dropout), nn.LayerNorm(hidden)
        self.text_ffn, self.text_norm = FeedForward(hidden, dropout), nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def queries(
        self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """Queries [B, K, H] after self-attention, cross-attention to memory, their FFN."""
        attended, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.self_norm(x + self.dropout(attended))
        if self.cross_attention is not None and self.cross_norm is not None:
            attended, _ = self.cross_attention(
                x, memory, memory, key_padding_mask=~memory_mask, need_weights=False
            )
            x = self.cross_norm(x + self.dropout(attended))
        return self.query_norm(x + self.dropout(self.query_ffn(x)))

    def text(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Text tokens [B, L, H] after masked self-attention and the text FFN."""
        attended, _ = self.self_attention(x, x, x, key_padding_mask=~mask, need_weights=False)
        x = self.self_norm(x + self.dropout(attended))
        return self.text_norm(x + self.dropout(self.text_ffn(x)))


@dataclass
class FFormerOutput:
    queries: torch.Tensor  # Z = (Z1 + Z2) / 2 [B, K, H]
    entity_queries: torch.Tensor  # Z1 [B, K, H]
    text: torch.Tensor  # t [B, H]
    # (W_e F(Q0; H) + W_e F(Z1; T)) / 2 before normalisation: what BLIP-2 hands its LM
    raw_queries: torch.Tensor  # [B, K, H]


class FFormer(nn.Module):
    def __init__(
        self,
        hidden: int,
        *,
        heads: int,
        layers: int,
        n_queries: int,
        cross_every: int = 2,
        dropout: float = 0.1,
        temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.query_init = nn.Parameter(torch.empty(n_queries, hidden))
        nn.init.normal_(self.query_init, std=0.02)
        self.layers = nn.ModuleList(
            FFormerLayer(hidden, heads, cross=index % cross_every == 0, dropout=dropout)
            for index in range(layers)
        )
        self.entity_proj = nn.Linear(hidden, hidden)  # W_e
        self.text_proj = nn.Linear(hidden, hidden)  # W_t
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> torch.Tensor:
        # Clamped as in BLIP-2, so that the logits cannot blow up or vanish.
        return self.log_temperature.exp().clamp(0.001, 0.5)

    def attend(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """F(queries; memory) [B, K, H]; the memory gains an always-visible zero slot."""
        nothing = memory.new_zeros(memory.shape[0], 1, memory.shape[2])
        memory = torch.cat([nothing, memory], dim=1)
        memory_mask = torch.cat([memory_mask.new_ones(memory.shape[0], 1), memory_mask], dim=1)
        for layer in self.layers:
            queries = layer.queries(queries, memory, memory_mask)
        return queries

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tokens = layer.text(tokens, mask)
        return tokens

    def forward(
        self,
        entities: torch.Tensor,
        entity_mask: torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> FFormerOutput:
        """Entities [B, Le, H] (+ mask) and token states [B, Lt, H] (+ mask, CLS first)."""
        start = self.query_init.expand(entities.shape[0], -1, -1)
        raw1 = self.entity_proj(self.attend(start, entities, entity_mask))
        z1 = F.normalize(raw1, dim=-1)
        text_states = self.encode_text(tokens, token_mask)
        text = F.normalize(self.text_proj(text_states[:, 0]), dim=-1)
        raw2 = self.entity_proj(self.attend(z1, text_states, token_mask))
        z2 = F.normalize(raw2, dim=-1)
        return FFormerOutput(
            queries=(z1 + z2) / 2, entity_queries=z1, text=text, raw_queries=(raw1 + raw2) / 2
        )
