"""Validation and test splits carved from the training dialogues, for datasets published
without them.

ReDial is published as `train_data.jsonl` + `test_data.jsonl`; CRSLab, KGSF and UniCRS
all hold validation dialogues out of train (KGSF's validation file: 901 of ReDial's
10,006 training dialogues, 9%; CRSLab: about 10%). `HoldOut` does the same, by dialogue,
only for the splits the files lack, and never touches a split that exists::

    HoldOut(valid_fraction=0.1).apply(dataset)   # train + test -> train, valid, test

Which dialogues are held out depends on `seed` alone (not on the run's seed), so every
model and every seed of a comparison trains, selects and is tested on the same dialogues.
Test is carved first, then validation, from one permutation of the training file; the
held-out dialogues keep their file order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from convrec.data.cache import fingerprint
from convrec.data.schema import ConversationDataset


@dataclass(frozen=True)
class HoldOut:
    """Fractions of the training file's dialogues to hold out as missing splits."""

    valid_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"data.{name} must be in [0, 1), not {value}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"data.valid_fraction + data.test_fraction must leave training dialogues "
                f"({self.valid_fraction} + {self.test_fraction} >= 1)"
            )

    def missing(self, dataset: ConversationDataset) -> dict[str, float]:
        """The splits this hold-out would carve from `dataset`: {split: fraction}."""
        fractions = {"test": self.test_fraction, "valid": self.valid_fraction}
        return {s: f for s, f in fractions.items() if s not in dataset.splits and f > 0}

    def apply(
        self, dataset: ConversationDataset
    ) -> tuple[ConversationDataset, dict[str, dict[str, Any]]]:
        """The dataset with its missing splits carved from train, and what was carved
        ({split: {carved_from, fraction, seed, dialogues}}; empty when nothing was).
        A dataset without a training split is refused, whatever is missing."""
        if "train" not in dataset.splits:  # nothing to train on, nor to hold out of
            raise ValueError(
                f"dataset {dataset.name!r} has no training split (it has "
                f"{', '.join(dataset.splits)}); a run names the file to train on with "
                "data.options.split_files.train=FILE"
            )
        wanted = self.missing(dataset)
        if not wanted:
            return dataset, {}
        train = dataset.splits["train"]
        order = np.random.default_rng(self.seed).permutation(len(train))
        splits = dict(dataset.splits)
        record: dict[str, dict[str, Any]] = {}
        taken = 0
        for split, fraction in wanted.items():  # test first, then valid
            count = round(fraction * len(train))
            chosen = np.sort(order[taken : taken + count])
            taken += count
            splits[split] = tuple(train[i] for i in chosen)
            record[split] = {
                "carved_from": "train",
                "fraction": fraction,
                "seed": self.seed,
                "dialogues": count,
            }
        splits["train"] = tuple(train[i] for i in np.sort(order[taken:]))
        counters = {**dataset.counters, **{s: {} for s in record}}
        carved = dataclasses.replace(dataset, splits=splits, counters=counters)
        return carved, record

    def fingerprint(self, data_fingerprint: str, record: dict[str, Any]) -> str:
        """The data fingerprint of the carved dataset: the files' when nothing was carved,
        else one that also names the hold-out (another seed is other data)."""
        if not record:
            return data_fingerprint
        return fingerprint(
            [], namespace="holdout/v1", options={"data": data_fingerprint, "splits": record}
        )
