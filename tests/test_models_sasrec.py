"""The `sasrec` model on a small synthetic sequential dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convrec.config import ConfigError, resolve_config
from convrec.data.sequences import SeqSample
from convrec.data.tasks import SeqTask
from convrec.models.sasrec import NO_TARGET, SASRec, SASRecConfig
from convrec.registry import get_model
from tests.test_seq_task import sequential_dataset


@pytest.fixture(scope="module")
def task() -> SeqTask:
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 30, size=rng.integers(4, 20)).tolist() for _ in range(40)]
    return SeqTask(sequential_dataset(sequences, 30), train_positions="last")


def make(task: SeqTask, **options) -> SASRec:
    torch.manual_seed(0)
    options = {"hidden": 16, "num_heads": 2, "max_len": 8, **options}
    return SASRec(SASRecConfig(**options), task)


def sample(history: list[int], target: int = 0) -> SeqSample:
    return SeqSample(0, np.array(history, dtype=np.int64), target)


def test_registered_with_a_typed_config() -> None:
    assert get_model("sasrec") is SASRec
    with pytest.raises(ValueError, match="must divide hidden"):
        SASRecConfig(hidden=10, num_heads=3)
    config = resolve_config("sasrec", "movielens-100k", overrides=["model.hidden=32"])
    assert config.model.hidden == 32 and config.data.train_positions == "windows"
    with pytest.raises(ConfigError, match=r"model\.hiden"):
        resolve_config("sasrec", "movielens-100k", overrides=["model.hiden=32"])


def test_scores_the_catalogue_and_loss_is_per_sample(task) -> None:
    model = make(task)
    samples = list(task.train)[:6]
    assert model.recommend(model.collate(samples)).shape == (6, task.num_items)
    assert model.loss(model.training_batch(samples)).shape == (6,)


def test_loss_weighting_by_sample_or_by_position(task) -> None:
    samples = [sample([4, 5, 6, 7], 8), sample([9], 1)]  # 3 trained positions, then 1
    by_sample = make(task, max_len=3).eval()
    by_position = make(task, max_len=3, loss_weighting="position").eval()
    mean = by_sample.loss(by_sample.training_batch(samples))
    total = by_position.loss(by_position.training_batch(samples)) * 3  # max_len
    assert torch.allclose(total[0], mean[0] * 3) and torch.allclose(total[1], mean[1])


def test_training_batch_predicts_the_next_item_at_every_position(task) -> None:
    model = make(task, max_len=3)
    batch = model.training_batch([sample([4, 5, 6, 7], 8), sample([9], 1)])
    # window = last 4 of history + target; inputs are item tokens (item + 1, 0 = padding)
    assert batch["items"].tolist() == [[6, 7, 8], [0, 0, 10]]
    assert batch["next_items"].tolist() == [[6, 7, 8], [NO_TARGET, NO_TARGET, 1]]
    only_target = make(task, max_len=3, loss_positions="target")
    batch = only_target.training_batch([sample([4, 5, 6, 7], 8)])
    assert batch["next_items"].tolist() == [[NO_TARGET, NO_TARGET, 8]]
    last_two = make(task, max_len=3, loss_positions=2)
    batch = last_two.training_batch([sample([4, 5, 6, 7], 8), sample([9], 1)])
    assert batch["next_items"].tolist() == [[NO_TARGET, 7, 8], [NO_TARGET, NO_TARGET, 1]]
    with pytest.raises(ValueError, match="loss_positions"):
        SASRecConfig(loss_positions=0)
    # inference reads the history only, cut to max_len
    assert model.collate([sample([4, 5, 6, 7], 8)])["items"].tolist() == [[6, 7, 8]]


@pytest.mark.parametrize("layer_norm", ["pre", "post"])
def test_a_later_item_does_not_change_an_earlier_positions_output(task, layer_norm) -> None:
    model = make(task, layer_norm=layer_norm).eval()
    items = torch.tensor([[0, 0, 3, 9, 4, 12, 7, 2]])
    changed = items.clone()
    changed[0, 5] = 21
    with torch.no_grad():
        before, after = model.encode(items), model.encode(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


@pytest.mark.parametrize("layer_norm", ["pre", "post"])
def test_scores_do_not_depend_on_padding(task, layer_norm) -> None:
    model = make(task, layer_norm=layer_norm).eval()
    short, longest = sample([3, 4]), sample([1, 2, 5, 6, 7, 8, 9, 10])
    with torch.no_grad():
        alone = model.recommend(model.collate([short]))
        padded = model.recommend(model.collate([short, longest]))
    torch.testing.assert_close(alone[0], padded[0])


def test_training_steps_reduce_the_loss(task) -> None:
    model = make(task, dropout=0.0)
    batch = model.training_batch(list(task.train))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model.loss(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model.item_embedding.weight.grad[0].abs().sum() == 0  # padding never trains
