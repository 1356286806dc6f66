"""Count-based baselines: `popularity`, and `repeat`, which shows how much is repetition."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from convrec.data.samples import RecSample
from convrec.data.tasks import RecTask
from convrec.models.base import Batch, ConvRecModel, ModelConfig
from convrec.registry import register_model


class PopularityConfig(ModelConfig):
    pass


def mention_counts(task: RecTask) -> torch.Tensor:
    """How often each catalogue item is mentioned in the training dialogues (any turn)."""
    kg = task.kg
    mentioned = np.fromiter(
        (item for d in task.dataset.dialogues("train") for t in d.turns for item in t.items),
        dtype=np.int64,
    )
    return torch.from_numpy(np.bincount(kg.item_index[mentioned], minlength=kg.num_items)).float()


@register_model
class Popularity(ConvRecModel):
    name = "popularity"
    description = "Ranks items by how often the training dialogues mention them"
    Config = PopularityConfig

    def __init__(self, config: PopularityConfig, task: RecTask) -> None:
        super().__init__(config, task)
        self.register_buffer("counts", torch.zeros(task.num_items))

    def fit(self) -> None:
        self.counts.copy_(mention_counts(self.task))

    def collate(self, samples: Sequence[RecSample]) -> Batch:
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
