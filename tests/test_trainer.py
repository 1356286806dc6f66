"""The shared trainer on a tiny model: determinism, resume, accumulation, early stopping."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from convrec.config import TrainConfig
from convrec.models.base import Batch, ConvRecModel, ModelConfig, Stage
from convrec.training.checkpoint import seed_everything
from convrec.training.trainer import Trainer


class TinyConfig(ModelConfig):
    dim: int = 8


class Tiny(ConvRecModel):
    """Samples are (features, label) pairs; dropout makes the global RNG matter."""

    name = "tiny"
    description = "test model"
    Config = TinyConfig

    def __init__(
        self, samples: Sequence[tuple[torch.Tensor, int]], crash_at: int = -1, dropout=0.3
    ) -> None:
        super().__init__(TinyConfig(), task=None)  # type: ignore[arg-type]
        self.samples = samples
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(dropout), nn.Linear(8, 3))
        self.calls = 0
        self.crash_at = crash_at

    def stages(self) -> list[Stage]:
        return [
            Stage("first", self.loss, lambda: self.samples, self.collate, "score"),
            Stage(
                "second",
                self.loss,
                lambda: self.samples,
                self.collate,
                "score",
                parameters=lambda: self.net[2].parameters(),
            ),
        ]

    def collate(self, samples) -> Batch:
        return {
            "x": torch.stack([s[0] for s in samples]),
            "y": torch.tensor([s[1] for s in samples]),
        }

    def loss(self, batch: Batch) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        return nn.functional.cross_entropy(self.net(batch["x"]), batch["y"], reduction="none")


def make_samples(n: int = 40) -> list[tuple[torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return list(zip(x, y.tolist(), strict=True))


def accuracy(model: Tiny) -> dict[str, float]:
    model.eval()
    batch = model.collate(model.samples)
    with torch.no_grad():
        correct = (model.net(batch["x"]).argmax(1) == batch["y"]).float().mean().item()
    return {"score": correct}


def run(
    tmp_path,
    *,
    crash_at: int = -1,
    resume: bool = False,
    model: Tiny | None = None,
    validate=accuracy,
    **overrides,
) -> tuple[Tiny, Trainer]:
    settings = {
        "epochs": 3,
        "batch_size": 8,
        "lr": 0.05,
        "checkpoint_every": 1,
        "patience": 5,
        **overrides,
    }
    if model is None:
        seed_everything(0)
        model = Tiny(make_samples(), crash_at=crash_at)
    trainer = Trainer(
        model,
        TrainConfig(**settings),
        seed=0,
        checkpoint_dir=tmp_path,
        validate=validate,
        progress=False,
    )
    trainer.fit(resume=resume)
    return model, trainer


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_same_seed_same_losses_and_weights(tmp_path):
    first, t1 = run(tmp_path / "a")
    second, t2 = run(tmp_path / "b")
    assert t1.state.step_losses == t2.state.step_losses
    assert len(t1.state.step_losses) == 2 * 3 * 5  # 2 stages x 3 epochs x 40/8 steps
    assert same_weights(first, second)
    assert [row["stage"] for row in t1.state.history] == ["first"] * 3 + ["second"] * 3


def without_timing(history):
    timing = {"train_seconds", "samples_per_s"}
    return [{k: v for k, v in row.items() if k not in timing} for row in history]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    reference, t_ref = run(tmp_path / "ref")
    for crash_at in (3, 7, 22):  # mid-epoch in stage one, at an epoch edge, in stage two
        directory = tmp_path / f"crash{crash_at}"
        with pytest.raises(KeyboardInterrupt):
            run(directory, crash_at=crash_at)
        seed_everything(123)  # a fresh process would start from another RNG state
        model = Tiny(make_samples())
        resumed, t_res = run(directory, resume=True, model=model)
        assert t_res.state.step_losses == t_ref.state.step_losses, crash_at
        assert without_timing(t_res.state.history) == without_timing(t_ref.state.history)
        assert same_weights(resumed, reference)


def test_second_stage_trains_only_its_parameters(tmp_path):
    snapshots = []

    def validate(model):
        snapshots.append((model.net[0].weight.clone(), model.net[2].weight.clone()))
        return accuracy(model)

    run(tmp_path, validate=validate)
    stage_two = snapshots[3:]
    assert all(torch.equal(first, stage_two[0][0]) for first, _ in stage_two)
    assert not torch.equal(stage_two[0][1], stage_two[-1][1])
    assert not torch.equal(snapshots[0][0], snapshots[2][0])  # stage one trained it


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_gradient_accumulation_equals_the_larger_batch(tmp_path, grad_clip):
    # Batches are consecutive slices of one permutation per epoch, so two accumulated
    # 8-sample micro-batches hold exactly the samples of one 16-sample batch; with 40
    # samples the last step has 8 samples either way.
    seed_everything(0)
    big, t_big = run(
        tmp_path / "big",
        model=Tiny(make_samples(), dropout=0.0),
        batch_size=16,
        grad_clip=grad_clip,
    )
    seed_everything(0)
    acc, t_acc = run(
        tmp_path / "acc",
        model=Tiny(make_samples(), dropout=0.0),
        batch_size=8,
        grad_accum=2,
        grad_clip=grad_clip,
    )
    assert t_big.state.step_losses == pytest.approx(t_acc.state.step_losses, rel=1e-5)
    assert len(t_big.state.step_losses) == 2 * 3 * 3
    for x, y in zip(big.state_dict().values(), acc.state_dict().values(), strict=True):
        assert torch.allclose(x, y, atol=1e-5)


def test_early_stopping_restores_the_best_weights(tmp_path):
    scores = iter([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.95, 0.1, 0.1, 0.1])
    snapshots = []

    def validate(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": next(scores)}

    model, trainer = run(tmp_path, validate=validate, epochs=6, patience=2)
    first_stage = [row for row in trainer.state.history if row["stage"] == "first"]
    assert len(first_stage) == 3  # best at epoch 1, then two worse epochs: stop
    second_stage = [row for row in trainer.state.history if row["stage"] == "second"]
    assert [row["best"] for row in second_stage] == [True, False, False]
    # the final weights are those validated as best in stage two (its first epoch)
    best = snapshots[3]
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_loss_must_be_per_sample(tmp_path):
    seed_everything(0)
    model = Tiny(make_samples())
    model.loss = lambda batch: torch.tensor(1.0, requires_grad=True)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="per-sample losses"):
        run(tmp_path, model=model)


class TwoStage(Tiny):
    """Tiny with a stage that validates itself on a loss and copies weights when it begins."""

    def __init__(self, samples) -> None:
        super().__init__(samples)
        self.begun = 0
        self.shadow = nn.Linear(8, 3)

    def stages(self) -> list[Stage]:
        first, _ = super().stages()

        def begin() -> None:
            self.begun += 1
            self.shadow.load_state_dict(self.net[2].state_dict())

        def validation_loss() -> dict[str, float]:
            batch = self.collate(self.samples)
            with torch.no_grad():
                return {"loss": self.loss(batch).mean().item()}

        second = Stage(
            "second",
            self.loss,
            lambda: self.samples,
            self.collate,
            "loss",
            parameters=lambda: self.net.parameters(),
            validate=validation_loss,
            higher_is_better=False,
            begin=begin,
        )
        return [first, second]


def test_per_stage_settings_own_validation_and_begin_hook(tmp_path):
    model = TwoStage(make_samples())
    config = TrainConfig(
        epochs=2, batch_size=8, lr=0.05, stages={"second": {"epochs": 3, "batch_size": 20}}
    )
    trainer = Trainer(
        model, config, seed=0, checkpoint_dir=tmp_path, validate=accuracy, progress=False
    )
    history = trainer.fit().history
    assert [row["stage"] for row in history] == ["first"] * 2 + ["second"] * 3
    second = [row for row in history if row["stage"] == "second"]
    assert [row["optimizer_steps"] for row in second] == [2, 4, 6]  # 40 samples / 20
    assert all("valid/loss" in row and "valid/score" not in row for row in second)
    # "best" follows the lowest loss, not the highest
    losses = [row["valid/loss"] for row in second]
    assert second[losses.index(min(losses))]["best"]
    assert model.begun == 1
    assert all(row["samples_per_s"] > 0 for row in history)
    # An epoch's train loss is the mean of its own steps (not of the previous stage's).
    steps = trainer.state.step_losses
    first_stage_steps = history[1]["optimizer_steps"]
    assert second[0]["train_loss"] == pytest.approx(
        sum(steps[first_stage_steps : first_stage_steps + 2]) / 2
    )


def test_unknown_stage_in_settings_is_an_error(tmp_path):
    config = TrainConfig(stages={"thrid": {"lr": 1e-3}})
    trainer = Trainer(
        Tiny(make_samples()),
        config,
        seed=0,
        checkpoint_dir=tmp_path,
        validate=accuracy,
        progress=False,
    )
    with pytest.raises(ValueError, match=r"train\.stages\.thrid.*first, second"):
        trainer.fit()


def test_a_stage_can_scale_the_learning_rate_of_some_parameters(tmp_path):
    """lr_scale: one optimizer group per factor; a parameter with factor 0.5 moves at half
    the rate (plain SGD-like first Adam step: |delta| = lr)."""
    seed_everything(0)
    model = Tiny(make_samples(), dropout=0.0)
    head = model.net[2].weight
    stage = Stage(
        "only",
        model.loss,
        lambda: model.samples,
        model.collate,
        "score",
        lr_scale=lambda p: 0.5 if p is head else 1.0,
    )
    model.stages = lambda: [stage]  # type: ignore[method-assign]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run(tmp_path, model=model, epochs=1, max_steps=1, lr=0.01, grad_clip=None)
    moved = {n: (p - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert moved["net.2.weight"] == pytest.approx(0.005, rel=1e-3)
    assert moved["net.0.weight"] == pytest.approx(0.01, rel=1e-3)
