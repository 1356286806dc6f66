"""Prompt injection into a frozen causal LM (the UniCRS lineage, prefix-tuning).

The pieces that UniCRS, STEP and MSCRS share (specs/prompt-core.md):

- `TokenProjection`: sentence-encoder token states -> residual MLP -> LM width.
- `SemanticFusion`: UniCRS's bilinear cross-attention between context tokens and context
  entities, `A = (W T) E^T / d`, with an entity-side output (`E + softmax_tokens(A)^T T`)
  or a token-side output (`T + softmax_entities(A) E`); padding is masked on both sides.
- `TaskPrefix`: learnable vectors reparameterised as `P = MLP(P0) + P0`.
- `PrefixProjection`: prompt vectors -> residual MLP -> linear to `n_layer * 2 * hidden`
  numbers per position -> per-layer key/value tensors (Li & Liang 2021).
- `PrefixLM`: runs any Hugging Face causal LM after such a prefix through its cache
  interface (transformers 5: a fresh `DynamicCache` per forward, see specs/api-notes.md),
  or after an input-embedding prefix (STEP's conversation prompt), and decodes greedily
  reusing the cache, so the prefix and context are encoded once per response.

The LM is never modified: its weights stay frozen and only prompt-side modules train.
With `precision="bfloat16"` its forward (and the backward to the prompts) runs under CPU/CUDA
autocast and hands float32 states back: on the 2-core CPU a compact GPT-2 prefix step is
~2.3x faster (benchmarks/results/step_ablations.md compares whole runs); prompt-side modules
stay in float32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from convrec.graph.encoders import ResidualMLP

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: [B, heads, P, head_dim] x 2
LMPrecision = Literal["float32", "bfloat16"]


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
        return [(kv[layer, 0], kv[layer, 1]) for layer in range(self.n_layer)]


@dataclass
class Prefix:
    """What goes before the real tokens: key/value prefixes and/or input embeddings.

    `mask` [B, P] marks real prefix positions (a fused prompt is padded to the longest row).
    """

    key_values: KeyValues | None = None
    kv_mask: torch.Tensor | None = None
    embeds: torch.Tensor | None = None  # [B, Pe, H], prepended at the input embeddings
    embeds_mask: torch.Tensor | None = None


def lm_shape(lm: PreTrainedModel) -> tuple[int, int, int]:
    """(layers, heads, hidden) of a Hugging Face causal LM config."""
    config = lm.config
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    heads = getattr(config, "n_head", None) or config.num_attention_heads
    hidden = getattr(config, "n_embd", None) or config.hidden_size
    return int(layers), int(heads), int(hidden)


class PrefixLM(nn.Module):
    """A frozen causal LM run after a prefix. Inputs are left-padded token ids + mask."""

    def __init__(self, lm: PreTrainedModel, precision: LMPrecision = "float32") -> None:
        super().__init__()
        self.lm = lm
        self.precision = precision
        self.n_layer, self.n_head, self.hidden = lm_shape(lm)
        config = lm.config
        self.max_positions = int(
            getattr(config, "n_positions", None)
            or getattr(config, "max_position_embeddings", 0)
            or 1 << 30
        )

    def _autocast(self, device: torch.device) -> AbstractContextManager:
        if self.precision == "float32":
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def _inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: Prefix
    ) -> dict:
        """Model kwargs: a fresh cache holding the KV prefix, the full mask, positions."""
        batch = input_ids.shape[0]
        masks, kwargs = [], {}
        if prefix.key_values is not None:
            cache = DynamicCache()
            # The cache concatenates the prefix with the tokens' keys: one dtype for both.
            dtype = torch.bfloat16 if self.precision == "bfloat16" else None
            for layer, (key, value) in enumerate(prefix.key_values):
                cache.update(key.to(dtype), value.to(dtype), layer)
            kwargs["past_key_values"] = cache
            kv_mask = prefix.kv_mask
            if kv_mask is None:
                kv_mask = attention_mask.new_ones(batch, prefix.key_values[0][0].shape[2])
            masks.append(kv_mask.to(attention_mask.dtype))
        embeds = self.lm.get_input_embeddings()(input_ids)
        real = attention_mask
        if prefix.embeds is not None:
            embeds_mask = prefix.embeds_mask
            if embeds_mask is None:
                embeds_mask = attention_mask.new_ones(prefix.embeds.shape[:2])
            embeds = torch.cat([prefix.embeds.to(embeds.dtype), embeds], dim=1)
            real = torch.cat([embeds_mask.to(attention_mask.dtype), attention_mask], dim=1)
        masks.append(real)
        # Positions count real tokens only: a KV prefix takes no position, and left padding
        # does not shift where a context starts.
        position_ids = (real.cumsum(dim=1) - 1).clamp(min=0)
        if position_ids.shape[1] > self.max_positions:
            raise ValueError(
                f"{position_ids.shape[1]} positions (input-embedding prefix + context + "
                f"response) exceed the LM's {self.max_positions}; lower max_context_tokens"
            )
        kwargs.update(
            inputs_embeds=embeds,
            attention_mask=torch.cat(masks, dim=1),
            position_ids=position_ids,
            use_cache=True,
        )
        return kwargs

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: Prefix
    ) -> torch.Tensor:
        """Last-layer states of the real (and embedding-prefix) positions [B, Pe + T, H]."""
        with self._autocast(input_ids.device):
            kwargs = self._inputs(input_ids, attention_mask, prefix)
            states = self.lm.base_model(**kwargs).last_hidden_state
        return states.float()

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        with self._autocast(states.device):
            return self.lm.get_output_embeddings()(states).float()

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix: Prefix,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        no_repeat_ngram_size: int = 3,
    ) -> torch.Tensor:
        """Greedy continuation ids [B, <= max_new_tokens], pad after a row's end-of-text.

        The prefix and the context are encoded once; each new token is one cached step.
        Repeated n-grams are banned over context + response, as `generate` does.
        """
        with self._autocast(input_ids.device):
            kwargs = self._inputs(input_ids, attention_mask, prefix)
            output = self.lm(**kwargs)
        full_mask = kwargs["attention_mask"]
        positions = kwargs["position_ids"][:, -1]
        cache = output.past_key_values
        no_repeat = (
            NoRepeatNGramLogitsProcessor(no_repeat_ngram_size) if no_repeat_ngram_size else None
        )
        history = input_ids
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        logits = output.logits[:, -1].float()
        generated = []
        for _ in range(max_new_tokens):
            if no_repeat is not None:
                logits = no_repeat(history, logits)
            token = logits.argmax(dim=-1).masked_fill(done, pad_token_id)
            generated.append(token)
            done |= token == eos_token_id
            if done.all():
                break
            history = torch.cat([history, token[:, None]], dim=1)
            full_mask = torch.cat([full_mask, full_mask.new_ones(len(token), 1)], dim=1)
            positions = positions + 1
            with self._autocast(input_ids.device):
                output = self.lm(
                    input_ids=token[:, None],
                    attention_mask=full_mask,
                    position_ids=positions[:, None],
                    past_key_values=cache,
                    use_cache=True,
                )
            cache = output.past_key_values
            logits = output.logits[:, -1].float()
        if not generated:
            return input_ids.new_zeros(input_ids.shape[0], 0)
        return torch.stack(generated, dim=1)
