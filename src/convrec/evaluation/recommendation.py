"""Ranking a model's recommendations for a list of samples (validation and test)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from convrec.data.samples import RecSample
from convrec.data.tasks import RecTask
from convrec.evaluation.ranking import ranking_metrics, target_ranks
from convrec.models.base import ConvRecModel, move_to


@torch.no_grad()
def rank_targets(
    model: ConvRecModel, task: RecTask, samples: Sequence[RecSample], batch_size: int = 256
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


def validation_metrics(
    model: ConvRecModel, task: RecTask, batch_size: int = 256
) -> dict[str, float]:
    """Recall/MRR/NDCG@1,10,50 on the validation split, standard protocol."""
    ranks = rank_targets(model, task, task.eval_samples("valid"), batch_size)
    return ranking_metrics(ranks, ks=(1, 10, 50))
