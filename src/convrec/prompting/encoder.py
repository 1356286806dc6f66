"""A frozen pretrained encoder (BERT / RoBERTa family) steered by deep key/value prompts.

P-tuning v2 (Liu et al. 2022) on the recommendation side of the prompt methods: every
attention layer of the frozen encoder also attends to a per-layer key/value prefix made by
the prompt (`PrefixProjection`), so the prompt can move the pretrained representation at
every depth while the encoder's weights never change. The user vector is the encoder's
output over the context's tokens::

    context tokens --frozen encoder, layer l also attends to prefix K_l, V_l--> S [B, L, H]
    user = mean of S over real tokens ("mean", as the sentence encoder pools)
         | S at [CLS] ("cls")

The encoder is the one the sentence encoder already holds (all-MiniLM-L6-v2 by default, any
BERT / RoBERTa checkpoint by path), so the real pretrained network sits under the prompts
without a second copy in memory.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from convrec.prompting.backbone import Precision, autocast, prefix_cache
from convrec.prompting.prefix import Prefix

Pooling = Literal["mean", "cls"]


def encoder_shape(model: PreTrainedModel) -> tuple[int, int, int]:
    """(layers, heads, hidden) of a Hugging Face encoder config."""
    config = model.config
    return int(config.num_hidden_layers), int(config.num_attention_heads), int(config.hidden_size)


class PrefixEncoder(nn.Module):
    """A frozen encoder run after a key/value prefix; inputs are right-padded ids + mask."""

    def __init__(self, model: PreTrainedModel, precision: Precision = "float32") -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.n_layer, self.n_head, self.hidden = encoder_shape(model)
        if precision == "bfloat16" and hasattr(model, "set_attn_implementation"):
            # Measured on the 2-core CPU (MiniLM, 64 x 128 tokens + a 42-position prefix):
            # the backward to the prompt takes 1.1 s with sdpa's bfloat16 kernel, 0.4 s eager.
            model.set_attn_implementation("eager")

    def _position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The positions the model gives the tokens without a prefix.

        With a cache the model would start counting after the prefix; a prompt takes no
        position, so the tokens keep those of the unprompted encoder (RoBERTa counts from
        its padding index, BERT from 0).
        """
        embeddings = self.model.embeddings
        make = getattr(embeddings, "create_position_ids_from_input_ids", None)
        if make is not None:
            return make(input_ids, embeddings.padding_idx)
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: Prefix
    ) -> torch.Tensor:
        """Last-layer states of the tokens [B, L, H] (float32) under the prefix."""
        if prefix.key_values is None:
            raise ValueError("an encoder is steered by a key/value prefix; got none")
        kv_mask = prefix.kv_mask
        if kv_mask is None:
            kv_mask = attention_mask.new_ones(len(input_ids), prefix.key_values[0][0].shape[2])
        with autocast(input_ids.device, self.precision):
            states = self.model(
                input_ids=input_ids,
                attention_mask=torch.cat([kv_mask.to(attention_mask.dtype), attention_mask], 1),
                position_ids=self._position_ids(input_ids),
                cache=prefix_cache(prefix.key_values, self.precision),
                use_cache=False,
            ).last_hidden_state
        return states.float()

    def user(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix: Prefix,
        pooling: Pooling,
    ) -> torch.Tensor:
        """The pooled output state [B, H] under the prefix."""
        states = self.hidden_states(input_ids, attention_mask, prefix)
        if pooling == "cls":
            return states[:, 0]
        weights = attention_mask.to(states.dtype)[:, :, None]
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1)
