"""Training through the CLI on a small demo world: determinism, kill-and-resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convrec.cli import app
from tests.conftest import PROJECT_ROOT

runner = CliRunner()

SMALL_DEMO = [
    "data.options={num_movies: 60, num_dialogues: 160}",
    "model.dim=32",
    "model.attention_dim=32",
    "model.num_bases=2",
    "train.batch_size=16",
    "train.eval_batch_size=64",
]


def train_args(run_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "kbrd",
        "--dataset",
        "demo",
        "--run-dir",
        str(run_dir),
        "--no-progress",
        *SMALL_DEMO,
        *extra,
    ]


def read_test_metrics(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["test"]


def cli_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "CONVREC_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


def test_models_lists_every_model():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"popularity", "repeat", "kbrd", "text"} <= set(names)


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    for name in ("a", "b"):
        result = runner.invoke(app, train_args(tmp_path / name, "train.epochs=2"))
        assert result.exit_code == 0, result.output
    first, second = read_test_metrics(tmp_path / "a"), read_test_metrics(tmp_path / "b")
    assert first == second
    assert {r["model"] for r in first} == {"kbrd", "popularity", "repeat"}
    assert {r["protocol"]["name"] for r in first} == {"standard", "strict"}
    report = (tmp_path / "a" / "report.md").read_text()
    assert "protocol `strict`" in report and "bootstrap" in report
    for name in ("config.yaml", "train.log", "model.pt", "checkpoints/last.pt"):
        assert (tmp_path / "a" / name).is_file()

    # evaluate re-computes the same numbers from the saved run; compare tabulates runs
    result = runner.invoke(app, ["evaluate", "--run", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert read_test_metrics(tmp_path / "a") == first
    result = runner.invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--aggregate-seeds"]
    )
    assert result.exit_code == 0, result.output
    assert "kbrd" in result.stdout and "repeat" in result.stdout
    # rows labelled by a config setting; the shared baselines stay unlabelled
    labelled = ["compare", str(tmp_path / "a"), "--label-by", "train.epochs"]
    result = runner.invoke(app, labelled)
    assert result.exit_code == 0, result.output
    assert "| kbrd (epochs=2) |" in result.stdout and "| repeat |" in result.stdout
    result = runner.invoke(app, [*labelled, "--label-by", "model.no_such_setting"])
    assert result.exit_code == 2
    assert "'model.no_such_setting': no run's config.yaml has it" in result.output


def test_bad_override_and_resume_without_run(tmp_path):
    result = runner.invoke(app, train_args(tmp_path / "x", "train.lrr=1"))
    assert result.exit_code == 2 and "unknown key 'train.lrr'" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "missing run config" in result.output


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_metrics(tmp_path):
    env = cli_env(tmp_path / "cache")
    command = [sys.executable, "-m", "convrec"]
    settings = ["train.epochs=3", "train.checkpoint_every=1", "train.patience=5"]
    subprocess.run(
        [*command, *train_args(tmp_path / "full", *settings)],
        env=env,
        check=True,
        capture_output=True,
        cwd=PROJECT_ROOT,
    )

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, *train_args(killed, *settings)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=PROJECT_ROOT,
    )
    checkpoint = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    steps = 0
    while steps < 12 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        try:
            state = torch.load(checkpoint, weights_only=False)["state"]
            steps = len(state["step_losses"])
        except (FileNotFoundError, EOFError, RuntimeError):
            continue
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()  # it really was cut short

    subprocess.run(
        [*command, "train", "--resume", str(killed), "--no-progress"],
        env=env,
        check=True,
        capture_output=True,
        cwd=PROJECT_ROOT,
    )
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["step_losses"] == full["step_losses"]
    timing = {"train_seconds", "samples_per_s"}

    def untimed(history):
        return [{k: v for k, v in row.items() if k not in timing} for row in history]

    assert untimed(resumed["history"]) == untimed(full["history"])
    assert resumed["test"] == full["test"]


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_trajectory(tmp_path):
    env = cli_env(tmp_path / "cache")
    settings = ["train.epochs=2", "model.dropout=0.0", "train.batch_size=32"]
    subprocess.run(
        [sys.executable, "-m", "convrec", *train_args(tmp_path / "one", *settings)],
        env=env,
        check=True,
        capture_output=True,
        cwd=PROJECT_ROOT,
    )
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "convrec",
    ]
    result = subprocess.run(
        [*launch, *train_args(tmp_path / "two", *settings)],
        env=env,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert len(one["step_losses"]) == len(two["step_losses"]) > 10
    assert two["step_losses"] == pytest.approx(one["step_losses"], rel=1e-4, abs=1e-5)
    for a, b in zip(one["test"], two["test"], strict=True):
        for metric, value in a["metrics"].items():
            assert b["metrics"][metric]["mean"] == pytest.approx(value["mean"], abs=0.02)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("{test_fraction: 0}", "data.options.test_fraction=0"),
        ("{num_dialogues: 1}", "data.options.num_dialogues=1"),
    ],
)
def test_a_split_without_samples_fails_before_training(tmp_path, options, named):
    run = tmp_path / "run"
    result = runner.invoke(app, [*train_args(run), f"data.options={options}"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: dataset 'demo': the ") and named in result.stderr
    assert "has no samples under the standard protocol" in result.stderr
    assert not run.exists()  # nothing trained, nothing written


def test_a_model_that_trains_needs_a_validation_split(tmp_path):
    from tests.test_redial import tiny_redial

    root = tiny_redial(tmp_path / "redial")  # a test split only
    (root / "train_data.jsonl").write_text((root / "test_data.jsonl").read_text())
    args = ["train", "--dataset", "redial", "--data-dir", str(root), "--no-progress"]
    kbrd = [*args, "--model", "kbrd", "--run-dir", str(tmp_path / "k")]
    result = runner.invoke(app, [*kbrd, "data.valid_fraction=0"])
    assert result.exit_code == 2, result.output
    assert "has no validation split (it has train, test) and data.valid_fraction=0" in (
        result.stderr
    )
    assert not (tmp_path / "k").exists()
    # One training dialogue: 10% of it holds out nothing, and the error says which setting.
    result = runner.invoke(app, kbrd)
    assert result.exit_code == 2, result.output
    assert "the valid split has no samples" in result.stderr
    assert "data.valid_fraction=0.1" in result.stderr
    assert not (tmp_path / "k").exists()
