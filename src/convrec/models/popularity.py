"""Count-based baselines: `popularity`, and `repeat`, which shows how much is repetition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from convrec.data.samples import RecSample
from convrec.data.schema import TaskKind
from convrec.data.tasks import Task
from convrec.models.base import Batch, ConvRecModel, ModelConfig
from convrec.registry import register_model


class PopularityConfig(ModelConfig):
    pass


@register_model
class Popularity(ConvRecModel):
    name = "popularity"
    description = "Ranks items by training counts (dialogue mentions, or interactions)"
    Config = PopularityConfig
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("conversational", "sequential")

    def __init__(self, config: PopularityConfig, task: Task) -> None:
        super().__init__(config, task)  # type: ignore[arg-type]
        self.register_buffer("counts", torch.zeros(task.num_items))

    def fit(self) -> None:
        self.counts.copy_(torch.from_numpy(self.task.item_counts()))

    def collate(self, samples: Sequence[Any]) -> Batch:
        return {"size": len(samples)}

    def recommend(self, batch: Batch) -> torch.Tensor:
        return self.counts.expand(batch["size"], -1).clone()


class RepeatConfig(ModelConfig):
    pass


@register_model
class Repeat(Popularity):
    name = "repeat"
    description = (
        "Ranks the items already mentioned in the context first (most recent first), "
        "then the rest by popularity"
    )
    Config = RepeatConfig
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("conversational",)  # reads dialogue turns

    def collate(self, samples: Sequence[RecSample]) -> Batch:
        """(row, item, recency) for every item mentioned in a sample's context."""
        item_index = self.task.kg.item_index
        rows, items, recency = [], [], []
        for row, sample in enumerate(samples):
            seen: set[int] = set()
            # latest turn first; within a turn, the first-named item first
            for age, turn in enumerate(reversed(sample.context_turns)):
                for item in (*turn.items, *turn.entities):
                    index = int(item_index[item])
                    if index >= 0 and index not in seen:
                        seen.add(index)
                        rows.append(row)
                        items.append(index)
                        recency.append(-age - len(seen) * 1e-3)
        return {
            "size": len(samples),
            "rows": torch.tensor(rows, dtype=torch.long),
            "items": torch.tensor(items, dtype=torch.long),
            "recency": torch.tensor(recency, dtype=torch.float),
        }

    def recommend(self, batch: Batch) -> torch.Tensor:
        # Popularity is squashed into [0, 1); mentioned items score above every other item.
        counts = self.counts / (self.counts.max() + 1.0)
        scores = counts.expand(batch["size"], -1).clone()
        scores[batch["rows"], batch["items"]] = 1e3 + batch["recency"]
        return scores
