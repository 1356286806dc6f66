"""A frozen causal LM run after a prompt prefix (prefix-tuning; the UniCRS lineage).

`PrefixLM` runs any Hugging Face causal LM after a `Prefix` through its cache interface
(transformers 5: a fresh `DynamicCache` per forward, see specs/api-notes.md), or after an
input-embedding prefix (STEP's conversation prompt), and decodes greedily reusing the
cache, so the prefix and context are encoded once per response.

The LM is never modified: its weights stay frozen and only prompt-side modules train.
With `precision="bfloat16"` its forward (and the backward to the prompts) runs under CPU/CUDA
autocast and hands float32 states back: on the 2-core CPU a compact GPT-2 prefix step is
~2.3x faster (benchmarks/results/step_ablations.md compares whole runs); prompt-side modules
stay in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from convrec.prompting.backbone import Precision, autocast, prefix_cache
from convrec.prompting.prefix import Prefix


def lm_shape(lm: PreTrainedModel) -> tuple[int, int, int]:
    """(layers, heads, hidden) of a Hugging Face causal LM config."""
    config = lm.config
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    heads = getattr(config, "n_head", None) or config.num_attention_heads
    hidden = getattr(config, "n_embd", None) or config.hidden_size
    return int(layers), int(heads), int(hidden)


class PrefixLM(nn.Module):
    """A frozen causal LM run after a prefix. Inputs are left-padded token ids + mask."""

    def __init__(self, lm: PreTrainedModel, precision: Precision = "float32") -> None:
        super().__init__()
        self.lm = lm
        self.precision = precision
        self.n_layer, self.n_head, self.hidden = lm_shape(lm)
        # What maps last-layer states to logits: GPT-2's output layer, or a BERT decoder's
        # `cls` head (a transform, then the output layer tied to the embeddings).
        self.head = getattr(lm, "cls", None) or lm.get_output_embeddings()
        config = lm.config
        self.max_positions = int(
            getattr(config, "n_positions", None)
            or getattr(config, "max_position_embeddings", 0)
            or 1 << 30
        )

    def _inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: Prefix
    ) -> dict:
        """Model kwargs: a fresh cache holding the KV prefix, the full mask, positions."""
        batch = input_ids.shape[0]
        masks, kwargs = [], {}
        if prefix.key_values is not None:
            kwargs["past_key_values"] = prefix_cache(prefix.key_values, self.precision)
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
        with autocast(input_ids.device, self.precision):
            kwargs = self._inputs(input_ids, attention_mask, prefix)
            states = self.lm.base_model(**kwargs).last_hidden_state
        return states.float()

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of last-layer states (the LM's own head)."""
        with autocast(states.device, self.precision):
            return self.head(states).float()

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
        on_token: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Greedy continuation ids [B, <= max_new_tokens], pad after a row's end-of-text.

        The prefix and the context are encoded once; each new token is one cached step.
        Repeated n-grams are banned over context + response, as `generate` does.
        `on_token` sees each step's tokens [B] as they are chosen (for streaming).
        """
        with autocast(input_ids.device, self.precision):
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
            if on_token is not None:
                on_token(token)
            done |= token == eos_token_id
            if done.all():
                break
            history = torch.cat([history, token[:, None]], dim=1)
            full_mask = torch.cat([full_mask, full_mask.new_ones(len(token), 1)], dim=1)
            positions = positions + 1
            with autocast(input_ids.device, self.precision):
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
