"""Ranking a model's recommendations for a list of samples (validation and test).

The task's kind decides the metrics: Recall/MRR/NDCG at 1, 10, 50 for conversational
tasks (the CRS tables), HR/NDCG at 5, 10, 20 for sequential leave-one-out tasks (the
KP4SR / SASRec tables). Both rank the whole catalogue with the tie rule of `ranking`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from convrec.data.schema import TaskKind
from convrec.data.tasks import Task
from convrec.evaluation.ranking import ranking_metric_matrix, sequential_metric_matrix, target_ranks
from convrec.models.base import ConvRecModel, move_to

MetricMatrix = Callable[[torch.Tensor], dict[str, torch.Tensor]]

METRIC_MATRIX: dict[TaskKind, MetricMatrix] = {
    "conversational": partial(ranking_metric_matrix, ks=(1, 10, 50)),
    "sequential": partial(sequential_metric_matrix, ks=(5, 10, 20)),
}
"""Per-sample metrics from target ranks, by task kind."""


@torch.no_grad()
def rank_targets(
    model: ConvRecModel, task: Task, samples: Sequence[Any], batch_size: int = 256
) -> torch.Tensor:
    """1-based rank of each sample's target in the model's full-catalogue ranking."""
    was_training = model.training
    model.eval()
    targets = torch.from_numpy(task.target_indices(list(samples)))
    ranks = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        scores = model.recommend(move_to(model.collate(chunk), model.device)).float().cpu()
        ranks.append(target_ranks(scores, targets[start : start + len(chunk)]))
    model.train(was_training)
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def validation_metrics(model: ConvRecModel, task: Task, batch_size: int = 256) -> dict[str, float]:
    """Mean metrics of the task's kind on the validation split, default protocol; for
    dialogues also the strict protocol's, as `strict/<metric>` (logged in the history so
    that a run shows whether it gains by repeating context items; selection stays on the
    default protocol)."""
    samples = task.eval_samples("valid")
    ranks = rank_targets(model, task, samples, batch_size)
    if len(ranks) == 0:
        raise ValueError("no validation samples to average over")
    matrix = METRIC_MATRIX[task.kind](ranks)
    metrics = {name: v.mean().item() for name, v in matrix.items()}
    if task.kind == "conversational":
        # The strict samples are the standard ones whose target the context does not name.
        new = torch.tensor([sample.target_is_new for sample in samples])
        if new.any():
            metrics |= {f"strict/{name}": v[new].mean().item() for name, v in matrix.items()}
    return metrics
