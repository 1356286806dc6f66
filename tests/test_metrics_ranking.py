from __future__ import annotations

import math

import pytest
import torch

from convrec.evaluation import (
    ranking_metric_matrix,
    ranking_metrics,
    sequential_metrics,
    target_ranks,
    top_k_items,
)


def test_target_ranks_break_ties_by_lower_index() -> None:
    # index:     0    1    2    3    4
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.5]] * 5)
    targets = torch.tensor([0, 1, 2, 3, 4])
    # item 1: nothing above                                  -> 1
    # item 0: 0.9 above, no tied item with a lower index     -> 1 + 1 + 0 = 2
    # item 2: 0.9 above, item 0 tied with a lower index      -> 1 + 1 + 1 = 3
    # item 4: 0.9 above, items 0 and 2 tied with lower index -> 1 + 1 + 2 = 4
    # item 3: 0.9, 0.5, 0.5, 0.5 above                       -> 1 + 4     = 5
    ranks = target_ranks(scores, targets)
    assert ranks.tolist() == [2, 1, 3, 5, 4]
    assert ranks.dtype == torch.long


def test_target_ranks_constant_scores_give_index_plus_one() -> None:
    scores = torch.zeros(3, 6)
    assert target_ranks(scores, torch.tensor([0, 3, 5])).tolist() == [1, 4, 6]


def test_top_k_items_hand_example() -> None:
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.5], [3.0, 3.0, 3.0, 4.0, -math.inf]])
    assert top_k_items(scores, 4).tolist() == [[1, 0, 2, 4], [3, 0, 1, 2]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_items_agrees_with_target_ranks_under_heavy_ties(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, num_items = 16, 40
    # Four distinct values force many ties in every row; zeros get a random sign so that
    # 0.0 and -0.0 (equal, but different bit patterns) are mixed.
    scores = torch.randint(-1, 3, (batch, num_items), generator=generator).float() * 0.5
    signs = torch.where(torch.rand(batch, num_items, generator=generator) < 0.5, 1.0, -1.0)
    scores = torch.where(scores == 0, scores * signs, scores)
    ordering = top_k_items(scores, num_items)
    for position in range(num_items):
        ranks = target_ranks(scores, ordering[:, position])
        assert torch.equal(ranks, torch.full((batch,), position + 1))
    assert torch.equal(top_k_items(scores, 7), ordering[:, :7])


def test_negative_zero_ties_with_zero() -> None:
    scores = torch.tensor([[0.0, -0.0, 0.0, -0.0]])
    assert top_k_items(scores, 4).tolist() == [[0, 1, 2, 3]]
    assert target_ranks(scores, torch.tensor([3])).tolist() == [4]


def test_unranked_targets_rank_last() -> None:
    # Two items ranked, the rest -inf: an unranked target with a low index is not rank 3.
    scores = torch.tensor([[-math.inf, -math.inf, 2.0, -math.inf, 1.0]]).repeat(5, 1)
    assert target_ranks(scores, torch.arange(5)).tolist() == [5, 5, 1, 5, 2]
    assert top_k_items(scores[:1], 2).tolist() == [[2, 4]]


def test_nan_scores_raise() -> None:
    scores = torch.tensor([[0.1, math.nan, 0.3]])
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(scores, torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        top_k_items(scores, 1)


def test_bad_targets_and_k_raise() -> None:
    scores = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="outside the catalogue"):
        target_ranks(scores, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        target_ranks(scores, torch.tensor([0]))
    with pytest.raises(ValueError, match="k must be"):
        top_k_items(scores, 4)


def test_ranking_metrics_by_hand() -> None:
    ranks = torch.tensor([1, 3, 7, 15])
    metrics = ranking_metrics(ranks, ks=(1, 10, 50))
    # recall@1  = [1,0,0,0] -> 1/4;  recall@10 = [1,1,1,0] -> 3/4;  recall@50 -> 4/4
    assert metrics["recall@1"] == pytest.approx(1 / 4)
    assert metrics["recall@10"] == pytest.approx(3 / 4)
    assert metrics["recall@50"] == pytest.approx(1.0)
    # mrr@1 = [1,0,0,0] -> 1/4;  mrr@10 = (1 + 1/3 + 1/7 + 0) / 4;  mrr@50 adds 1/15
    assert metrics["mrr@1"] == pytest.approx(1 / 4)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 4)
    assert metrics["mrr@50"] == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 15) / 4)
    # ndcg = 1/log2(rank+1): rank 1 -> 1, rank 3 -> 1/2, rank 7 -> 1/3, rank 15 -> 1/4
    # ndcg@1 = 1/4;  ndcg@10 = (1 + 1/2 + 1/3) / 4 = 11/24;  ndcg@50 = (25/12) / 4 = 25/48
    assert metrics["ndcg@1"] == pytest.approx(1 / 4)
    assert metrics["ndcg@10"] == pytest.approx(11 / 24)
    assert metrics["ndcg@50"] == pytest.approx(25 / 48)
    assert len(metrics) == 9


def test_ranking_metrics_is_mean_of_matrix() -> None:
    ranks = torch.randint(1, 100, (257,), generator=torch.Generator().manual_seed(0))
    matrix = ranking_metric_matrix(ranks)
    metrics = ranking_metrics(ranks)
    assert matrix.keys() == metrics.keys()
    for name, values in matrix.items():
        assert values.shape == (257,)
        assert metrics[name] == pytest.approx(values.mean().item())
    assert matrix["ndcg@10"][ranks == 3].unique().tolist() == [0.5]


def test_sequential_metrics_by_hand() -> None:
    ranks = torch.tensor([1, 3, 6, 20])
    metrics = sequential_metrics(ranks)
    # hr@5 = [1,1,0,0] -> 1/2;  hr@10 = [1,1,1,0] -> 3/4
    # ndcg@5 = (1 + 1/2) / 4 = 3/8;  ndcg@10 = (1 + 1/2 + 1/log2(7)) / 4
    assert metrics == pytest.approx(
        {"hr@5": 0.5, "hr@10": 0.75, "ndcg@5": 3 / 8, "ndcg@10": (1.5 + 1 / math.log2(7)) / 4}
    )


def test_ranking_metrics_reject_bad_ranks() -> None:
    with pytest.raises(ValueError, match="no samples"):
        ranking_metrics(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="start at 1"):
        ranking_metrics(torch.tensor([0, 2]))


def test_end_to_end_from_scores() -> None:
    scores = torch.tensor([[0.2, 0.8, 0.8], [0.9, 0.1, 0.5]])
    # row 0: target 2 ties with item 1, which has the lower index -> rank 2
    # row 1: target 0 is the best                                   -> rank 1
    ranks = target_ranks(scores, torch.tensor([2, 0]))
    metrics = ranking_metrics(ranks, ks=(1, 2))
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["mrr@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 2)
