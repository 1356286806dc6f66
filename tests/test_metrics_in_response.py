from __future__ import annotations

import math

import pytest
import torch

from convrec.evaluation import TurnPrediction, in_response_metrics, mismatch

# Turn A: gold {10, 20}, two item predictions; s2 ranks turn B's gold item 30 second, which
#         must not count for turn A.
# Turn B: gold {30}, one item prediction.
# Turn C: gold {70}, the response recommends nothing.
TURNS = [
    TurnPrediction(gold=(10, 20), predictions=((10, 30, 40), (50, 30, 20))),
    TurnPrediction(gold=(30,), predictions=((40, 30, 10),)),
    TurnPrediction(gold=(70,)),
]


def test_in_response_metrics_by_hand() -> None:
    metrics = in_response_metrics(TURNS, ks=(1, 2, 3))
    # 4 gold items (2 + 1 + 1), 3 item predictions, 2 of 3 turns recommend something.
    #
    # k=1: C_s1={10}, C_s2={50}, C_s3={40}
    #   gold found: A {10}, B {}, C {}     -> ReR = 1/4
    #   predictions hitting their turn: s1 -> PrR = 1/3
    #   F1 = 2 * (1/4)(1/3) / (1/4 + 1/3) = (1/6) / (7/12) = 2/7
    assert metrics["rer@1"] == pytest.approx(1 / 4)
    assert metrics["prr@1"] == pytest.approx(1 / 3)
    assert metrics["f1@1"] == pytest.approx(2 / 7)
    # k=2: C_s1={10,30}, C_s2={50,30}, C_s3={40,30}
    #   gold found: A {10}, B {30}, C {}   -> ReR = 2/4
    #   hits: s1 (10), s3 (30); s2 only has turn B's 30 -> PrR = 2/3
    #   F1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7
    assert metrics["rer@2"] == pytest.approx(1 / 2)
    assert metrics["prr@2"] == pytest.approx(2 / 3)
    assert metrics["f1@2"] == pytest.approx(4 / 7)
    # k=3: C_s2 gains 20 -> gold found A {10, 20}, B {30} -> ReR = 3/4; PrR = 3/3
    #   F1 = 2 * (3/4)(1) / (7/4) = 6/7
    assert metrics["rer@3"] == pytest.approx(3 / 4)
    assert metrics["prr@3"] == pytest.approx(1.0)
    assert metrics["f1@3"] == pytest.approx(6 / 7)
    assert metrics["rec_ratio"] == pytest.approx(2 / 3)
    assert len(metrics) == 3 * 3 + 1


def test_predictions_longer_than_the_cut_off_are_truncated() -> None:
    # 20 sits at position 3 of s2, beyond k=2, whatever the list length
    turn = TurnPrediction(gold=(20,), predictions=((50, 30, 20, 1, 2, 3),))
    assert in_response_metrics([turn], ks=(2,))["rer@2"] == 0.0
    assert in_response_metrics([turn], ks=(2, 3))["rer@3"] == 1.0


def test_tensor_and_duplicate_inputs_are_normalised() -> None:
    turn = TurnPrediction(
        gold=torch.tensor([20, 10, 10]),
        predictions=torch.tensor([[10, 30, 40], [50, 30, 20]]),
    )
    assert turn.gold == (10, 20)
    assert turn.predictions == ((10, 30, 40), (50, 30, 20))
    assert in_response_metrics([turn], ks=(1, 3)) == in_response_metrics(TURNS[:1], ks=(1, 3))


def test_no_predictions_anywhere() -> None:
    turns = [TurnPrediction(gold=(1, 2)), TurnPrediction(gold=(3,), predictions=())]
    metrics = in_response_metrics(turns, ks=(1, 10))
    assert metrics == {
        "rer@1": 0.0,
        "prr@1": 0.0,
        "f1@1": 0.0,
        "rer@10": 0.0,
        "prr@10": 0.0,
        "f1@10": 0.0,
        "rec_ratio": 0.0,
    }


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least one reference item"):
        TurnPrediction(gold=())
    with pytest.raises(ValueError, match="at least 50 candidates"):
        in_response_metrics([TurnPrediction(gold=(1,), predictions=((1, 2),))])
    with pytest.raises(ValueError, match="no turns"):
        in_response_metrics([])


def test_mismatch() -> None:
    # recommender R@10 = 0.20, in-response ReR@10 = 0.05 -> (0.20 - 0.05) / 0.20 = 0.75
    assert mismatch(0.20, 0.05) == pytest.approx(0.75)
    assert mismatch(0.1, 0.2) == pytest.approx(-1.0)
    assert mismatch(0.0, 0.0) == 0.0
    assert mismatch(0.0, 0.1) == -math.inf
