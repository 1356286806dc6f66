"""STEP's curriculum schedule: which loss weights are active in which epoch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from convrec.prompting.curriculum import CurriculumConfig, LossWeights, curriculum_weights


def _weights(config: CurriculumConfig, epoch: int) -> tuple[float, float, float, float]:
    weights = curriculum_weights(config, epoch)
    return (weights.contrastive, weights.margin, weights.triplet, weights.auxiliary)


def test_stages_mode_switches_losses_on_at_boundaries():
    config = CurriculumConfig(mode="stages", boundaries=(1, 2))
    assert _weights(config, 0) == (1.0, 0.1, 0.0, 0.0)
    assert _weights(config, 1) == (1.0, 0.1, 0.4, 0.0)
    assert _weights(config, 2) == (1.0, 0.1, 0.4, 0.3)
    assert _weights(config, 9) == (1.0, 0.1, 0.4, 0.3)


def test_stages_mode_equal_boundaries_start_both_together():
    config = CurriculumConfig(boundaries=(0, 0))
    assert _weights(config, 0) == (1.0, 0.1, 0.4, 0.3)


def test_ramp_mode_grows_linearly_then_saturates():
    config = CurriculumConfig(mode="ramp", ramp_epochs=5)
    assert _weights(config, 0) == (1.0, 0.1, 0.0, 0.0)
    assert _weights(config, 1) == pytest.approx((1.0, 0.1, 0.4 / 5, 0.3 / 5))
    assert _weights(config, 5) == pytest.approx((1.0, 0.1, 0.4, 0.3))
    assert _weights(config, 7) == pytest.approx((1.0, 0.1, 0.4, 0.3))


def test_none_mode_uses_final_weights_from_the_start():
    config = CurriculumConfig(mode="none")
    assert _weights(config, 0) == (1.0, 0.1, 0.4, 0.3)


@pytest.mark.parametrize("mode", ["stages", "ramp", "none"])
def test_disable_flags_zero_their_weights(mode: str):
    late = 100
    no_contrastive = CurriculumConfig(mode=mode, contrastive=False)
    assert _weights(no_contrastive, late) == pytest.approx((0.0, 0.0, 0.4, 0.3))
    no_triplet = CurriculumConfig(mode=mode, triplet=False)
    assert _weights(no_triplet, late) == pytest.approx((1.0, 0.1, 0.0, 0.3))
    no_auxiliary = CurriculumConfig(mode=mode, auxiliary=False)
    assert _weights(no_auxiliary, late) == pytest.approx((1.0, 0.1, 0.4, 0.0))


def test_custom_weights_are_used():
    config = CurriculumConfig(
        mode="none",
        contrastive_weight=2.0,
        margin_weight=0.5,
        triplet_weight=1.0,
        auxiliary_weight=0.25,
    )
    assert _weights(config, 0) == (2.0, 0.5, 1.0, 0.25)


@pytest.mark.parametrize("boundaries", [(3, 2), (-1, 2), (0, -1)])
def test_invalid_boundaries_raise(boundaries: tuple[int, int]):
    with pytest.raises(ValidationError, match="boundaries"):
        CurriculumConfig(boundaries=boundaries)


def test_invalid_boundaries_on_assignment_raise():
    config = CurriculumConfig()
    with pytest.raises(ValidationError, match="boundaries"):
        config.boundaries = (5, 1)


def test_unknown_key_raises():
    with pytest.raises(ValidationError, match="warmup"):
        CurriculumConfig(warmup=3)


def test_out_of_range_values_raise():
    with pytest.raises(ValidationError):
        CurriculumConfig(ramp_epochs=0)
    with pytest.raises(ValidationError):
        CurriculumConfig(label_smoothing=1.0)
    with pytest.raises(ValidationError):
        CurriculumConfig(mode="linear")


def test_negative_epoch_raises():
    with pytest.raises(ValueError, match="epoch"):
        curriculum_weights(CurriculumConfig(), -1)


def test_loss_weights_helpers():
    weights = LossWeights(contrastive=1.0, margin=0.1, triplet=0.4, auxiliary=0.3)
    assert weights.as_dict() == {
        "contrastive": 1.0,
        "margin": 0.1,
        "triplet": 0.4,
        "auxiliary": 0.3,
    }
    doubled = weights.scaled(2.0)
    assert doubled == LossWeights(contrastive=2.0, margin=0.2, triplet=0.8, auxiliary=0.6)
    assert weights.target_free() == LossWeights(
        contrastive=1.0, margin=0.1, triplet=0.0, auxiliary=0.0
    )
    with pytest.raises(AttributeError):
        weights.triplet = 1.0  # type: ignore[misc]
