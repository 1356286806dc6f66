"""Leave-one-out splits of per-user interaction sequences (sequential recommendation).

For a user whose time-sorted sequence is `s` (at least 3 items)::

    train:  s[:-2]
    valid:  history s[:-2], target s[-2]
    test:   history s[:-1], target s[-1]     (the history includes the validation item)

Users with fewer than 3 interactions are not evaluated: their whole sequence goes to
training (as SASRec and RecBole's leave-one-out do), since a 1- or 2-item sequence cannot
give both a non-empty validation history and a test target.

Histories are views into the dataset's `item_seq` (a start and an end per user), so a
split costs a few index arrays, never a copy of the interactions.

Next-item samples (`NextItemSamples`, one `SeqSample` per row: user, history, target) are
the same few arrays: a history is `item_seq[start:end]`, and a training target is the item
right after it. `training_samples` places training targets inside the training sequences,
as the methods' code bases do (see TRAIN_POSITIONS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from convrec.data.schema import SequentialDataset

MIN_EVAL_LENGTH = 3

TrainPositions = Literal["random", "all", "last", "windows"]
TRAIN_POSITIONS: dict[TrainPositions, str] = {
    "random": "one random target position per user per epoch (KP4SR's code)",
    "all": "every position of the training sequence that has an earlier item",
    "last": "the last training item only; a model that learns from every position of the "
    "history (SASRec) then trains on the last max_items + 1 items of the sequence",
    "windows": "the last training item and every max_items-th position before it (every "
    "window_stride-th, when set), so that a model that learns from every position of a "
    "history (SASRec) trains on each item of a long sequence once: consecutive samples' "
    "windows tile the sequence (or overlap, with a shorter stride)",
}


@dataclass(frozen=True, eq=False)
class UserSequences:
    """Ragged per-user sequences: user `users[i]` has `items[starts[i]:ends[i]]`."""

    users: np.ndarray  # int64 [n] user ids
    starts: np.ndarray  # int64 [n]
    ends: np.ndarray  # int64 [n]
    items: np.ndarray  # the flat array the slices index (shared with the dataset)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def select(self, rows: np.ndarray | slice) -> UserSequences:
        """The chosen rows (index arrays only; the items stay shared)."""
        return UserSequences(self.users[rows], self.starts[rows], self.ends[rows], self.items)

    def last(self, max_items: int) -> UserSequences:
        """Every row cut to its last `max_items` items."""
        if max_items < 1:
            raise ValueError(f"max_items must be positive, not {max_items}")
        starts = np.maximum(self.starts, self.ends - max_items)
        return UserSequences(self.users, starts, self.ends, self.items)

    def sequence(self, i: int) -> np.ndarray:
        """Row i's items, oldest first (a view)."""
        return self.items[self.starts[i] : self.ends[i]]

    def sequences(self) -> list[np.ndarray]:
        """Every row's items as a list of views."""
        bounds = zip(self.starts.tolist(), self.ends.tolist(), strict=True)
        return [self.items[a:b] for a, b in bounds]

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """Compact (offsets [n + 1], flat items) copy: row i is flat[offsets[i]:offsets[i+1]]."""
        lengths = self.lengths
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        index = np.arange(offsets[-1]) + np.repeat(self.starts - offsets[:-1], lengths)
        return offsets, self.items[index]

    def padded(self, max_len: int, *, pad: int = -1) -> np.ndarray:
        """The last `max_len` items of each row as int64 [n, max_len], left-padded with `pad`.

        The default -1 is never an item id; a model that reserves 0 for padding can use
        `padded(max_len) + 1` (items shift to 1..num_items, padding becomes 0).
        """
        if max_len < 1:
            raise ValueError(f"max_len must be positive, not {max_len}")
        # Column j of row i holds position ends[i] - max_len + j, when that is in the row.
        positions = self.ends[:, None] - max_len + np.arange(max_len)
        inside = positions >= self.starts[:, None]
        values = self.items[np.where(inside, positions, 0)] if len(self.items) else positions
        return np.where(inside, values, pad).astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False, slots=True)
class SeqSample:
    """One next-item sample: a user, the items before the target (oldest first), the target."""

    user: int
    history: np.ndarray  # int64 item ids, a view into the dataset's item_seq
    target: int


