"""Evaluating a model's responses: text metrics, perplexity, and recommendation in words.

Evaluated turns: every recommender turn of the split with a non-empty context (the
conversation samples of `build_conv_samples`, item mentions as `<movie>` slots). Text
metrics compare the generated response before slot filling (`Reply.slotted`, UniCRS's
convention) with the slotted reference; a model without slots is compared as it writes.

The in-response metrics (convrec.evaluation.in_response) use the turns whose reference
mentions an item; on the same turns the model's own recommender is scored with
Recall@k = sum_j |G_j ∩ top-k_j| / sum_j |G_j| (the same pooling as ReR@k), and
mismatch@k = (R@k - ReR@k) / R@k says how much of the recommender's quality the
responses lose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from convrec.data.samples import ConvSample, build_conv_samples
from convrec.data.tasks import RecTask
from convrec.evaluation.generation import (
    bleu_scores,
    distinct,
    item_ratio,
    perplexity_from_sums,
    rouge,
)
from convrec.evaluation.in_response import TurnPrediction, in_response_metrics, mismatch
from convrec.models.base import ConvRecModel, Reply, move_to

KS = (1, 10, 50)


def generate_replies(
    model: ConvRecModel,
    samples: Sequence[ConvSample],
    batch_size: int = 32,
    progress: bool = True,
) -> list[Reply]:
    """Replies in sample order; batches group similar context lengths (less padding)."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].context_turns))
    replies: list[Reply | None] = [None] * len(samples)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="responses", unit="batch", disable=not progress, leave=False):
        rows = order[start : start + batch_size]
        for row, reply in zip(rows, model.respond([samples[i] for i in rows]), strict=True):
            replies[row] = reply
    return replies  # type: ignore[return-value]


@torch.no_grad()
def recommender_recall(
    model: ConvRecModel, task: RecTask, samples: Sequence[ConvSample], batch_size: int = 256
) -> dict[str, float]:
    """Pooled Recall@k of the model's ranking against each turn's reference items.

    This is ReR@k of a response that names the recommender's whole ranking once, so the
    in-response code computes it and the two numbers share one definition.
    """
    items = torch.from_numpy(task.kg.items)
    turns = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        scores = model.recommend(move_to(model.collate(chunk), model.device)).float().cpu()
        top = items[scores.topk(min(max(KS), scores.shape[1]), dim=1).indices]  # entity ids
        turns += [
            TurnPrediction(s.response_items, (ranking,))
            for s, ranking in zip(chunk, top, strict=True)
        ]
    if not turns:
        return {}
    rer = in_response_metrics(turns, ks=cutoffs(task))
    return {f"recall@{k}": rer[f"rer@{k}"] for k in cutoffs(task)}


def cutoffs(task: RecTask) -> tuple[int, ...]:
    """The cut-offs a catalogue this size can be measured at."""
    return tuple(k for k in KS if k <= task.num_items)


def conversation_metrics(
    model: ConvRecModel,
    task: RecTask,
    split: str = "test",
    *,
    batch_size: int = 32,
    progress: bool = True,
    examples: int = 5,
) -> dict[str, Any]:
    """Response metrics of a model that can respond (see the module doc)."""
    samples = build_conv_samples(task.dataset.dialogues(split))
    if not samples:
        raise ValueError(f"split {split!r} has no recommender turns to respond to")
    was_training = model.training
    model.eval()
    replies = generate_replies(model, samples, batch_size, progress)
    hyps = [r.slotted if r.slotted is not None else r.text for r in replies]
    refs = [s.response for s in samples]
    metrics: dict[str, Any] = {
        "split": split,
        "turns": len(samples),
        **bleu_scores(hyps, refs),
        **distinct(hyps),
        **rouge(hyps, refs),
        "item_ratio": item_ratio(hyps),
    }
    response_nll = getattr(model, "response_nll", None)
    if response_nll is not None:
        total, count = response_nll(samples)
        metrics["perplexity"] = perplexity_from_sums(total, count)
        response_words = getattr(model, "response_words", None)
        if response_words is not None:  # per word: comparable across tokenizers
            metrics["word_perplexity"] = perplexity_from_sums(total, response_words(samples))

    with_items = [i for i, s in enumerate(samples) if s.response_items]
    if with_items:
        turns = [
            TurnPrediction(gold=samples[i].response_items, predictions=replies[i].candidates)
            for i in with_items
        ]
        ks = cutoffs(task)  # a catalogue of 30 items has no recall@50
        in_response = in_response_metrics(turns, ks=ks)
        recall = recommender_recall(model, task, [samples[i] for i in with_items])
        metrics["in_response"] = {
            "turns": len(turns),
            **in_response,
            **{f"recommender_{k}": v for k, v in recall.items()},
            **{
                f"mismatch@{k}": mismatch(recall[f"recall@{k}"], in_response[f"rer@{k}"])
                for k in ks
            },
        }
    metrics["examples"] = [
        {"context": s.context_turns[-1].text, "reference": s.response, "generated": r.text}
        for s, r in zip(samples[:examples], replies[:examples], strict=True)
    ]
    model.train(was_training)
    return metrics


CONVERSATION_COLUMNS = (
    "bleu-1",
    "bleu-2",
    "bleu-3",
    "bleu-4",
    "dist-2",
    "dist-3",
    "dist-4",
    "dist-2/sent",
    "dist-3/sent",
    "dist-4/sent",
    "rouge-l",
    "perplexity",
    "word_perplexity",
    "item_ratio",
)
IN_RESPONSE_COLUMNS = (
    "recommender_recall@1",
    "rer@1",
    "mismatch@1",
    "recommender_recall@10",
    "rer@10",
    "prr@10",
    "f1@10",
    "mismatch@10",
    "recommender_recall@50",
    "rer@50",
    "mismatch@50",
    "rec_ratio",
)


def conversation_markdown(model_name: str, metrics: dict[str, Any]) -> str:
    """Two tables: response metrics and in-response recommendation."""

    def table(columns: Sequence[str], values: dict[str, Any], note: str) -> str:
        present = [c for c in columns if c in values]
        cells = [
            f"{values[c]:.4f}" if isinstance(values[c], float) else str(values[c]) for c in present
        ]
        return (
            f"{note}\n\n| model | "
            + " | ".join(present)
            + " |\n|---|"
            + "---|" * len(present)
            + f"\n| {model_name} | "
            + " | ".join(cells)
            + " |\n"
        )

    text = table(
        CONVERSATION_COLUMNS,
        metrics,
        f"Responses on {metrics['split']} ({metrics['turns']} recommender turns; text metrics "
        "on the slotted response; dist-n pooled, dist-n/sent per response as UniCRS reports)",
    )
    if "in_response" in metrics:
        inner = metrics["in_response"]
        text += "\n" + table(
            IN_RESPONSE_COLUMNS,
            inner,
            f"Recommendation inside responses ({inner['turns']} turns whose reference names "
            "an item; recommender_recall@k = the model's own ranking on the same turns)",
        )
    return text
