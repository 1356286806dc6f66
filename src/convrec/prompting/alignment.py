"""STEP's alignment losses between the F-Former's query vectors, text and KG item embeddings.

STEP (specs/step.md) trains the F-Former so that the K query vectors read from a dialogue
context agree with that context's text vector (symmetric InfoNCE plus a batch-hard margin) and
with the knowledge-graph embedding of the item the dialogue recommends (a triplet loss with
in-batch negatives plus a cosine auxiliary loss). Every function here returns per-sample losses
of shape [B] so that the trainer chooses how to weight and average them; none loops over the
batch, and every loss back-propagates finite gradients, also when a sample has no negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def query_text_similarity(queries: Tensor, text: Tensor, temperature: Tensor | float) -> Tensor:
    """Query-to-text similarity: s[b, c] = max_k <queries[b, k], text[c]> / temperature, [B, B].

    The best-matching of the K queries speaks for the dialogue, as in BLIP-2's Q-Former.
    """
    scores = torch.einsum("bkd,cd->bkc", queries, text)
    return scores.amax(dim=1) / temperature


def _hardest_negative(scores: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the largest score among the valid entries, and whether the row has any.

    Rows without a valid entry get 0 (not -inf), so arithmetic on them stays finite; callers
    must still mask their loss with the returned flag.
    """
    has_negative = valid.any(dim=1)
    hardest = scores.masked_fill(~valid, float("-inf")).amax(dim=1)
    return torch.where(has_negative, hardest, torch.zeros_like(hardest)), has_negative


def _negatives(size: int, same_context: Tensor | None, device: torch.device) -> Tensor:
    """[B, B] True where c is an in-batch negative of b: another sample, of another context.

    A context recommending several items gives one sample per item; those samples carry the
    same dialogue, so they are not negatives of each other.
    """
    valid = ~torch.eye(size, dtype=torch.bool, device=device)
    return valid if same_context is None else valid & ~same_context


def _diagonal_cross_entropy(logits: Tensor, allowed: Tensor, label_smoothing: float) -> Tensor:
    """Per row, the cross-entropy with target = the diagonal, over the allowed columns only,
    with label smoothing spread over those columns (as F.cross_entropy over all of them)."""
    log_p = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=1)
    nll = -log_p.diagonal()
    smooth = -log_p.masked_fill(~allowed, 0).sum(dim=1) / allowed.sum(dim=1)
    return (1 - label_smoothing) * nll + label_smoothing * smooth


def contrastive_loss(
    similarity: Tensor, label_smoothing: float = 0.1, same_context: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE with in-batch negatives, per sample, from a [B, B] similarity.

    Sample b's loss is the mean of the cross-entropy of row b (queries -> texts) and of column b
    (texts -> queries), both with target b and label smoothing. `same_context` [B, B] marks
    pairs of samples of one context: they are left out of each other's negatives.
    """
    size = similarity.shape[0]
    allowed = _negatives(size, same_context, similarity.device)
    allowed = allowed | torch.eye(size, dtype=torch.bool, device=similarity.device)
    rows = _diagonal_cross_entropy(similarity, allowed, label_smoothing)
    columns = _diagonal_cross_entropy(similarity.t(), allowed.t(), label_smoothing)
    return (rows + columns) / 2


def margin_loss(
    similarity: Tensor, margin: float = 0.1, same_context: Tensor | None = None
) -> Tensor:
    """Batch-hard margin loss in both directions, per sample, from a [B, B] similarity.

    (relu(margin + max_{c != b} s[b, c] - s[b, b]) + relu(margin + max_{c != b} s[c, b]
    - s[b, b])) / 2: the hardest in-batch negative must trail the positive by `margin`.
    A batch of one sample has no negative and gives 0 (still connected to the graph);
    samples of the same context (`same_context`) are not negatives.
    """
    size = similarity.shape[0]
    positive = similarity.diagonal()
    valid = _negatives(size, same_context, similarity.device)
    row_hardest, has_negative = _hardest_negative(similarity, valid)
    column_hardest, _ = _hardest_negative(similarity.t(), valid.t())
    row_loss = F.relu(margin + row_hardest - positive)
    column_loss = F.relu(margin + column_hardest - positive)
    loss = (row_loss + column_loss) / 2
    return torch.where(has_negative, loss, torch.zeros_like(loss))


def triplet_loss(
    queries_mean: Tensor,
    item_embeddings: Tensor,
    item_ids: Tensor,
    margin: float = 0.1,
    exclude_same_item: bool = True,
    same_context: Tensor | None = None,
) -> Tensor:
    """Triplet loss pulling each dialogue's queries towards its target item's KG embedding.

    queries_mean [B, d] is the mean of each sample's K queries, item_embeddings [B, d] the KG
    embedding of each sample's target item, item_ids [B] the target ids; both vectors are
    L2-normalised here. With cos[b, c] = cos(z_b, e_{y_c}), sample b's loss is
    relu(max_{c != b} cos[b, c] - cos[b, b] + margin) over in-batch negatives. With
    `exclude_same_item`, negatives whose target is b's own item are skipped: they are not
    negatives, and they would force a loss of at least `margin`. The released STEP code does not
    exclude them (exclude_same_item=False reproduces it). The other targets of the same
    context (`same_context`) are skipped too: they are the context's positives. A sample
    without a valid negative gets 0.
    """
    queries = F.normalize(queries_mean, dim=-1)
    items = F.normalize(item_embeddings, dim=-1)
    cosine = queries @ items.t()
    valid = _negatives(cosine.shape[0], same_context, cosine.device)
    if exclude_same_item:
        valid = valid & (item_ids.unsqueeze(1) != item_ids.unsqueeze(0))
    hardest, has_negative = _hardest_negative(cosine, valid)
    loss = F.relu(hardest - cosine.diagonal() + margin)
    return torch.where(has_negative, loss, torch.zeros_like(loss))


def auxiliary_loss(queries_mean: Tensor, item_embeddings: Tensor) -> Tensor:
    """1 - cos(queries_mean_b, e_{y_b}) per sample: a direct pull towards the target item."""
    return 1 - F.cosine_similarity(queries_mean, item_embeddings, dim=-1)
