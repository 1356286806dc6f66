"""Prompt modules of the UniCRS lineage: what turns dialogue and KG states into prefixes.

The pieces that UniCRS, STEP and MSCRS share (specs/prompt-core.md):

- `TokenProjection`: sentence-encoder token states -> residual MLP -> backbone width.
- `SemanticFusion`: UniCRS's bilinear cross-attention between context tokens and context
  entities, `A = (W T) E^T / d`, with an entity-side output (`E + softmax_tokens(A)^T T`)
  or a token-side output (`T + softmax_entities(A) E`); padding is masked on both sides.
- `TaskPrefix`: learnable vectors reparameterised as `P = MLP(P0) + P0`.
- `PrefixProjection`: prompt vectors -> residual MLP -> linear to `n_layer * 2 * hidden`
  numbers per position -> per-layer key/value tensors (Li & Liang 2021; P-tuning v2).
- `Prefix`: what goes in front of a frozen backbone's tokens (key/values, embeddings).

The backbones that read a `Prefix` are in `convrec.prompting.lm` (causal LM) and
`convrec.prompting.encoder` (bidirectional encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from convrec.graph.encoders import ResidualMLP

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: [B, heads, P, head_dim] x 2


class TokenProjection(nn.Module):
    def __init__(self, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = ResidualMLP(text_dim)
        self.proj = nn.Linear(text_dim, hidden)

    def forward(self, token_states: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mlp(token_states))


class SemanticFusion(nn.Module):
    """Bilinear attention between token states T [B, Lt, H] and entity states E [B, Le, H]."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.bilinear = nn.Linear(hidden, hidden, bias=False)
        self.hidden = hidden

    def forward(
        self,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        entities: torch.Tensor,
        entity_mask: torch.Tensor,
        output: Literal["entity", "token"],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused prompt and its mask: [B, Le, H] (entity side) or [B, Lt, H] (token side)."""
        scores = self.bilinear(tokens) @ entities.transpose(1, 2) / self.hidden  # [B, Lt, Le]
        if output == "entity":
            logits = scores.masked_fill(~token_mask[:, :, None], torch.finfo(scores.dtype).min)
            weights = torch.softmax(logits, dim=1) * token_mask[:, :, None]  # over tokens
            return entities + weights.transpose(1, 2) @ tokens, entity_mask
        logits = scores.masked_fill(~entity_mask[:, None, :], torch.finfo(scores.dtype).min)
        # Multiplying by the mask keeps a context without entities at T, without NaN.
        weights = torch.softmax(logits, dim=2) * entity_mask[:, None, :]  # over entities
        return tokens + weights @ entities, token_mask


class TaskPrefix(nn.Module):
    """n learnable prompt vectors, reparameterised by a residual MLP."""

    def __init__(self, length: int, hidden: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.empty(length, hidden))
        nn.init.normal_(self.vectors, std=0.02)
        self.mlp = ResidualMLP(hidden)

    def forward(self, batch_size: int) -> torch.Tensor:
        """[batch_size, length, hidden]."""
        return self.mlp(self.vectors).expand(batch_size, -1, -1)


class PrefixProjection(nn.Module):
    """Prompt vectors [B, P, H] -> per-layer key/value prefixes for the LM."""

    def __init__(self, hidden: int, n_layer: int, n_head: int) -> None:
        super().__init__()
        self.mlp = ResidualMLP(hidden)
        self.proj = nn.Linear(hidden, n_layer * 2 * hidden)
        self.n_layer, self.n_head, self.head_dim = n_layer, n_head, hidden // n_head

    def forward(self, prompt: torch.Tensor) -> KeyValues:
        batch, length, _ = prompt.shape
        flat = self.proj(self.mlp(prompt))
        # [B, P, layer, k|v, head, head_dim] -> [layer, k|v, B, head, P, head_dim]
        kv = flat.view(batch, length, self.n_layer, 2, self.n_head, self.head_dim)
        kv = kv.permute(2, 3, 0, 4, 1, 5)
        # unbind, not indexing: the backward of each index would allocate the whole tensor
        return [(key, value) for key, value in (layer.unbind(0) for layer in kv.unbind(0))]


@dataclass
class Prefix:
    """What goes before the real tokens: key/value prefixes and/or input embeddings.

    `mask` [B, P] marks real prefix positions (a fused prompt is padded to the longest row).
    """

    key_values: KeyValues | None = None
    kv_mask: torch.Tensor | None = None
    embeds: torch.Tensor | None = None  # [B, Pe, H], prepended at the input embeddings
    embeds_mask: torch.Tensor | None = None
