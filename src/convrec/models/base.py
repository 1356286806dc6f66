"""What a model is to the rest of convrec: a module, a config, and declared abilities.

A model does not own a training loop. It says how to turn samples into a batch
(`collate`), how to score the catalogue (`recommend`), optionally how to answer in words
(`respond`), what it can compute without gradients (`fit`: counts, caches) and which
gradient stages it needs (`stages`); the one `Trainer` runs those stages for every model.

`collate` reads only the context of a sample (turns and entities), never its target, so
the same call serves training, evaluation and a live chat; training stages add the
targets they need (`with_targets`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict
from torch import nn

from convrec.data.samples import ConvSample, RecSample
from convrec.data.schema import TaskKind
from convrec.data.tasks import RecTask
from convrec.settings import Settings

Batch = dict[str, Any]


def move_to(batch: Batch, device: torch.device) -> Batch:
    """The batch with its tensors on `device` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class ModelConfig(Settings):
    """Base of every model's typed config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(validate_assignment=True)


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
    # The stage's own validation (e.g. response loss); None: the run's recommendation metrics.
    validate: Callable[[], dict[str, float]] | None = None
    higher_is_better: bool = True
    # Runs once when the stage starts fresh (not when resuming inside it): e.g. copy weights.
    begin: Callable[[], None] | None = None
    # Runs before every epoch (also a resumed one) with the 0-based epoch of the stage; what
    # it returns (e.g. the loss weights a curriculum makes active) goes into that epoch's
    # history row.
    epoch_begin: Callable[[int], dict[str, float]] | None = None
    # A factor on the stage's learning rate per parameter (None: 1 for all), e.g. for a
    # score bias that starts at zero and must move further than a prompt in few steps.
    lr_scale: Callable[[nn.Parameter], float] | None = None


@dataclass(frozen=True)
class Reply:
    """A model's answer to one context: the response text and the items it recommends.

    `items` are KG entity ids of catalogue items, best first: for a model that fills
    slots from its recommender, the items in the order the slots were filled.
    `slotted` is the text before slot filling (what BLEU and item ratio are computed on
    for slot-based models); `candidates` holds, per item the response emits, the ranked
    entity ids it was chosen from (the in-response metrics' C_s).
    """

    text: str
    items: tuple[int, ...] = ()
    slotted: str | None = None
    candidates: tuple[tuple[int, ...], ...] = ()


class ConvRecModel(nn.Module):
    """Base class of registered models (see module doc)."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    # The kinds of dataset the model trains and evaluates on (registry.check_task_kind).
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("conversational",)
    # Stages a configuration may switch off (e.g. STEP's `converse` in a recommendation-only
    # run): settings for them (`train.stages.<name>`) are accepted and unused.
    optional_stages: ClassVar[tuple[str, ...]] = ()

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

    @classmethod
    def has_stages(cls) -> bool:
        """Whether the model trains by gradient (and so selects epochs on validation)."""
        return cls.stages is not ConvRecModel.stages

    def collate(self, samples: Sequence[RecSample | ConvSample]) -> Batch:
        """A batch from the samples' contexts (turns, entities); targets are not read."""
        raise NotImplementedError

    def with_targets(self, samples: Sequence[RecSample]) -> Batch:
        """`collate` plus `targets`, the catalogue positions of the samples' target items."""
        return {
            **self.collate(samples),
            "targets": torch.from_numpy(self.task.target_indices(list(samples))),
        }

    def recommend(self, batch: Batch) -> torch.Tensor:
        """Scores [B, num_items] over the whole catalogue, higher is better."""
        raise NotImplementedError

    def without_items(
        self, scores: torch.Tensor, exclude: Sequence[Collection[int]]
    ) -> torch.Tensor:
        """`scores` [B, num_items] with each row's `exclude` (KG entity ids) set to -inf."""
        ids = np.array([i for row in exclude for i in row], dtype=np.int64)
        rows = np.repeat(np.arange(len(exclude)), [len(row) for row in exclude])
        columns = self.task.kg.item_index[ids]
        keep = columns >= 0  # entities that are not items have no score to remove
        if not keep.any():
            return scores
        scores = scores.clone()
        index = torch.from_numpy(rows[keep]), torch.from_numpy(columns[keep])
        scores[index[0].to(scores.device), index[1].to(scores.device)] = float("-inf")
        return scores

    can_respond: ClassVar[bool] = False

    def respond(
        self,
        samples: Sequence[ConvSample],
        *,
        exclude: Sequence[Collection[int]] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> list[Reply]:
        """Generate the next recommender turn for each sample's context (`can_respond`).

        `exclude` holds, per sample, KG entity ids the reply must not recommend. With one
        sample, `on_text` receives the reply text piece by piece as it is generated (the
        pieces joined are the reply's text, possibly up to surrounding whitespace).
        """
        raise NotImplementedError(f"model {self.name!r} does not generate responses")


class CatalogueRecommender(ConvRecModel):
    """A recommender trained in one stage with softmax cross-entropy over the catalogue.

    Subclasses provide `collate` and `recommend`; their config has a `label_smoothing`
    field.
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
                collate=self.with_targets,
            )
        ]


def keep_out_of_checkpoints(
    owner: nn.Module, attribute: str, on_load: Callable[[], None] | None = None
) -> None:
    """Leave the frozen submodule `owner.<attribute>` out of `owner`'s state dict.

    Frozen backbones (a pre-trained LM, a sentence encoder) are the files their config
    names; checkpoints hold only what trains. Loading a checkpoint without their weights
    keeps the current ones; a checkpoint that has them still loads them, and then
    `on_load` runs (e.g. to drop values computed with the old weights).
    """
    prefix = f"{attribute}."

    def drop(module: nn.Module, state_dict: dict[str, Any], outer: str, _meta: Any) -> None:
        for key in [k for k in state_dict if k.startswith(outer + prefix)]:
            del state_dict[key]

    def fill(module: nn.Module, state_dict: dict[str, Any], outer: str, *_args: Any) -> None:
        own = module.state_dict(prefix=outer)
        if on_load is not None and any(key in state_dict for key in own):
            on_load()
        for key, value in own.items():
            state_dict.setdefault(key, value)

    owner.register_state_dict_post_hook(drop)
    getattr(owner, attribute).register_load_state_dict_pre_hook(fill)