@dataclass(frozen=True, eq=False)
class NextItemSamples(Sequence[SeqSample]):
    """Next-item samples stored as columns: row i is (users[i], history row i, targets[i]).

    Indexing by position gives a `SeqSample`; a slice (or `select` with an index array)
    gives another `NextItemSamples`, without copying the interactions.
    """

    history: UserSequences
    targets: np.ndarray  # int64 [n] item ids

    @property
    def users(self) -> np.ndarray:
        return self.history.users

    def __len__(self) -> int:
        return len(self.targets)

    @overload
    def __getitem__(self, index: int) -> SeqSample: ...

    @overload
    def __getitem__(self, index: slice) -> NextItemSamples: ...

    def __getitem__(self, index: int | slice) -> SeqSample | NextItemSamples:
        if isinstance(index, slice):
            return self.select(index)
        h = self.history
        return SeqSample(
            int(h.users[index]), h.items[h.starts[index] : h.ends[index]], int(self.targets[index])
        )

    def select(self, rows: np.ndarray | slice) -> NextItemSamples:
        return NextItemSamples(self.history.select(rows), self.targets[rows])

    def last(self, max_items: int) -> NextItemSamples:
        """The same samples with each history cut to its last `max_items` items."""
        return NextItemSamples(self.history.last(max_items), self.targets)


@dataclass(frozen=True, eq=False)
class LeaveOneOutSplit:
    """Train sequences and validation / test targets (see the module doc)."""

    train: UserSequences
    valid: NextItemSamples
    test: NextItemSamples


def leave_one_out(dataset: SequentialDataset) -> LeaveOneOutSplit:
    """Hold out each user's last item for test and the one before it for validation."""
    offsets = np.asarray(dataset.offsets, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    lengths = ends - starts
    items = np.asarray(dataset.item_seq, dtype=np.int64)

    evaluated = lengths >= MIN_EVAL_LENGTH
    users = np.flatnonzero(evaluated).astype(np.int64)
    first, last = starts[evaluated], ends[evaluated]  # last is one past the test target

    train_ends = np.where(evaluated, ends - 2, ends)
    trained = np.flatnonzero(train_ends > starts).astype(np.int64)
    return LeaveOneOutSplit(
        train=UserSequences(trained, starts[trained], train_ends[trained], items),
        valid=NextItemSamples(UserSequences(users, first, last - 2, items), items[last - 2]),
        test=NextItemSamples(UserSequences(users, first, last - 1, items), items[last - 1]),
    )


def training_samples(
    train: UserSequences,
    positions: TrainPositions,
    rng: np.random.Generator | None = None,
    *,
    window: int | None = None,
    stride: int | None = None,
) -> NextItemSamples:
    """Samples with targets inside the training sequences; history = all earlier items.

    A target always has at least one earlier item, so a row of length 1 gives no sample.
    Rows come in the order of `train` ("all": by row, then position; "windows": by row,
    then from the last position backwards in steps of `stride`, by default `window`); `rng`
    draws the "random" positions (one per row with at least two items).
    """
    if positions not in TRAIN_POSITIONS:
        raise ValueError(f"positions must be one of {list(TRAIN_POSITIONS)}, not {positions!r}")
    lengths = train.lengths
    if positions == "windows" and (window is None or window < 1):
        raise ValueError(f"windows positions need a positive window, not {window!r}")
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be positive, not {stride}")
    if positions in ("all", "windows"):
        step = 1 if positions == "all" else (stride or window)
        per_row = -(-np.maximum(lengths - 1, 0) // step)  # ceil((length - 1) / step)
        rows = np.repeat(np.arange(len(train)), per_row)
        block_starts = np.cumsum(per_row) - per_row
        rank = np.arange(len(rows)) - np.repeat(block_starts, per_row)  # 0.. within a row
        # all: positions 1, 2, ..., length - 1; windows: length - 1, length - 1 - step, ...
        offsets = rank + 1 if positions == "all" else lengths[rows] - 1 - step * rank
    else:
        rows = np.flatnonzero(lengths >= 2)
        if positions == "last":
            offsets = lengths[rows] - 1
        else:
            if rng is None:
                raise ValueError("random training positions need a random generator")
            offsets = rng.integers(1, lengths[rows])  # in [1, length - 1]
    ends = train.starts[rows] + offsets  # the target's position; the history ends before it
    history = UserSequences(train.users[rows], train.starts[rows], ends, train.items)
    return NextItemSamples(history, train.items[ends])


def left_padded(histories: Sequence[np.ndarray], max_len: int, *, pad: int = -1) -> np.ndarray:
    """The last `max_len` items of each history as int64 [n, width], left-padded with `pad`.

    width = the longest kept history (at least 1), so a batch of short histories stays
    narrow; the latest item of every row is in the last column.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be positive, not {max_len}")
    kept = [h[-max_len:] for h in histories]
    width = max([1, *map(len, kept)])
    out = np.full((len(kept), width), pad, dtype=np.int64)
    for row, items in enumerate(kept):  # one slice copy per row, not per item
        out[row, width - len(items) :] = items
    return out


__all__ = [
    "TRAIN_POSITIONS",
    "LeaveOneOutSplit",
    "NextItemSamples",
    "SeqSample",
    "TrainPositions",
    "UserSequences",
    "leave_one_out",
    "left_padded",
    "training_samples",
]
