"""STEP's alignment losses on tiny hand-computed examples (expected values from the formulas)."""

from __future__ import annotations

import math

import pytest
import torch

from convrec.prompting.alignment import (
    auxiliary_loss,
    contrastive_loss,
    margin_loss,
    query_text_similarity,
    triplet_loss,
)


def _smoothed_cross_entropy(logits: list[float], target: int, smoothing: float) -> float:
    """Cross-entropy against (1 - eps) one-hot + eps / C uniform, written out by hand."""
    log_normaliser = math.log(sum(math.exp(x) for x in logits))
    count = len(logits)
    total = 0.0
    for index, logit in enumerate(logits):
        weight = smoothing / count + (1 - smoothing if index == target else 0.0)
        total += weight * (log_normaliser - logit)
    return total


def _assert_finite_grad(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()


def test_query_text_similarity_takes_max_over_queries_and_divides_by_temperature():
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.6, 0.8]]])
    text = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # s[0, 0] = max(0.6, 0.8): query 1; s[0, 1] = max(1, 0): query 0;
    # s[1, 0] = max(0.8, 1.0): query 1; s[1, 1] = max(0, 0.6): query 1.
    expected = torch.tensor([[0.8, 1.0], [1.0, 0.6]]) / 0.5
    assert torch.allclose(query_text_similarity(queries, text, 0.5), expected)


def test_query_text_similarity_learnable_temperature_gets_a_gradient():
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    text = torch.tensor([[0.0, 1.0]])
    temperature = torch.tensor(0.5, requires_grad=True)
    similarity = query_text_similarity(queries, text, temperature)
    assert similarity.item() == pytest.approx(2.0)
    similarity.sum().backward()
    assert temperature.grad.item() == pytest.approx(-1.0 / 0.25)  # d(1/t)/dt = -1/t^2


def test_contrastive_loss_without_smoothing():
    similarity = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    row0 = math.log(math.exp(2) + math.exp(0)) - 2
    column0 = math.log(math.exp(2) + math.exp(1)) - 2
    row1 = math.log(math.exp(1) + math.exp(3)) - 3
    column1 = math.log(math.exp(0) + math.exp(3)) - 3
    expected = torch.tensor([(row0 + column0) / 2, (row1 + column1) / 2])
    loss = contrastive_loss(similarity, label_smoothing=0.0)
    assert loss.shape == (2,)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_contrastive_loss_with_label_smoothing():
    similarity = torch.tensor([[2.0, 0.0, 1.0], [1.0, 3.0, 0.0], [0.5, 0.0, 1.5]])
    rows = similarity.tolist()
    columns = similarity.t().tolist()
    expected = [
        (_smoothed_cross_entropy(rows[b], b, 0.1) + _smoothed_cross_entropy(columns[b], b, 0.1)) / 2
        for b in range(3)
    ]
    loss = contrastive_loss(similarity, label_smoothing=0.1)
    assert torch.allclose(loss, torch.tensor(expected), atol=1e-6)


def test_contrastive_loss_gradient_is_finite():
    similarity = torch.tensor([[2.0, 0.0], [1.0, 3.0]], requires_grad=True)
    contrastive_loss(similarity).mean().backward()
    _assert_finite_grad(similarity)


def test_margin_loss_uses_hardest_negative_in_both_directions():
    similarity = torch.tensor([[0.9, 0.5, 0.2], [0.85, 0.7, 0.1], [0.3, 0.4, 1.0]])
    # sample 0: row relu(0.1 + 0.5 - 0.9) = 0, column relu(0.1 + 0.85 - 0.9) = 0.05
    # sample 1: row relu(0.1 + 0.85 - 0.7) = 0.25, column relu(0.1 + 0.5 - 0.7) = 0
    # sample 2: row relu(0.1 + 0.4 - 1.0) = 0, column relu(0.1 + 0.2 - 1.0) = 0
    expected = torch.tensor([0.05 / 2, 0.25 / 2, 0.0])
    assert torch.allclose(margin_loss(similarity, margin=0.1), expected, atol=1e-6)


def test_margin_loss_single_sample_is_zero_and_backpropagates():
    similarity = torch.tensor([[0.3]], requires_grad=True)
    loss = margin_loss(similarity, margin=0.1)
    assert loss.shape == (1,)
    assert loss.item() == 0.0
    loss.sum().backward()
    _assert_finite_grad(similarity)
    assert similarity.grad.item() == 0.0


def test_margin_loss_gradient_is_finite():
    similarity = torch.tensor([[0.9, 0.5], [0.85, 0.7]], requires_grad=True)
    margin_loss(similarity).sum().backward()
    _assert_finite_grad(similarity)


def _triplet_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # item 5 -> (0, 1), item 7 -> (1, 0); samples 0 and 2 both recommend item 5.
    queries_mean = torch.tensor([[0.6, 0.8], [0.6, 0.8], [0.0, 3.0]])
    item_embeddings = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    item_ids = torch.tensor([5, 7, 5])
    return queries_mean, item_embeddings, item_ids


