"""Sequential runs end to end: train / evaluate / compare, resume, and model-kind checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convrec.cli import app
from convrec.config import resolve_config
from convrec.models.sasrec import SASRec
from convrec.training.run import train
from tests.conftest import shared_dataset
from tests.test_movielens import INTER_HEADER, ITEM_HEADER, write

runner = CliRunner()

SMALL_SASREC = [
    "model.hidden=16",
    "model.max_len=10",
    "data.max_items=10",
    "train.batch_size=8",
    "train.eval_batch_size=64",
]


def recbole_slice(root: Path, num_users: int = 30, num_items: int = 25) -> Path:
    """A small RecBole dataset: users walk through items in steps, so order matters."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for user in range(1, num_users + 1):
        item = int(rng.integers(1, num_items + 1))
        for time in range(int(rng.integers(5, 15))):
            rows.append(f"{user}\t{item}\t4\t{time}")
            item = item % num_items + int(rng.integers(1, 3))
    write(root / "ml-100k.inter", INTER_HEADER, *rows)
    items = [f"{i}\tFilm {i}\t1990\tDrama" for i in range(1, num_items + 1)]
    write(root / "ml-100k.item", ITEM_HEADER, *items)
    return root


def train_args(run_dir: Path, data_dir: Path, model: str = "sasrec", *extra: str) -> list[str]:
    settings = SMALL_SASREC if model == "sasrec" else []
    return [
        "train",
        *("--model", model, "--dataset", "movielens-100k", "--data-dir", str(data_dir)),
        *("--run-dir", str(run_dir), "--no-progress"),
        *settings,
        *extra,
    ]


def test_sasrec_and_popularity_runs_evaluate_and_compare(tmp_path) -> None:
    data = recbole_slice(tmp_path / "data")
    result = runner.invoke(app, train_args(tmp_path / "sasrec", data, "sasrec", "train.epochs=2"))
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, train_args(tmp_path / "pop", data, "popularity"))
    assert result.exit_code == 0, result.output

    for run in ("sasrec", "pop"):
        for name in ("config.yaml", "metrics.json", "report.md", "model.pt"):
            assert (tmp_path / run / name).is_file()
    metrics = json.loads((tmp_path / "sasrec" / "metrics.json").read_text())
    assert [r["model"] for r in metrics["test"]] == ["sasrec", "popularity"]  # no `repeat`
    assert {r["protocol"]["name"] for r in metrics["test"]} == {"leave-one-out"}
    assert {r["num_samples"] for r in metrics["test"]} == {30}  # every user has >= 5 items
    assert set(metrics["test"][0]["metrics"]) == {
        f"{m}@{k}" for m in ("hr", "ndcg") for k in (5, 10, 20)
    }
    assert len(metrics["history"]) == 2 and "valid/ndcg@10" in metrics["history"][0]
    report = (tmp_path / "sasrec" / "report.md").read_text()
    assert "| popularity |" in report and "HR@10" in report and "NDCG@5" in report

    # evaluate recomputes the same numbers from the saved run; compare shows both runs
    result = runner.invoke(app, ["evaluate", "--run", str(tmp_path / "sasrec")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "sasrec" / "metrics.json").read_text())["test"] == metrics["test"]
    result = runner.invoke(app, ["compare", str(tmp_path / "sasrec"), str(tmp_path / "pop")])
    assert result.exit_code == 0, result.output
    assert "| sasrec |" in result.stdout and result.stdout.count("| popularity |") == 1
    assert "HR@10" in result.stdout


def test_interrupted_run_with_random_positions_resumes_to_the_same_result(
    tmp_path, monkeypatch
) -> None:
    data = recbole_slice(tmp_path / "data")
    overrides = [*SMALL_SASREC, "data.train_positions=random", "train.epochs=3"]
    overrides += ["train.checkpoint_every=1", "train.patience=5"]
    config = resolve_config("sasrec", "movielens-100k", data, overrides=overrides)
    full = train(config, tmp_path / "full", progress=False)

    original = SASRec.training_batch
    calls = 0

    def fail_in_the_second_epoch(self, samples):
        nonlocal calls
        calls += 1
        if calls == 6:  # 4 batches an epoch (30 users, batch 8): mid-way through epoch 2
            raise KeyboardInterrupt
        return original(self, samples)

    monkeypatch.setattr(SASRec, "training_batch", fail_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(SASRec, "training_batch", original)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed["step_losses"] == full["step_losses"]
    assert resumed["test"] == full["test"]


def test_model_and_dataset_of_different_kinds_fail_clearly(tmp_path) -> None:
    result = runner.invoke(app, train_args(tmp_path / "run", tmp_path, "kbrd"))
    assert result.exit_code == 2
    assert (
        "model 'kbrd' needs a conversational (dialogues) dataset, but 'movielens-100k' is "
        "sequential (per-user interaction sequences); models for sequential datasets: "
        in result.output
    )
    listed = {w.strip(",") for w in result.output.split("sequential datasets: ")[1].split()}
    assert {"popularity", "sasrec"} <= listed and "kbrd" not in listed
    assert not (tmp_path / "run").exists()  # nothing was started
    result = runner.invoke(
        app, ["train", "--model", "sasrec", "--dataset", "demo", "--run-dir", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    assert "model 'sasrec' needs a sequential" in result.output
    assert "'demo' is conversational" in result.output and "kbrd" in result.output


@pytest.mark.real_data
def test_sasrec_trains_on_movielens_100k(tmp_path) -> None:
    root = shared_dataset("movielens-100k")
    extra = ["train.epochs=1", "train.max_steps=2", "train.batch_size=64"]
    result = runner.invoke(app, train_args(tmp_path / "run", root, "sasrec", *extra))
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert [r["model"] for r in test] == ["sasrec", "popularity"]
    assert {r["num_samples"] for r in test} == {943}
    popularity = test[1]["metrics"]
    assert 0.0 < popularity["hr@10"]["mean"] < 0.2  # sanity: better than chance, not magic
