"""STEP's curriculum: which alignment losses are active, and how strongly, in a given epoch.

STEP aligns the F-Former from easy to hard: first a coarse contrastive alignment of queries and
text, then hard negatives against KG item embeddings (triplet loss), then fine-grained
consolidation (auxiliary cosine loss). The paper describes discrete stages, the released code
ramps the triplet and auxiliary weights up linearly; `CurriculumConfig.mode` chooses, and
"none" gives the "w/o curriculum" ablation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from convrec.settings import Settings


class CurriculumConfig(Settings):
    """Schedule and weights of STEP's four alignment losses."""

    model_config = ConfigDict(validate_assignment=True)

    mode: Literal["stages", "ramp", "none"] = Field(
        "stages",
        description=(
            "stages: the paper's discrete stages (contrastive, + triplet from E1, + auxiliary"
            " from E2); ramp: the released code's linear ramp of triplet and auxiliary weights;"
            " none: every enabled loss at its final weight from the start"
        ),
    )
    boundaries: tuple[int, int] = Field(
        (1, 2), description="stages mode: epochs (E1, E2) where triplet and auxiliary start"
    )
    ramp_epochs: int = Field(
        5, ge=1, description="ramp mode: epochs until triplet and auxiliary reach full weight"
    )
    contrastive: bool = Field(
        True, description="use InfoNCE and margin losses (False: 'w/o contrastive warm-up')"
    )
    triplet: bool = Field(True, description="use the triplet loss against KG item embeddings")
    auxiliary: bool = Field(True, description="use the auxiliary cosine loss")
    contrastive_weight: float = Field(1.0, ge=0, description="weight of the InfoNCE loss")
    margin_weight: float = Field(0.1, ge=0, description="weight w_m of the margin loss")
    triplet_weight: float = Field(0.4, ge=0, description="final weight w_t of the triplet loss")
    auxiliary_weight: float = Field(0.3, ge=0, description="final weight w_a of the auxiliary loss")
    margin: float = Field(0.1, ge=0, description="margin of the margin and triplet losses")
    label_smoothing: float = Field(
        0.1, ge=0, lt=1, description="label smoothing of the InfoNCE cross-entropies"
    )
    exclude_same_item: bool = Field(
        True,
        description=(
            "skip triplet negatives whose target is the sample's own item"
            " (the released code does not: False)"
        ),
    )

    @field_validator("boundaries")
    @classmethod
    def _ordered_boundaries(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, second = value
        if first < 0 or second < 0:
            raise ValueError(f"boundaries must be >= 0, got {value}")
        if first > second:
            raise ValueError(f"boundaries must satisfy E1 <= E2, got {value}")
        return value


@dataclass(frozen=True)
class LossWeights:
    """The weight of each alignment loss in one epoch (0 means: do not compute it)."""

    contrastive: float
    margin: float
    triplet: float
    auxiliary: float

    def as_dict(self) -> dict[str, float]:
        """Weights by loss name, for logging and for weighting a dict of loss terms."""
        return {
            "contrastive": self.contrastive,
            "margin": self.margin,
            "triplet": self.triplet,
            "auxiliary": self.auxiliary,
        }

    def scaled(self, factor: float) -> LossWeights:
        """Every weight times `factor` (e.g. a stage-level multiplier)."""
        return LossWeights(
            contrastive=self.contrastive * factor,
            margin=self.margin * factor,
            triplet=self.triplet * factor,
            auxiliary=self.auxiliary * factor,
        )

    def target_free(self) -> LossWeights:
        """Triplet and auxiliary set to 0: for batches without a target item to align with."""
        return replace(self, triplet=0.0, auxiliary=0.0)


def curriculum_weights(config: CurriculumConfig, epoch: int) -> LossWeights:
    """The weights active during `epoch` (0-based, counted within the curriculum's stage)."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if config.mode == "stages":
        first, second = config.boundaries
        triplet_scale = 1.0 if epoch >= first else 0.0
        auxiliary_scale = 1.0 if epoch >= second else 0.0
    elif config.mode == "ramp":
        triplet_scale = auxiliary_scale = min(1.0, epoch / config.ramp_epochs)
    else:
        triplet_scale = auxiliary_scale = 1.0
    return LossWeights(
        contrastive=config.contrastive_weight if config.contrastive else 0.0,
        margin=config.margin_weight if config.contrastive else 0.0,
        triplet=config.triplet_weight * triplet_scale if config.triplet else 0.0,
        auxiliary=config.auxiliary_weight * auxiliary_scale if config.auxiliary else 0.0,
    )
