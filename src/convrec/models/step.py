"""STEP: an F-Former fuses context and KG, a curriculum aligns it, dual prefixes steer the LM.

"STEP: Stepwise Curriculum Learning for Context-Knowledge Fusion in Conversational
Recommendation" (arXiv 2508.10669); specs/step.md, which combines the paper summary with
the authors' released code::

    entities --EntityEncoder--> E_all [N, H]            H = E_all[context entities, last 32]
    context  --sentence enc.--> T [Lt, H]               (TokenProjection; CLS first)
    Z, Z1, t = FFormer(H, T)                     Z [K, H], t [H]   (convrec.prompting.fformer)
    rec:  [P_rec ; Z] --PrefixProjection--> key/value prefix;  scores = LM state . E_all
    conv: [P_conv ; LayerNorm(Linear(Z))] prepended to the input embeddings; LM loss

Alignment losses on the F-Former (convrec.prompting.alignment), weighted by the curriculum
(convrec.prompting.curriculum): L_F = L_itc + w_m L_mar + w_t L_tri + w_a L_aux. The curriculum
counts the epochs the F-Former's weights have trained, from the start of prompt
pre-training through recommendation tuning (recommendation continues from the selected
pre-training epoch); the weights of each epoch are in the run's history (`weight/...`).

Stages (the released code), LM frozen throughout:
  pretrain   L_rec (all items mentioned in any turn, no task prefix) + 0.5 L_F
  recommend  L_rec (rec prefix [P_rec ; Z]) + 0.2 L_F
  converse   LM loss on response tokens (conv prefix) + 0.2 L_F (target-free terms)
As in our UniCRS, the conversation side (entity encoder + F-Former) starts as a copy of the
pre-trained one, so conversation tuning never moves the recommender that fills its slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from torch import nn

from convrec.data.tasks import RecTask
from convrec.graph.encoders import EntityEncoder
from convrec.models.base import Batch, Stage
from convrec.models.prompted import PromptedLM, PromptedLMConfig, start_from
from convrec.prompting.alignment import (
    auxiliary_loss,
    contrastive_loss,
    margin_loss,
    query_text_similarity,
    triplet_loss,
)
from convrec.prompting.curriculum import CurriculumConfig, LossWeights, curriculum_weights
from convrec.prompting.fformer import FFormer, FFormerOutput
from convrec.prompting.prefix import Prefix, PrefixProjection, TaskPrefix, TokenProjection
from convrec.registry import register_model
from convrec.settings import Settings


class AlignmentPhaseWeights(Settings):
    """How much L_F counts next to each stage's own loss (the released code's values)."""

    model_config = ConfigDict(validate_assignment=True)

    pretrain: float = Field(0.5, ge=0, description="L_rec + w L_F in prompt pre-training")
    recommend: float = Field(0.2, ge=0, description="L_rec + w L_F in recommendation tuning")
    converse: float = Field(0.2, ge=0, description="LM loss + w L_F in conversation tuning")


class STEPConfig(PromptedLMConfig):
    n_queries: int = Field(32, ge=1, description="F-Former learnable queries K")
    fformer_layers: int = Field(2, ge=1, description="F-Former transformer layers")
    cross_every: int = Field(2, ge=1, description="queries cross-attend every n-th layer")
    fformer_dropout: float = Field(0.1, ge=0, lt=1, description="dropout inside the F-Former")
    n_prefix_rec: int = Field(10, ge=0, description="P_rec vectors (released scripts: 10)")
    n_prefix_conv: int = Field(10, ge=0, description="P_conv vectors")
    prompt_queries: Literal["normalized", "scaled", "raw"] = Field(
        "normalized",
        description="what the prefixes read: Z as the spec writes it (L2-normalised, as the "
        "alignment losses see it), Z times a learned scale (one per prompt side, starting "
        "at sqrt(width): unit-variance entries), or the branch outputs before normalisation "
        "(as BLIP-2 feeds its LM); the normalised Z barely varies between contexts "
        "(benchmarks/step_prompt_diagnostics.py)",
    )
    rec_loss: Literal["cross_entropy", "bce"] = Field(
        "cross_entropy",
        description="item loss over all entities: softmax cross-entropy (released code) or "
        "one-vs-all BCE (paper summary; the positive's term + the mean over negatives)",
    )
    curriculum: CurriculumConfig = Field(
        default_factory=CurriculumConfig, description="schedule and weights of L_F's terms"
    )
    alignment_weight: AlignmentPhaseWeights = Field(
        default_factory=AlignmentPhaseWeights, description="weight of L_F per stage"
    )


class STEPEncoder(nn.Module):
    """One prompt side: entity encoder, token projection and F-Former."""

    def __init__(
        self, entities: EntityEncoder, config: STEPConfig, text_dim: int, hidden: int, heads: int
    ):
        super().__init__()
        self.entities = entities
        self.tokens = TokenProjection(text_dim, hidden)
        self.fformer = FFormer(
            hidden,
            heads=heads,
            layers=config.fformer_layers,
            n_queries=config.n_queries,
            cross_every=config.cross_every,
            dropout=config.fformer_dropout,
        )
        self.prompt_queries = config.prompt_queries
        if config.prompt_queries == "scaled":
            self.query_scale = nn.Parameter(torch.tensor(math.sqrt(hidden)))

    def prompt(self, out: FFormerOutput) -> torch.Tensor:
        """What this side's prefix reads of the F-Former output [B, K, H]."""
        if self.prompt_queries == "raw":
            return out.raw_queries
        if self.prompt_queries == "scaled":
            return self.query_scale * out.queries
        return out.queries

    def forward(
        self, batch: Batch, token_states: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[FFormerOutput, torch.Tensor]:
        """The F-Former output for the batch and every entity's embedding [N, H]."""
        table = self.entities()
        states, states_mask = token_states
        out = self.fformer(
            table[batch["entities"]], batch["entity_mask"], self.tokens(states), states_mask
        )
        return out, table


@register_model
class STEP(PromptedLM):
    name = "step"
    description = "STEP: F-Former + three-stage curriculum + dual prefix prompts (frozen LM)"
    Config = STEPConfig
    config: STEPConfig

    def __init__(self, config: STEPConfig, task: RecTask) -> None:
        super().__init__(config, task)
        self.rec_side = self._prompt_side(self.rec_hidden, self.rec_heads)
        self.rec_prefix = TaskPrefix(config.n_prefix_rec, self.rec_hidden)
        self.rec_projection = PrefixProjection(self.rec_hidden, self.rec_layers, self.rec_heads)
        if config.conversation:
            self.conv_side = self._prompt_side(self.hidden, self.lm_heads)
            self.conv_prefix = TaskPrefix(config.n_prefix_conv, self.hidden)
            self.conv_adapter = nn.Sequential(
                nn.Linear(self.hidden, self.hidden), nn.LayerNorm(self.hidden)
            )
            # LayerNorm outputs have norm sqrt(hidden); the LM's token embeddings, which the
            # prefix sits next to, are far smaller: start the gain at their scale.
            assert self.backbone is not None
            embeddings = self.backbone.lm.get_input_embeddings().weight
            scale = embeddings.norm(dim=1).mean() / math.sqrt(self.hidden)
            self.conv_adapter[1].weight.data.fill_(float(scale))
        # Checkpoints carry where training is: whether P_rec is in the prompt yet, and how
        # many pre-training epochs the weights have had (the selected epoch's count once
        # the trainer restores the best pre-training weights).
        self.register_buffer("rec_prefix_on", torch.zeros((), dtype=torch.bool))
        self.register_buffer("pretrain_epochs", torch.zeros((), dtype=torch.long))
        self._weights = curriculum_weights(config.curriculum, 0)
        self._phase_weight = config.alignment_weight.pretrain

    def _prompt_side(self, hidden: int, heads: int) -> STEPEncoder:
        """The prompt encoder of a backbone of this width (its own entity encoder)."""
        return STEPEncoder(
            self.entity_encoder(hidden), self.config, self.encoder.dim, hidden, heads
        )

    # -- alignment ----------------------------------------------------------------------

    def alignment_loss(
        self,
        out: FFormerOutput,
        temperature: torch.Tensor,
        items: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
        context_group: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_F per sample [B] under the active weights; `items` [B, H] are the targets' KG
        embeddings (None: only the target-free terms); samples of one `context_group` are
        not each other's negatives."""
        weights, settings = self._weights, self.config.curriculum
        total = out.text.new_zeros(out.text.shape[0])
        same = None if context_group is None else context_group[:, None] == context_group
        if weights.contrastive or weights.margin:
            similarity = query_text_similarity(out.queries, out.text, temperature)
            total = total + weights.contrastive * contrastive_loss(
                similarity, settings.label_smoothing, same
            )
            total = total + weights.margin * margin_loss(similarity, settings.margin, same)
        if items is not None and item_ids is not None and (weights.triplet or weights.auxiliary):
            mean = out.queries.mean(dim=1)
            if weights.triplet:
                total = total + weights.triplet * triplet_loss(
                    mean, items, item_ids, settings.margin, settings.exclude_same_item, same
                )
            if weights.auxiliary:
                total = total + weights.auxiliary * auxiliary_loss(mean, items)
        return total

    def _set_weights(self, weights: LossWeights, phase_weight: float) -> dict[str, float]:
        self._weights, self._phase_weight = weights, phase_weight
        logged = {f"weight/{name}": value for name, value in weights.as_dict().items()}
        return {**logged, "weight/alignment": phase_weight}

    # -- recommendation -----------------------------------------------------------------

    def _recommendation(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, FFormerOutput]:
        """LM state at the last context token [B, H], entity table, F-Former output."""
        out, table = self.rec_side(batch, self._token_states(batch))
        prompt = self.rec_side.prompt(out)
        if bool(self.rec_prefix_on) and self.config.n_prefix_rec:
            prompt = torch.cat([self.rec_prefix(prompt.shape[0]), prompt], dim=1)
        return self._user_state(batch, Prefix(self.rec_projection(prompt))), table, out

    def _user(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        user, table, _ = self._recommendation(batch)
        return user, table

    def recommendation_loss(self, batch: Batch) -> torch.Tensor:
        """L_rec + w L_F per sample."""
        user, table, out = self._recommendation(batch)
        targets = batch["target_entities"]
        if self.config.rec_loss == "bce":
            # The positive's term plus the mean over the negatives: a mean over all N
            # candidates would give the one positive a weight of 1/N.
            scores, columns = self.training_scores(user, table, batch)
            one_hot = F.one_hot(columns, scores.shape[1]).to(scores.dtype)
            terms = F.binary_cross_entropy_with_logits(scores, one_hot, reduction="none")
            positive = terms.gather(1, columns[:, None])[:, 0]
            rec = positive + (terms.sum(1) - positive) / (scores.shape[1] - 1)
        else:
            rec = self.recommendation_loss_of(user, table, batch)
        if not self._phase_weight:
            return rec
        alignment = self.alignment_loss(
            out, self.rec_side.fformer.temperature, table[targets], targets, batch["context_group"]
        )
        return rec + self._phase_weight * alignment

    # -- conversation -------------------------------------------------------------------

    def _conversation(self, batch: Batch) -> tuple[Prefix, FFormerOutput]:
        out, _ = self.conv_side(batch, self._token_states(batch))
        queries = self.conv_adapter(self.conv_side.prompt(out))
        embeds = torch.cat([self.conv_prefix(queries.shape[0]), queries], dim=1)
        return Prefix(embeds=embeds), out

    def _conv_prompt(self, batch: Batch) -> Prefix:
        return self._conversation(batch)[0]

    def conversation_loss(self, batch: Batch) -> torch.Tensor:
        """Mean response-token NLL + w L_F (target-free terms) per sample."""
        prefix, out = self._conversation(batch)
        sums, counts = self.response_losses(batch, prefix)
        loss = sums / counts.clamp(min=1)
        if not self._phase_weight:
            return loss
        return loss + self._phase_weight * self.alignment_loss(
            out, self.conv_side.fformer.temperature
        )

    # -- stages -------------------------------------------------------------------------

    def _pretrain_epoch(self, epoch: int) -> dict[str, float]:
        self.pretrain_epochs.fill_(epoch + 1)
        weights = curriculum_weights(self.config.curriculum, epoch)
        return self._set_weights(weights, self.config.alignment_weight.pretrain)

    def _recommend_epoch(self, epoch: int) -> dict[str, float]:
        weights = curriculum_weights(self.config.curriculum, int(self.pretrain_epochs) + epoch)
        return self._set_weights(weights, self.config.alignment_weight.recommend)

    def _converse_epoch(self, epoch: int) -> dict[str, float]:
        # The curriculum is over; a response has no target item to align with.
        final = self.config.curriculum.model_copy(update={"mode": "none"})
        weights = curriculum_weights(final, 0).target_free()
        return self._set_weights(weights, self.config.alignment_weight.converse)

    def _begin_recommendation(self) -> None:
        """The conversation side starts from the pre-trained encoder; P_rec joins."""
        if self.config.conversation:
            start_from(self.conv_side, self.rec_side)
        self.rec_prefix_on.fill_(True)

    def stages(self) -> list[Stage]:
        def params(*modules: nn.Module) -> Callable[[], Any]:
            return lambda: [p for m in modules for p in m.parameters()]

        pretrain = self._pretrain_samples()
        stages = [
            Stage(
                name="pretrain",
                loss=self.recommendation_loss,
                samples=lambda: pretrain,
                collate=self.with_targets,
                parameters=params(self.rec_side, self.rec_projection),
                epoch_begin=self._pretrain_epoch,
                lr_scale=self.head_lr_scale,
            ),
            Stage(
                name="recommend",
                loss=self.recommendation_loss,
                samples=lambda: self.task.train,
                collate=self.recommendation_samples_collate,
                parameters=params(self.rec_side, self.rec_projection, self.rec_prefix),
                begin=self._begin_recommendation,
                epoch_begin=self._recommend_epoch,
                lr_scale=self.head_lr_scale,
            ),
        ]
        if self.config.conversation:
            stages.append(
                self._converse_stage(
                    self.conversation_loss,
                    params(self.conv_side, self.conv_prefix, self.conv_adapter),
                    self._converse_epoch,
                )
            )
        return stages
