from __future__ import annotations

import math
import warnings

import pytest
import torch
from nltk.translate.bleu_score import corpus_bleu, sentence_bleu
from rouge_score import rouge_scorer

from convrec.evaluation import (
    bleu,
    bleu_scores,
    corpus_bleu_scores,
    distinct,
    item_ratio,
    perplexity,
    perplexity_from_sums,
    rouge,
)

HYPS = [
    "i think you would like <movie>",
    "have you seen <movie> ? it is great",
    "hello",
    "",
    "the the the cat",
]
REFS = [
    "you would like <movie> i think",
    "have you seen <movie> ? it is a great movie",
    "hi there",
    "ok",
    "the cat is on the mat",
]


def _nltk_sentence_bleu(hyp: str, ref: str, n: int) -> float:
    """BLEU-n exactly as UniCRS computes it."""
    weights = [0.0] * 4
    weights[n - 1] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sentence_bleu([ref.split()], hyp.split(), weights)


def test_bleu_1_by_hand() -> None:
    # ref "the cat is on the mat" (6 tokens), hyp "the the the cat" (4 tokens)
    # clipped unigram matches: the -> min(3, 2) = 2, cat -> 1  => precision 3/4
    # brevity penalty: hyp shorter than ref => exp(1 - 6/4) = exp(-0.5)
    expected = 0.75 * math.exp(-0.5)  # 0.45490
    assert bleu(["the the the cat"], ["the cat is on the mat"], 1) == pytest.approx(expected)
    # an empty hypothesis scores 0, so the mean over the two samples halves
    assert bleu(["the the the cat", ""], ["the cat is on the mat", "ok"], 1) == pytest.approx(
        expected / 2
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_nltk_unicrs_call(n: int) -> None:
    expected = sum(_nltk_sentence_bleu(h, r, n) for h, r in zip(HYPS, REFS, strict=True))
    expected /= len(HYPS)
    assert bleu(HYPS, REFS, n) == pytest.approx(expected, rel=1e-12)
    assert bleu_scores(HYPS, REFS)[f"bleu-{n}"] == pytest.approx(expected, rel=1e-12)


def test_bleu_scores_keys_and_ordering() -> None:
    scores = bleu_scores(HYPS, REFS)
    assert list(scores) == ["bleu-1", "bleu-2", "bleu-3", "bleu-4"]
    assert scores["bleu-1"] > scores["bleu-2"] > scores["bleu-4"] > 0


def test_bleu_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="references"):
        bleu(["a"], ["a", "b"], 1)
    with pytest.raises(ValueError, match="no responses"):
        bleu_scores([], [])


def test_bleu_emits_no_zero_overlap_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bleu_scores(["hello"], ["hi there"])
        corpus_bleu_scores(["hello"], ["hi there"])


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_corpus_bleu_matches_nltk(n: int) -> None:
    weights = [0.0] * 4
    weights[n - 1] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = corpus_bleu([[r.split()] for r in REFS], [h.split() for h in HYPS], weights)
    scores = corpus_bleu_scores(HYPS, REFS)
    assert scores[f"corpus-bleu-{n}"] == pytest.approx(expected, rel=1e-12)
    assert 0 < scores[f"corpus-bleu-{n}"] <= 1


def test_corpus_bleu_without_any_match_is_zero() -> None:
    assert corpus_bleu_scores(["a b"], ["c d"]) == {f"corpus-bleu-{n}": 0.0 for n in range(1, 5)}


