"""Recommendation measured inside generated responses (ConKD's in-response metrics).

ConKD states the intent (score the items the final response actually recommends, since a
separate dialogue module often drops the recommender's item) but gives no formula. The
formulas below are convrec's own definitions of that intent.

Evaluated turns j are recommender turns whose reference response mentions at least one
item; `G_j` is the set of those reference items (a repeated mention counts once). Each
place where the generated response emits an item is an item prediction s, and `C_s^k` is
the top-k of the item distribution at that place (for a slot filled by a separate
recommender, that recommender's top-k).

- ReR@k = sum_j |{g in G_j : g in union_s C_s^k}| / sum_j |G_j|
  (recall of reference items by anything the response recommends)
- PrR@k = sum_j |{s : C_s^k intersects G_j}| / (number of item predictions over all j),
  0 when no response predicts an item (precision of the response's item predictions)
- F1@k = harmonic mean of ReR@k and PrR@k, 0 when both are 0
- Rec Ratio = turns with at least one item prediction / all evaluated turns
- Mismatch@k = (R@k - ReR@k) / R@k, the relative loss between the recommender's own
  Recall@k and what reaches the response (ConKD Table 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


def _ids(values: Iterable[int] | torch.Tensor) -> tuple[int, ...]:
    if isinstance(values, torch.Tensor):
        return tuple(values.reshape(-1).tolist())
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class TurnPrediction:
    """One evaluated turn: its reference items and the ranked candidates of each prediction.

    `gold` may be any iterable or tensor of item ids and is stored sorted and deduplicated.
    `predictions` holds one ranked candidate list per item the response emits, best first,
    at least as long as the largest cut-off evaluated; a [S, K] tensor is accepted too.
    """

    gold: tuple[int, ...]
    predictions: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "gold", tuple(sorted(set(_ids(self.gold)))))
        object.__setattr__(self, "predictions", tuple(_ids(p) for p in self.predictions))
        if not self.gold:
            raise ValueError("an evaluated turn must have at least one reference item")


def _first_hit_positions(turn: TurnPrediction, depth: int) -> torch.Tensor:
    """[S, G]: 0-based position of gold item g in prediction s's candidates, `depth` if absent.

    g is in C_s^k iff that position is < k, so one tensor serves every cut-off.
    """
    if any(len(p) < depth for p in turn.predictions):
        raise ValueError(f"every prediction needs at least {depth} candidates")
    candidates = torch.tensor([p[:depth] for p in turn.predictions], dtype=torch.long)
    gold = torch.tensor(turn.gold, dtype=torch.long)
    matches = candidates[:, :, None] == gold[None, None, :]  # [S, depth, G]
    positions = torch.arange(depth)[None, :, None].expand_as(matches)
    return torch.where(matches, positions, depth).amin(dim=1)


def in_response_metrics(
    turns: Sequence[TurnPrediction], ks: Sequence[int] = (1, 10, 50)
) -> dict[str, float]:
    """`rer@k`, `prr@k`, `f1@k` for each k, and `rec_ratio` (definitions in the module doc)."""
    if not turns:
        raise ValueError("no turns to evaluate")
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be >= 1, got {tuple(ks)}")
    depth = max(ks)

    gold_hits = dict.fromkeys(ks, 0)
    prediction_hits = dict.fromkeys(ks, 0)
    num_gold = num_predictions = turns_with_items = 0
    for turn in turns:
        num_gold += len(turn.gold)
        if not turn.predictions:
            continue
        turns_with_items += 1
        num_predictions += len(turn.predictions)
        positions = _first_hit_positions(turn, depth)
        best_per_gold = positions.amin(dim=0)  # earliest position of g over all predictions
        best_per_prediction = positions.amin(dim=1)  # earliest position of any g in C_s
        for k in ks:
            gold_hits[k] += int((best_per_gold < k).sum())
            prediction_hits[k] += int((best_per_prediction < k).sum())

    result: dict[str, float] = {}
    for k in ks:
        rer = gold_hits[k] / num_gold
        prr = prediction_hits[k] / num_predictions if num_predictions else 0.0
        result[f"rer@{k}"] = rer
        result[f"prr@{k}"] = prr
        result[f"f1@{k}"] = 2 * rer * prr / (rer + prr) if rer + prr else 0.0
    result["rec_ratio"] = turns_with_items / len(turns)
    return result


def mismatch(recall_at_k: float, rer_at_k: float) -> float:
    """Relative drop (R@k - ReR@k) / R@k from the recommender's recall to the response's.

    0/0 is 0 (nothing to lose); a positive ReR over a zero recall is an unbounded gain, -inf.
    """
    if recall_at_k == 0:
        return 0.0 if rer_at_k == 0 else -math.inf
    return (recall_at_k - rer_at_k) / recall_at_k
