"""Metrics as pure functions of scores, ranks, strings and item predictions.

Each metric convention of the CRS literature is implemented under its own label
(see shared/specs/evaluation.md); nothing here knows about models or data loaders.
"""

from convrec.evaluation.generation import (
    bleu,
    bleu_scores,
    corpus_bleu_scores,
    distinct,
    item_ratio,
    perplexity,
    perplexity_from_sums,
    rouge,
)
from convrec.evaluation.in_response import TurnPrediction, in_response_metrics, mismatch
from convrec.evaluation.ranking import (
    ranking_metric_matrix,
    ranking_metrics,
    sequential_metric_matrix,
    sequential_metrics,
    target_ranks,
    top_k_items,
)

__all__ = [
    "TurnPrediction",
    "bleu",
    "bleu_scores",
    "corpus_bleu_scores",
    "distinct",
    "in_response_metrics",
    "item_ratio",
    "mismatch",
    "perplexity",
    "perplexity_from_sums",
    "ranking_metric_matrix",
    "ranking_metrics",
    "rouge",
    "sequential_metric_matrix",
    "sequential_metrics",
    "target_ranks",
    "top_k_items",
]
