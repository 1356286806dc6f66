"""The sequential task on a hand-made dataset: samples, positions, and HR/NDCG by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convrec.config import resolve_config
from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import SequentialDataset
from convrec.data.sequences import leave_one_out, left_padded, training_samples
from convrec.data.tasks import LEAVE_ONE_OUT, SeqTask
from convrec.evaluation.recommendation import METRIC_MATRIX, rank_targets, validation_metrics
from convrec.evaluation.report import markdown_table, recommendation_result
from convrec.models.popularity import Popularity, PopularityConfig
from convrec.training.run import make_task

# user 0 is evaluated with a long history; user 1 with a 1-item training sequence (no
# training sample); users 2 and 3 have fewer than 3 items, so they only train; item 6 is
# never seen.
SEQUENCES = [[0, 1, 2, 3, 4, 5], [2, 3, 1], [4, 0], [5]]
NUM_ITEMS = 7


def sequential_dataset(sequences: list[list[int]], num_items: int) -> SequentialDataset:
    flat = np.array([item for s in sequences for item in s], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    return SequentialDataset(
        name="tiny",
        kg=KnowledgeGraph.from_named_triples([], items=[]),
        users=tuple(f"u{u}" for u in range(len(sequences))),
        items=tuple(f"i{i}" for i in range(num_items)),
        item_titles=tuple(f"Item {i}" for i in range(num_items)),
        item_entity=np.full(num_items, -1, dtype=np.int64),
        offsets=offsets,
        item_seq=flat,
        timestamps=np.arange(len(flat), dtype=np.float64),
    )


def task(**options) -> SeqTask:
    return SeqTask(sequential_dataset(SEQUENCES, NUM_ITEMS), **options)


def as_lists(samples) -> list[tuple[int, list[int], int]]:
    return [(s.user, s.history.tolist(), s.target) for s in samples]


def test_all_positions_with_histories_and_truncation() -> None:
    # training sequences: u0 [0, 1, 2, 3], u1 [2], u2 [4, 0], u3 [5]
    assert as_lists(task(train_positions="all").train) == [
        (0, [0], 1),
        (0, [0, 1], 2),
        (0, [0, 1, 2], 3),
        (2, [4], 0),
    ]
    assert as_lists(task(train_positions="all", max_items=2).train) == [
        (0, [0], 1),
        (0, [0, 1], 2),
        (0, [1, 2], 3),
        (2, [4], 0),
    ]


def test_last_position_is_the_whole_training_sequence() -> None:
    assert as_lists(task(train_positions="last").train) == [(0, [0, 1, 2], 3), (2, [4], 0)]


def random_training_sequences(seed: int, lengths: tuple[int, ...]):
    """Training sequences of users with these lengths, and every position a target can hold
    (each training item after its row's first), as indices into the flat items."""
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, 9, size=n).tolist() for n in lengths]
    train = leave_one_out(sequential_dataset(sequences, 9)).train
    every = np.concatenate(
        [np.arange(a + 1, b) for a, b in zip(train.starts, train.ends, strict=True)]
    )
    return train, every


def test_windows_tile_each_training_sequence() -> None:
    # u0's training sequence [0, 1, 2, 3]: targets 3 and 1, every max_items-th from the end
    assert as_lists(task(train_positions="windows", max_items=2).train) == [
        (0, [1, 2], 3),
        (0, [0], 1),
        (2, [4], 0),
    ]
    # What SASRec trains on: each position of the window (history[-max_items:] + [target])
    # predicts the next item, so every training item after a user's first is predicted
    # exactly once over the samples.
    train, every = random_training_sequences(0, (1, 2, 3, 7, 12, 13, 30))
    for window in (1, 3, 5, 50):
        history = training_samples(train, "windows", window=window).history
        first = np.maximum(history.starts, history.ends - window)  # the window's first item
        predicted = np.concatenate(
            [np.arange(a + 1, b + 1) for a, b in zip(first, history.ends, strict=True)]
        )
        assert np.array_equal(np.sort(predicted), every), window
    with pytest.raises(ValueError, match="positive window"):
        training_samples(train, "windows")


def test_overlapping_windows_predict_each_item_once_at_their_last_stride_positions() -> None:
    # u0's training sequence [0, 1, 2, 3] with stride 1: one window per target, as "all"
    assert as_lists(task(train_positions="windows", max_items=2, window_stride=1).train) == [
        (0, [1, 2], 3),
        (0, [0, 1], 2),
        (0, [0], 1),
        (2, [4], 0),
    ]
    train, every = random_training_sequences(1, (2, 3, 9, 14, 40))
    window = 6
    for stride in (1, 2, 4, 6):
        predicted = []
        history = training_samples(train, "windows", window=window, stride=stride).history
        first = np.maximum(history.starts, history.ends - window)  # the window's first item
        for row_start, a, b in zip(history.starts, first, history.ends, strict=True):
            # the window's last `stride` positions: those after the previous window's target
            trained = np.arange(max(a + 1, b + 1 - stride), b + 1)
            # each sees window - stride earlier items at least, or all of its row's
            assert (trained - a >= np.minimum(window - stride, trained - row_start)).all()
            predicted.append(trained)
        assert np.array_equal(np.sort(np.concatenate(predicted)), every), stride
    with pytest.raises(ValueError, match="stride must be positive"):
        training_samples(train, "windows", window=window, stride=0)


def test_the_configured_stride_reaches_the_task() -> None:
    config = resolve_config("sasrec", "movielens-100k")  # windows, stride 10 by default
    seq_task = make_task(sequential_dataset(SEQUENCES, NUM_ITEMS), config)
    assert seq_task.train_positions == "windows" and seq_task.window_stride == 10