def test_distinct_by_hand() -> None:
    scores = distinct(["a b a b", "a b c"])
    # unigrams: a b a b a b c          -> 7 in all, {a, b, c} = 3 distinct
    # bigrams:  ab ba ab | ab bc        -> 5 in all, {ab, ba, bc} = 3 distinct
    # trigrams: aba bab | abc           -> 3 in all, 3 distinct
    # 4-grams:  abab                    -> 1 in all, 1 distinct
    assert scores["dist-1"] == pytest.approx(3 / 7)
    assert scores["dist-2"] == pytest.approx(3 / 5)
    assert scores["dist-3"] == pytest.approx(1.0)
    assert scores["dist-4"] == pytest.approx(1.0)
    # legacy: distinct n-grams / 2 responses, which exceeds 1
    assert scores["dist-1/sent"] == pytest.approx(1.5)
    assert scores["dist-2/sent"] == pytest.approx(1.5)
    assert scores["dist-3/sent"] == pytest.approx(1.5)
    assert scores["dist-4/sent"] == pytest.approx(0.5)


def test_distinct_short_and_empty_responses() -> None:
    scores = distinct(["x y", "", "x"], ns=(1, 3))
    # unigrams: x y | x -> 3 in all, 2 distinct; the empty response still counts as a response
    assert scores == pytest.approx(
        {"dist-1": 2 / 3, "dist-1/sent": 2 / 3, "dist-3": 0.0, "dist-3/sent": 0.0}
    )
    with pytest.raises(ValueError):
        distinct([])


def test_rouge_by_hand() -> None:
    # ref "the cat sat", hyp "the cat ran away"
    # ROUGE-1: overlap {the, cat} = 2; P = 2/4, R = 2/3; F = 2PR/(P+R) = (2/3)/(7/6) = 4/7
    # ROUGE-2: overlap {the cat} = 1; P = 1/3, R = 1/2; F = (1/3)/(5/6) = 2/5
    # ROUGE-L: LCS "the cat" = 2, same P and R as ROUGE-1 => 4/7
    scores = rouge(["the cat ran away"], ["the cat sat"])
    assert scores == pytest.approx({"rouge-1": 4 / 7, "rouge-2": 2 / 5, "rouge-l": 4 / 7})


def test_rouge_matches_rouge_score() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    per_sample = [scorer.score(r, h) for h, r in zip(HYPS, REFS, strict=True)]
    expected = {
        name: sum(s[key].fmeasure for s in per_sample) / len(HYPS)
        for name, key in [("rouge-1", "rouge1"), ("rouge-2", "rouge2"), ("rouge-l", "rougeL")]
    }
    assert rouge(HYPS, REFS) == pytest.approx(expected, rel=1e-12)


def test_rouge_bounds_and_package_tokenizer() -> None:
    assert rouge(["a b c"], ["a b c"]) == pytest.approx({"rouge-1": 1, "rouge-2": 1, "rouge-l": 1})
    assert rouge(["a b"], ["c d"]) == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    # rouge-score lower-cases and drops punctuation, unlike the whitespace tokens of BLEU
    assert rouge(["The CAT!"], ["the cat"])["rouge-2"] == pytest.approx(1.0)


def test_perplexity_by_hand() -> None:
    nll = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # kept tokens: 1 + 2 + 4 + 0.5 = 7.5 over 4 tokens -> mean 1.875
    assert perplexity(nll, mask) == pytest.approx(math.exp(1.875))
    # without a mask: (1 + 2 + 3 + 4 + 0.5 + 9) / 6 = 3.25
    assert perplexity(nll) == pytest.approx(math.exp(3.25))
    assert perplexity([1.0, 2.0]) == pytest.approx(math.exp(1.5))
    assert perplexity_from_sums(6.0, 4) == pytest.approx(math.exp(1.5))


def test_perplexity_edge_cases() -> None:
    assert perplexity_from_sums(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask shape"):
        perplexity(torch.ones(2, 2), torch.ones(4, dtype=torch.bool))


def test_item_ratio() -> None:
    responses = ["<movie> and <movie>", "none", "try <movie>", "hi"]
    assert item_ratio(responses) == pytest.approx(3 / 4)
    assert item_ratio([3, 0]) == pytest.approx(1.5)
    assert item_ratio(["@123 or @45"], slot="@") == pytest.approx(2.0)
    with pytest.raises(ValueError):
        item_ratio([])
