"""Full-catalogue ranking: target ranks, top-k lists and Recall/MRR/NDCG (one target per sample).

Tie rule, used everywhere in this module: among items with equal scores, the item with the
lower index ranks ahead. A constant-score model therefore gets the rank of its target's
index rather than an optimistic rank 1, and `top_k_items` and `target_ranks` agree exactly
on every item with a finite score, so a metric computed from either gives the same number.

An item scored -inf is one the model did not rank (KP4SR's beam search returns a few
items and scores the rest -inf): as a target it ranks last, N, a miss at every cut-off
below the catalogue size. The tie rule would otherwise rank an unranked target with a low
index right after the returned items, a hit at a cut-off past the returned list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check_scores(scores: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape [batch, items], got {tuple(scores.shape)}")
    if scores.is_floating_point() and torch.isnan(scores).any():
        # NaN compares false with everything, so it would silently rank last (or first).
        raise ValueError("scores contain NaN")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target among all items of its row.

    rank = 1 + #(score > s_t) + #(score == s_t and index < t): ties go to the lower index;
    a target scored -inf (not ranked by the model) ranks N.

    Args:
        scores: [B, N] item scores, higher is better.
        targets: [B] long, the target item index of each row.

    Returns:
        [B] long ranks in 1..N.
    """
    _check_scores(scores)
    num_items = scores.shape[1]
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"targets must have shape [{scores.shape[0]}], got {tuple(targets.shape)}")
    targets = targets.to(device=scores.device, dtype=torch.long)
    if len(targets) and (targets.min() < 0 or targets.max() >= num_items):
        raise ValueError(f"a target is outside the catalogue of {num_items} items")

    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    lower_index = torch.arange(num_items, device=scores.device)[None, :] < targets[:, None]
    ahead = (scores > target_scores) | ((scores == target_scores) & lower_index)
    ranks = 1 + ahead.sum(dim=1)
    return ranks.masked_fill(target_scores[:, 0] == -torch.inf, num_items)


def top_k_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k best items of each row, best first, with the module's tie rule.

    A stable descending sort keeps equal scores in index order, which is exactly the tie rule
    of `target_ranks`; `torch.topk` makes no such promise. Items scored -inf (not ranked)
    come last; they appear only when fewer than k items have a finite score.

    Returns:
        [B, k] long item indices.
    """
    _check_scores(scores)
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1]}, got {k}")
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def ranking_metric_matrix(
    ranks: torch.Tensor, ks: Sequence[int] = (1, 10, 50)
) -> dict[str, torch.Tensor]:
    """Per-sample `recall@k`, `mrr@k` and `ndcg@k` (float64, shape [B]).

    Kept per sample so that confidence intervals can be bootstrapped from the same values
    that `ranking_metrics` averages. With one relevant item the ideal DCG is 1, so
    NDCG@k = 1 / log2(rank + 1) inside the cut-off.
    """
    ranks = torch.as_tensor(ranks)
    if ranks.dim() != 1:
        raise ValueError(f"ranks must be one-dimensional, got shape {tuple(ranks.shape)}")
    if len(ranks) and ranks.min() < 1:
        raise ValueError("ranks start at 1")
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be >= 1, got {tuple(ks)}")

    ranks = ranks.to(torch.float64)
    zero = torch.zeros_like(ranks)
    hits = {k: ranks <= k for k in ks}
    matrix: dict[str, torch.Tensor] = {}
    for k in ks:
        matrix[f"recall@{k}"] = hits[k].to(torch.float64)
    for k in ks:
        matrix[f"mrr@{k}"] = torch.where(hits[k], 1.0 / ranks, zero)
    for k in ks:
        matrix[f"ndcg@{k}"] = torch.where(hits[k], 1.0 / torch.log2(ranks + 1.0), zero)
    return matrix


def ranking_metrics(ranks: torch.Tensor, ks: Sequence[int] = (1, 10, 50)) -> dict[str, float]:
    """Mean `recall@k`, `mrr@k` and `ndcg@k` over samples (the CRS recommendation table)."""
    if len(ranks) == 0:
        raise ValueError("no samples to average over")
    return {name: values.mean().item() for name, values in ranking_metric_matrix(ranks, ks).items()}


def sequential_metric_matrix(
    ranks: torch.Tensor, ks: Sequence[int] = (5, 10)
) -> dict[str, torch.Tensor]:
    """Per-sample `hr@k` and `ndcg@k`, the leave-one-out names used by sequential recommenders.

    With a single target, HR@k is Recall@k; only the names and default cut-offs differ.
    """
    matrix = ranking_metric_matrix(ranks, ks)
    return {
        **{f"hr@{k}": matrix[f"recall@{k}"] for k in ks},
        **{f"ndcg@{k}": matrix[f"ndcg@{k}"] for k in ks},
    }


def sequential_metrics(ranks: torch.Tensor, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """Mean `hr@k` and `ndcg@k` over samples (the sequential recommendation table)."""
    if len(ranks) == 0:
        raise ValueError("no samples to average over")
    return {name: v.mean().item() for name, v in sequential_metric_matrix(ranks, ks).items()}