def test_random_positions_one_per_user_deterministic_per_seed_and_epoch() -> None:
    def draw(seed: int, epoch: int) -> list[tuple[int, list[int], int]]:
        return as_lists(task(train_positions="random", seed=seed).train_samples(epoch))

    every = set(map(repr, as_lists(task(train_positions="all").train)))
    for epoch in range(8):
        samples = draw(0, epoch)
        assert [user for user, _, _ in samples] == [0, 2]  # one per user with a target
        assert all(repr(s) in every for s in samples)  # a real position, its full history
        assert samples == draw(0, epoch)
    assert len({repr(draw(0, epoch)) for epoch in range(8)}) > 1  # epochs differ
    assert len({repr(draw(seed, 0)) for seed in range(8)}) > 1  # seeds differ


def test_epoch_samples_follow_the_trainers_epoch_hook() -> None:
    seq_task = task(train_positions="random", seed=3)
    train = seq_task.train
    assert as_lists(train) == as_lists(seq_task.train_samples(0))
    for epoch in (1, 5, 2):
        assert train.begin_epoch(epoch) == {}
        assert len(train) == 2
        assert as_lists(train) == as_lists(seq_task.train_samples(epoch))


def test_validation_and_test_samples_are_leave_one_out() -> None:
    seq_task = task()
    assert as_lists(seq_task.eval_samples("valid")) == [(0, [0, 1, 2, 3], 4), (1, [2], 3)]
    assert as_lists(seq_task.eval_samples("test")) == [(0, [0, 1, 2, 3, 4], 5), (1, [2, 3], 1)]
    short = task(max_items=2)
    assert as_lists(short.eval_samples("test")) == [(0, [3, 4], 5), (1, [2, 3], 1)]
    assert "last 2 items" in short.protocols[LEAVE_ONE_OUT]
    assert seq_task.target_indices(seq_task.eval_samples("test")).tolist() == [5, 1]
    with pytest.raises(ValueError, match="protocol"):
        seq_task.eval_samples("test", "strict")


def test_item_counts_are_training_interactions_only() -> None:
    # training items: u0 0 1 2 3, u1 2, u2 4 0, u3 5 (validation and test targets excluded)
    assert task().item_counts().tolist() == [2, 1, 2, 1, 1, 1, 0]


def test_left_padded_keeps_the_latest_items() -> None:
    rows = [np.array([1, 2, 3]), np.array([7]), np.array([], dtype=np.int64)]
    assert left_padded(rows, 2).tolist() == [[2, 3], [-1, 7], [-1, -1]]
    assert left_padded(rows, 5, pad=0).tolist() == [[1, 2, 3], [0, 0, 7], [0, 0, 0]]
    assert left_padded([np.array([], dtype=np.int64)], 4).tolist() == [[-1]]


# -- HR / NDCG with full ranking, by hand ---------------------------------------------------


@pytest.fixture()
def popularity() -> tuple[SeqTask, Popularity]:
    seq_task = task()
    model = Popularity(PopularityConfig(), seq_task)
    model.fit()
    return seq_task, model


def test_popularity_ranks_by_training_counts_with_ties_to_the_lower_item(popularity) -> None:
    seq_task, model = popularity
    # counts [2, 1, 2, 1, 1, 1, 0] -> ranking 0, 2, 1, 3, 4, 5, 6
    # test: u0 target 5 -> rank 6; u1 target 1 -> rank 3, although its history items 2 and
    # 3 rank above it: history items are not removed from the ranking
    ranks = rank_targets(model, seq_task, seq_task.eval_samples("test"))
    assert ranks.tolist() == [6, 3]
    metrics = {k: v.mean().item() for k, v in METRIC_MATRIX["sequential"](ranks).items()}
    assert metrics == pytest.approx(
        {
            "hr@5": 0.5,
            "hr@10": 1.0,
            "hr@20": 1.0,
            "ndcg@5": 0.5 * (1 / math.log2(4)),
            "ndcg@10": 0.5 * (1 / math.log2(7) + 1 / math.log2(4)),
            "ndcg@20": 0.5 * (1 / math.log2(7) + 1 / math.log2(4)),
        }
    )
    # validation: u0 target 4 -> rank 5; u1 target 3 -> rank 4
    assert validation_metrics(model, seq_task) == pytest.approx(
        {
            "hr@5": 1.0,
            "hr@10": 1.0,
            "hr@20": 1.0,
            "ndcg@5": 0.5 * (1 / math.log2(6) + 1 / math.log2(5)),
            "ndcg@10": 0.5 * (1 / math.log2(6) + 1 / math.log2(5)),
            "ndcg@20": 0.5 * (1 / math.log2(6) + 1 / math.log2(5)),
        }
    )


def test_sequential_results_make_an_hr_ndcg_table(popularity) -> None:
    seq_task, model = popularity
    ranks = rank_targets(model, seq_task, seq_task.eval_samples("test"))
    result = recommendation_result(
        ranks,
        model="popularity",
        dataset="tiny",
        split="test",
        protocol=LEAVE_ONE_OUT,
        protocol_description=seq_task.protocols[LEAVE_ONE_OUT],
        seed=0,
        metric_matrix=METRIC_MATRIX["sequential"],
    )
    assert result.metrics["hr@5"].mean == 0.5
    assert 0.0 <= result.metrics["hr@5"].low <= result.metrics["hr@5"].high <= 1.0
    table = markdown_table([result])
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert header == "| model | seed | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 |"
    assert "protocol `leave-one-out`" in table and "not removed from the ranking" in table
