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

Batches, the frozen LM and encoder, scoring and decoding are shared with STEP and MSCRS
(`convrec.models.prompted`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from convrec.data.tasks import RecTask
from convrec.graph.encoders import EntityEncoder
from convrec.models.base import Batch, Stage
from convrec.models.prompted import PromptedLM, PromptedLMConfig, start_from
from convrec.prompting.prefix import (
    Prefix,
    PrefixProjection,
    SemanticFusion,
    TaskPrefix,
    TokenProjection,
)
from convrec.registry import register_model


class UniCRSConfig(PromptedLMConfig):
    n_prefix_rec: int = Field(10, ge=0, description="learnable recommendation prefix vectors")
    n_prefix_conv: int = Field(20, ge=0, description="learnable conversation prefix vectors")


class UniCRSPrompt(nn.Module):
    """Entity encoder + token projection + fusion + prefix projection (one prompt side)."""

    def __init__(
        self, entities: EntityEncoder, text_dim: int, n_layer: int, n_head: int, hidden: int
    ) -> None:
        super().__init__()
        self.entities = entities
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
class UniCRS(PromptedLM):
    name = "unicrs"
    description = "UniCRS: KG + text prompts as prefixes of a frozen LM (rec + conversation)"
    Config = UniCRSConfig
    config: UniCRSConfig

    def __init__(self, config: UniCRSConfig, task: RecTask) -> None:
        super().__init__(config, task)
        self.rec_prompt = self._prompt_side(self.rec_layers, self.rec_heads, self.rec_hidden)
        self.rec_prefix = TaskPrefix(config.n_prefix_rec, self.rec_hidden)
        if config.conversation:
            self.conv_prompt = self._prompt_side(self.lm_layers, self.lm_heads, self.hidden)
            self.conv_prefix = TaskPrefix(config.n_prefix_conv, self.hidden)
        # Set when the recommendation stage begins; checkpoints carry it.
        self.register_buffer("rec_prefix_on", torch.zeros((), dtype=torch.bool))

    # -- prompts ------------------------------------------------------------------------

    def _prompt_side(self, n_layer: int, n_head: int, hidden: int) -> UniCRSPrompt:
        """The prompt encoder of a backbone of this shape (its own entity encoder)."""
        return UniCRSPrompt(self.entity_encoder(hidden), self.encoder.dim, n_layer, n_head, hidden)

    def _rec_prompt(self, batch: Batch) -> tuple[Prefix, torch.Tensor]:
        size = len(batch["texts"])
        prefix = self.rec_prefix(size) if bool(self.rec_prefix_on) else None
        return self.rec_prompt(batch, self._token_states(batch), "entity", prefix)

    def _conv_prompt(self, batch: Batch) -> Prefix:
        size = len(batch["texts"])
        prefix, _ = self.conv_prompt(
            batch, self._token_states(batch), "token", self.conv_prefix(size)
        )
        return prefix

    def _user(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, table = self._rec_prompt(batch)
        return self._user_state(batch, prefix), table

    def entity_loss(self, batch: Batch) -> torch.Tensor:
        user, table = self._user(batch)
        return self.recommendation_loss_of(user, table, batch)

    # -- stages -------------------------------------------------------------------------

    def _begin_recommendation(self) -> None:
        """Both task prompts start from the pre-trained prompt encoder (where its shape
        fits the conversation backbone, see `start_from`)."""
        if self.config.conversation:
            start_from(self.conv_prompt, self.rec_prompt)
        self.rec_prefix_on.fill_(True)

    def stages(self) -> list[Stage]:
        def prompt_params(*modules: nn.Module) -> Any:
            return lambda: [p for m in modules for p in m.parameters()]

        pretrain = self._pretrain_samples()
        stages = [
            Stage(
                name="pretrain",
                loss=self.entity_loss,
                samples=lambda: pretrain,
                collate=self.with_targets,
                parameters=prompt_params(self.rec_prompt),
                lr_scale=self.head_lr_scale,
            ),
            Stage(
                name="recommend",
                loss=self.entity_loss,
                samples=lambda: self.task.train,
                collate=self.recommendation_samples_collate,
                parameters=prompt_params(self.rec_prompt, self.rec_prefix),
                begin=self._begin_recommendation,
                lr_scale=self.head_lr_scale,
            ),
        ]
        if self.config.conversation:
            stages.append(
                self._converse_stage(
                    self.response_loss, prompt_params(self.conv_prompt, self.conv_prefix)
                )
            )
        return stages