def test_triplet_loss_excludes_same_item_negatives():
    queries_mean, item_embeddings, item_ids = _triplet_example()
    # cos = [[0.8, 0.6, 0.8], [0.8, 0.6, 0.8], [1.0, 0.0, 1.0]], margin 0.3
    # sample 0: only c=1 is valid -> relu(0.6 - 0.8 + 0.3) = 0.1
    # sample 1: hardest of c=0, 2 -> relu(0.8 - 0.6 + 0.3) = 0.5
    # sample 2: only c=1 is valid -> relu(0.0 - 1.0 + 0.3) = 0
    loss = triplet_loss(queries_mean, item_embeddings, item_ids, margin=0.3)
    assert torch.allclose(loss, torch.tensor([0.1, 0.5, 0.0]), atol=1e-6)


def test_triplet_loss_keeps_same_item_negatives_like_released_code():
    queries_mean, item_embeddings, item_ids = _triplet_example()
    # sample 0: hardest is c=2 (same item, cos 0.8) -> relu(0.8 - 0.8 + 0.3) = 0.3
    # sample 2: hardest is c=0 (same item, cos 1.0) -> relu(1.0 - 1.0 + 0.3) = 0.3
    loss = triplet_loss(
        queries_mean, item_embeddings, item_ids, margin=0.3, exclude_same_item=False
    )
    assert torch.allclose(loss, torch.tensor([0.3, 0.5, 0.3]), atol=1e-6)


def test_triplet_loss_without_valid_negative_is_zero_with_finite_gradient():
    queries_mean = torch.tensor([[0.6, 0.8], [1.0, 0.0]], requires_grad=True)
    item_embeddings = torch.tensor([[0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    loss = triplet_loss(queries_mean, item_embeddings, torch.tensor([4, 4]), margin=0.3)
    assert torch.equal(loss, torch.zeros(2))
    loss.sum().backward()
    _assert_finite_grad(queries_mean, item_embeddings)

    single = torch.tensor([[0.6, 0.8]], requires_grad=True)
    loss = triplet_loss(single, torch.tensor([[0.0, 1.0]]), torch.tensor([4]))
    assert torch.equal(loss, torch.zeros(1))
    loss.sum().backward()
    _assert_finite_grad(single)


def test_triplet_loss_gradient_is_finite():
    queries_mean, item_embeddings, item_ids = _triplet_example()
    queries_mean.requires_grad_(True)
    item_embeddings.requires_grad_(True)
    triplet_loss(queries_mean, item_embeddings, item_ids, margin=0.3).sum().backward()
    _assert_finite_grad(queries_mean, item_embeddings)


def test_auxiliary_loss_orthogonal_identical_opposite():
    queries_mean = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], requires_grad=True)
    item_embeddings = torch.tensor([[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    loss = auxiliary_loss(queries_mean, item_embeddings)
    assert torch.allclose(loss, torch.tensor([1.0, 0.0, 2.0]), atol=1e-6)
    loss.sum().backward()
    _assert_finite_grad(queries_mean)


def test_samples_of_one_context_are_not_each_others_negatives():
    """Rows 0 and 1 are one context with two target items: each is dropped from the other's
    negatives in InfoNCE (also from its label smoothing), the margin and the triplet loss."""
    similarity = torch.tensor([[2.0, 1.9, 0.5], [1.9, 2.0, 0.3], [0.4, 0.2, 1.0]])
    group = torch.tensor([0, 0, 1])
    same = group[:, None] == group
    loss = contrastive_loss(similarity, 0.1, same)
    # row 0 sees columns {0, 2}; column 0 sees rows {0, 2}
    expected = (
        _smoothed_cross_entropy([2.0, 0.5], 0, 0.1) + _smoothed_cross_entropy([2.0, 0.4], 0, 0.1)
    ) / 2
    assert loss[0].item() == pytest.approx(expected, rel=1e-5)
    # a context's own pair no longer matters at all
    moved = similarity.clone()
    moved[0, 1] = moved[1, 0] = 50.0
    assert torch.allclose(contrastive_loss(moved, 0.1, same), loss)
    assert torch.allclose(margin_loss(moved, 0.1, same), margin_loss(similarity, 0.1, same))
    assert margin_loss(moved, 0.1)[0] > margin_loss(moved, 0.1, same)[0]
    # without a grouping, the old in-batch behaviour is unchanged
    plain = contrastive_loss(similarity, 0.1)
    assert plain[2].item() == pytest.approx(
        (
            _smoothed_cross_entropy([0.4, 0.2, 1.0], 2, 0.1)
            + _smoothed_cross_entropy([0.5, 0.3, 1.0], 2, 0.1)
        )
        / 2,
        rel=1e-5,
    )
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    ids = torch.tensor([7, 8, 9])
    assert triplet_loss(queries, items, ids, 0.1, True, same)[0] == 0
    assert triplet_loss(queries, items, ids, 0.1, True)[0] > 0
