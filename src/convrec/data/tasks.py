"""The recommendation task of a run: one dataset, its samples per split and protocol.

Built once per run and shared by the model, the trainer and the evaluation, so that every
part uses the same samples and the protocol is stated in one place. The dataset's kind
decides the task: `RecTask` for dialogues, `SeqTask` for interaction sequences. Both offer
`kind`, `num_items`, `train`, `protocols`, `eval_samples(split, protocol)`,
`target_indices(samples)`, `item_counts()` and `require_samples(splits)`, which is all the
trainer, the evaluation and the count baselines use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Literal, overload

import numpy as np

from convrec.data.kg import KnowledgeGraph
from convrec.data.samples import RecSample, TurnSelection, build_rec_samples
from convrec.data.schema import ConversationDataset, SequentialDataset, TaskKind
from convrec.data.sequences import (
    MIN_EVAL_LENGTH,
    LeaveOneOutSplit,
    NextItemSamples,
    SeqSample,
    TrainPositions,
    leave_one_out,
    training_samples,
)


class EmptySplitError(ValueError):
    """A split a run needs has no samples (an empty file, or reader options that leave none)."""


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

    kind: ClassVar[TaskKind] = "conversational"

    @property
    def protocols(self) -> dict[str, str]:
        """Evaluation protocols by name, each with its description (every table states it)."""
        return dict(PROTOCOLS)

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

    def require_samples(self, splits: Iterable[str]) -> None:
        """Fail now, not after training, when one of `splits` (or one of its protocols)
        has no samples; a split the dataset lacks is a KeyError naming the ones it has."""
        for split in splits:
            dialogues = self.dataset.dialogues(split)
            if split == "train":
                counts = {f"training samples ({self.train_turns} turns)": len(self.train)}
            else:
                counts = {
                    f"samples under the {p} protocol": len(self.eval_samples(split, p))
                    for p in PROTOCOLS
                }
            for what, count in counts.items():
                if not count:
                    raise EmptySplitError(
                        f"dataset {self.dataset.name!r}: the {split} split has no {what} "
                        f"({len(dialogues)} dialogues)"
                    )

    def target_indices(self, samples: list[RecSample]) -> np.ndarray:
        """Catalogue positions of the samples' targets."""
        entities = np.fromiter((s.target_item for s in samples), dtype=np.int64, count=len(samples))
        return self.dataset.kg.item_index[entities]

    def item_counts(self) -> np.ndarray:
        """How often the training dialogues mention each catalogue item (any turn) [num_items]."""
        kg = self.kg
        mentioned = np.fromiter(
            (item for d in self.dataset.dialogues("train") for t in d.turns for item in t.items),
            dtype=np.int64,
        )
        return np.bincount(kg.item_index[mentioned], minlength=kg.num_items)


LEAVE_ONE_OUT = "leave-one-out"


class EpochSamples(Sequence[SeqSample]):
    """A sequential task's training samples for the current epoch.

    The trainer asks a stage for its samples once and calls the stage's `epoch_begin`
    before every epoch (also a resumed one); that hook is `begin_epoch`, which redraws the
    samples for the epoch. Draws depend only on (seed, epoch), so a resumed run sees the
    samples the uninterrupted run saw, and the length never changes between epochs.
    """

    def __init__(self, draw: Callable[[int], NextItemSamples]) -> None:
        self._draw = draw
        self.epoch = 0
        self.samples = draw(0)

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        if epoch != self.epoch:
            self.samples, self.epoch = self._draw(epoch), epoch
        return {}

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, index: int) -> SeqSample: ...

    @overload
    def __getitem__(self, index: slice) -> NextItemSamples: ...

    def __getitem__(self, index: int | slice) -> SeqSample | NextItemSamples:
        return self.samples[index]


@dataclass
class SeqTask:
    """Next-item samples of a sequential dataset under leave-one-out.

    The last item of every user with at least 3 interactions is the test target, the one
    before it the validation target (`convrec.data.sequences.leave_one_out`); training
    targets lie at earlier positions, chosen by `train_positions` (TRAIN_POSITIONS). Every
    history is the last `max_items` items before its target. Item ids are catalogue
    positions: the catalogue is every item of the dataset, linked to the KG or not.
    """

    dataset: SequentialDataset
    max_items: int = 50
    train_positions: TrainPositions = "random"
    window_stride: int | None = None  # "windows": positions between targets (max_items)
    seed: int = 0

    kind: ClassVar[TaskKind] = "sequential"

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError(f"max_items must be positive, not {self.max_items}")

    @property
    def kg(self) -> KnowledgeGraph:
        return self.dataset.kg

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    @cached_property
    def split(self) -> LeaveOneOutSplit:
        return leave_one_out(self.dataset)

    @property
    def protocols(self) -> dict[str, str]:
        return {
            LEAVE_ONE_OUT: "leave-one-out: one sample per user with at least 3 interactions, "
            "target = the user's last item (validation: the one before), history = the last "
            f"{self.max_items} items before it; history items are not removed from the ranking"
        }

    def train_samples(self, epoch: int) -> NextItemSamples:
        """The training samples of `epoch` (only "random" positions change between epochs)."""
        rng = np.random.default_rng([self.seed % 2**63, epoch])
        drawn = training_samples(
            self.split.train,
            self.train_positions,
            rng,
            window=self.max_items,
            stride=self.window_stride,
        )
        return drawn.last(self.max_items)

    @cached_property
    def train(self) -> EpochSamples:
        return EpochSamples(self.train_samples)

    def eval_samples(self, split: str, protocol: str = LEAVE_ONE_OUT) -> NextItemSamples:
        if protocol != LEAVE_ONE_OUT:
            raise ValueError(f"a sequential task has protocol {LEAVE_ONE_OUT!r}, not {protocol!r}")
        if split not in ("valid", "test"):
            raise KeyError(f"no evaluation split {split!r}; sequential tasks have valid, test")
        samples: NextItemSamples = getattr(self.split, split)
        return samples.last(self.max_items)

    def require_samples(self, splits: Iterable[str]) -> None:
        """Fail now, not after training, when one of `splits` has no samples."""
        for split in splits:
            if split == "train":
                count = len(self.train)
                what = "training samples"
            else:
                count = len(self.eval_samples(split))
                what = f"samples (only users with {MIN_EVAL_LENGTH}+ interactions are evaluated)"
            if not count:
                raise EmptySplitError(
                    f"dataset {self.dataset.name!r}: the {split} split has no {what}; "
                    f"{self.dataset.num_users} users, {self.dataset.num_interactions} interactions"
                )

    def target_indices(self, samples: Sequence[SeqSample]) -> np.ndarray:
        """Catalogue positions (= item ids) of the samples' targets."""
        return np.fromiter((s.target for s in samples), dtype=np.int64, count=len(samples))

    def item_counts(self) -> np.ndarray:
        """Training interactions per item [num_items] (validation and test targets excluded)."""
        _, items = self.split.train.csr()
        return np.bincount(items, minlength=self.num_items)


Task = RecTask | SeqTask
