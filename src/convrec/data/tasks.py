"""The recommendation task of a run: one dataset, its samples per split and protocol.

Built once per run and shared by the model, the trainer and the evaluation, so that every
part uses the same samples and the protocol is stated in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from convrec.data.kg import KnowledgeGraph
from convrec.data.samples import RecSample, TurnSelection, build_rec_samples
from convrec.data.schema import ConversationDataset

Protocol = Literal["standard", "strict"]
PROTOCOLS: dict[Protocol, str] = {
    "standard": "recommender turns, one sample per target item, repeated items kept",
    "strict": "recommender turns, one sample per target item, targets already mentioned "
    "in the context removed (new_items_only)",
}


@dataclass
class RecTask:
    """Recommendation samples of a conversational dataset.

    `train_turns` selects the training samples ("recommender", or "all" turns as UniCRS's
    pre-training uses); evaluation always uses recommender turns, under the standard and
    the strict protocol.
    """

    dataset: ConversationDataset
    train_turns: TurnSelection = "recommender"
    _eval: dict[tuple[str, Protocol], list[RecSample]] = field(default_factory=dict, repr=False)

    @property
    def kg(self) -> KnowledgeGraph:
        return self.dataset.kg

    @property
    def num_items(self) -> int:
        return self.dataset.kg.num_items

    @cached_property
    def train(self) -> list[RecSample]:
        return build_rec_samples(self.dataset.dialogues("train"), turns=self.train_turns)

    def eval_samples(self, split: str, protocol: Protocol = "standard") -> list[RecSample]:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, not {protocol!r}")
        key = (split, protocol)
        if key not in self._eval:
            self._eval[key] = build_rec_samples(
                self.dataset.dialogues(split), new_items_only=protocol == "strict"
            )
        return self._eval[key]

    def target_indices(self, samples: list[RecSample]) -> np.ndarray:
        """Catalogue positions of the samples' targets."""
        entities = np.fromiter((s.target_item for s in samples), dtype=np.int64, count=len(samples))
        return self.dataset.kg.item_index[entities]
