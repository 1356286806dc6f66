"""What a model is to the rest of convrec: a module, a config, and declared abilities.

A model does not own a training loop. It says how to turn samples into a batch
(`collate`), how to score the catalogue (`recommend`), what it can compute without
gradients (`fit`: counts, caches) and which gradient stages it needs (`stages`); the one
`Trainer` runs those stages for every model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from convrec.data.samples import RecSample
from convrec.data.tasks import RecTask

Batch = dict[str, Any]


def move_to(batch: Batch, device: torch.device) -> Batch:
    """The batch with its tensors on `device` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class ModelConfig(BaseModel):
    """Base of every model's typed config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Stage:
    """One gradient stage of a model's training recipe.

    loss(batch) returns per-sample losses [B]; the trainer reduces them, which keeps the
    gradient of a global batch identical however it is split across processes.
    `select_metric` is the validation metric (higher is better) that early stopping and
    best-weight selection use within the stage.
    """

    name: str
    loss: Callable[[Batch], torch.Tensor]
    samples: Callable[[], Sequence[Any]]
    collate: Callable[[Sequence[Any]], Batch]
    select_metric: str = "recall@10"
    parameters: Callable[[], Iterable[nn.Parameter]] | None = None


class ConvRecModel(nn.Module):
    """Base class of registered models (see module doc)."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]

    def __init__(self, config: ModelConfig, task: RecTask) -> None:
        super().__init__()
        self.config = config
        self.task = task

    @property
    def device(self) -> torch.device:
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def fit(self) -> None:
        """Compute what needs no gradient from the training data (default: nothing).

        Keep the result in buffers, so that checkpoints carry it.
        """

    def stages(self) -> list[Stage]:
        """The gradient stages, in order (default: none; e.g. count-based baselines)."""
        return []

    def collate(self, samples: Sequence[RecSample]) -> Batch:
        raise NotImplementedError

    def recommend(self, batch: Batch) -> torch.Tensor:
        """Scores [B, num_items] over the whole catalogue, higher is better."""
        raise NotImplementedError


class CatalogueRecommender(ConvRecModel):
    """A recommender trained in one stage with softmax cross-entropy over the catalogue.

    Subclasses provide `collate` (with `targets`, the catalogue positions) and
    `recommend`; their config has a `label_smoothing` field.
    """

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the whole catalogue, per sample [B]."""
        scores = self.recommend(batch)
        return F.cross_entropy(
            scores,
            batch["targets"].to(scores.device),
            reduction="none",
            label_smoothing=self.config.label_smoothing,
        )

    def stages(self) -> list[Stage]:
        return [
            Stage(
                name="recommend",
                loss=self.loss,
                samples=lambda: self.task.train,
                collate=self.collate,
            )
        ]
