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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convrec.data.schema import SequentialDataset

MIN_EVAL_LENGTH = 3


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


@dataclass(frozen=True, eq=False)
class EvalTargets:
    """One evaluation split: for each row, a user, the items before the target, the target."""

    history: UserSequences
    targets: np.ndarray  # int64 [n] item ids

    @property
    def users(self) -> np.ndarray:
        return self.history.users

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True, eq=False)
class LeaveOneOutSplit:
    """Train sequences and validation / test targets (see the module doc)."""

    train: UserSequences
    valid: EvalTargets
    test: EvalTargets


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
        valid=EvalTargets(UserSequences(users, first, last - 2, items), items[last - 2]),
        test=EvalTargets(UserSequences(users, first, last - 1, items), items[last - 1]),
    )


__all__ = ["EvalTargets", "LeaveOneOutSplit", "UserSequences", "leave_one_out"]
