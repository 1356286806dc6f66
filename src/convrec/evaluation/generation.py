"""Response metrics: BLEU, Distinct-n, ROUGE, perplexity and item ratio.

Tokens are `str.split()` tokens (any run of whitespace separates; UniCRS does the same,
CRSLab's `split(" ")` differs only on repeated spaces). ROUGE is the exception: it keeps the
`rouge-score` package's own tokenizer (lower-cased, alphanumeric runs) so that its numbers
match every other user of that package.

Averages over an empty set of responses are undefined, so empty inputs raise `ValueError`
instead of returning a number that looks like a result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache

import torch

# nltk (which imports scipy) and rouge-score are imported where they score: loading a run
# to chat with it or to serve it needs neither.

BLEU_ORDERS = (1, 2, 3, 4)

_ROUGE_TYPES = {"rouge-1": "rouge1", "rouge-2": "rouge2", "rouge-l": "rougeL"}


@cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(_ROUGE_TYPES.values()))


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("no responses to score")


def _one_hot(n: int) -> tuple[float, ...]:
    """BLEU weights of the CRS convention: only the n-gram precision of order n counts."""
    if n < 1:
        raise ValueError(f"BLEU order must be >= 1, got {n}")
    return (0.0,) * (n - 1) + (1.0,)


@contextmanager
def _zero_overlaps_expected() -> Iterator[None]:
    # Unsmoothed nltk warns on every zero n-gram overlap; scoring those 0 is the convention
    # we follow, not a problem to report.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*The hypothesis contains 0 counts")
        yield


def _as_list(scores: float | list[float], size: int) -> list[float]:
    # nltk returns a bare number for a single weight vector, and a bare 0 for every weight
    # vector at once when not even a unigram matches.
    return [float(s) for s in scores] if isinstance(scores, list) else [float(scores)] * size


def _mean_sentence_bleu(
    hyps: Sequence[str], refs: Sequence[str], orders: Sequence[int]
) -> list[float]:
    from nltk.translate.bleu_score import sentence_bleu

    _check_pairs(hyps, refs)
    weights = [_one_hot(n) for n in orders]
    per_sample: list[list[float]] = []
    with _zero_overlaps_expected():
        for hyp, ref in zip(hyps, refs, strict=True):
            hyp_tokens = hyp.split()
            if not hyp_tokens:
                per_sample.append([0.0] * len(weights))
                continue
            scores = sentence_bleu([ref.split()], hyp_tokens, weights=weights)
            per_sample.append(_as_list(scores, len(weights)))
    return [math.fsum(column) / len(hyps) for column in zip(*per_sample, strict=True)]


def bleu(hyps: Sequence[str], refs: Sequence[str], n: int) -> float:
    """Mean over samples of nltk `sentence_bleu` with one-hot weights on order n.

    This is the BLEU-n of UniCRS, CRSLab, MSCRS and STEP: unsmoothed, one reference per
    sample, an empty hypothesis scores 0.
    """
    return _mean_sentence_bleu(hyps, refs, [n])[0]


def bleu_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """`bleu-1` .. `bleu-4` as in `bleu`, with one nltk call per sample for all four orders."""
    means = _mean_sentence_bleu(hyps, refs, BLEU_ORDERS)
    return {f"bleu-{n}": mean for n, mean in zip(BLEU_ORDERS, means, strict=True)}


def corpus_bleu_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """`corpus-bleu-1` .. `corpus-bleu-4`: nltk `corpus_bleu`, one-hot weights.

    Corpus BLEU pools n-gram counts and lengths over all samples before dividing, so it is
    not the mean of the sentence scores; the labels keep the two apart in reports.
    """
    from nltk.translate.bleu_score import corpus_bleu

    _check_pairs(hyps, refs)
    weights = [_one_hot(n) for n in BLEU_ORDERS]
    with _zero_overlaps_expected():
        scores = corpus_bleu([[r.split()] for r in refs], [h.split() for h in hyps], weights)
    return {
        f"corpus-bleu-{n}": score
        for n, score in zip(BLEU_ORDERS, _as_list(scores, len(weights)), strict=True)
    }


def distinct(hyps: Sequence[str], ns: Sequence[int] = (1, 2, 3, 4)) -> dict[str, float]:
    """Both Distinct-n variants, each under its own label.

    - `dist-n`: distinct n-grams / all n-grams, pooled over the set; in [0, 1], 0 when the
      responses hold no n-gram of that order (ConKD's corrected definition).
    - `dist-n/sent`: distinct n-grams over the set / number of responses; can exceed 1.
      This is the number UniCRS, CRSLab, MSCRS and STEP report as "Dist-n".
    """
    if not hyps:
        raise ValueError("no responses to score")
    token_lists = [h.split() for h in hyps]
    result: dict[str, float] = {}
    for n in ns:
        if n < 1:
            raise ValueError(f"n-gram order must be >= 1, got {n}")
        grams = [
            tuple(tokens[i : i + n]) for tokens in token_lists for i in range(len(tokens) - n + 1)
        ]
        unique = len(set(grams))
        result[f"dist-{n}"] = unique / len(grams) if grams else 0.0
        result[f"dist-{n}/sent"] = unique / len(hyps)
    return result


def rouge(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (`rouge-score`, no stemming, its default tokenizer)."""
    _check_pairs(hyps, refs)
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hyps, refs, strict=True):
        scores = _rouge_scorer().score(ref, hyp)  # rouge-score takes (target, prediction)
        for name, rouge_type in _ROUGE_TYPES.items():
            totals[name] += scores[rouge_type].fmeasure
    return {name: total / len(hyps) for name, total in totals.items()}


def perplexity_from_sums(total_nll: float, num_tokens: int) -> float:
    """exp(total NLL / token count), for loops that accumulate sums batch by batch.

    Pooling tokens (instead of averaging per-batch perplexities) makes the result
    independent of batch size and padding. A diverged model gives `inf`, not an error.
    """
    if num_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {num_tokens}")
    try:
        return math.exp(total_nll / num_tokens)
    except OverflowError:
        return math.inf


def perplexity(
    token_nll: torch.Tensor | Sequence[float],
    mask: torch.Tensor | Sequence[bool] | None = None,
) -> float:
    """exp(mean token NLL) over the tokens where `mask` is true (all tokens without a mask).

    `token_nll` holds natural-log negative log-likelihoods of reference tokens, any shape;
    `mask` (same shape, bool or 0/1) drops padding.
    """
    nll = torch.as_tensor(token_nll, dtype=torch.float64)
    if mask is not None:
        keep = torch.as_tensor(mask, device=nll.device).bool()
        if keep.shape != nll.shape:
            raise ValueError(f"mask shape {tuple(keep.shape)} != NLL shape {tuple(nll.shape)}")
        nll = nll[keep]
    return perplexity_from_sums(nll.sum().item(), nll.numel())


def item_ratio(responses: Sequence[str] | Sequence[int], slot: str = "<movie>") -> float:
    """Mean number of item mentions per generated response.

    `responses` is either the generated strings, in which non-overlapping occurrences of
    `slot` are counted (UniCRS counts its `<movie>` slots this way), or the item count of
    each response when the caller identifies items itself (e.g. item tokens).
    """
    if not responses:
        raise ValueError("no responses to score")
    counts = [r.count(slot) if isinstance(r, str) else int(r) for r in responses]
    return sum(counts) / len(counts)
