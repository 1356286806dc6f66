"""Run directories are shared and downloaded: hostile or broken run files must never run
code, and must end a command with one line `error: <file>: <what>` (exit 2), losing
nothing that was saved."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convrec.cli import app
from convrec.config import resolve_config
from convrec.data import files
from convrec.data.errors import DataFormatError
from convrec.evaluation.report import FORMAT
from convrec.training.checkpoint import load_checkpoint
from convrec.training.run import train
from tests.conftest import SMALL_KBRD_DEMO

runner = CliRunner()

# the chat/serve run's settings without its step and epoch caps
SMALL_DEMO = [
    *(o for o in SMALL_KBRD_DEMO if not o.startswith(("train.max_steps", "train.epochs"))),
    "train.patience=5",
]


class Payload:
    """Unpickling this runs `touch <marker>`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("runs") / "kbrd"
    config = resolve_config("kbrd", "demo", overrides=[*SMALL_DEMO, "train.epochs=2"])
    train(config, directory, progress=False)
    return directory


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, free to break."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and "Aborted" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def test_a_crafted_checkpoint_is_refused_by_every_loader_and_never_run(run, tmp_path):
    marker = tmp_path / "code-ran"
    for name, command in (
        ("checkpoints/last.pt", ["train", "--resume", str(run), "--no-progress"]),
        ("model.pt", ["evaluate", "--run", str(run)]),
        ("model.pt", ["chat", "--run", str(run)]),
    ):
        saved = (run / name).read_bytes()
        torch.save({"model": Payload(marker)}, run / name)
        result = runner.invoke(app, command, input="hello\n")
        one_error_line(result, f"{run / name}: refusing to load", "posix.system")
        assert not marker.exists(), f"{name} ran code ({command[0]})"
        (run / name).write_bytes(saved)
    # the best-weights file of an unfinished stage goes through the same loader
    torch.save({"model": Payload(marker)}, tmp_path / "best.pt")
    with pytest.raises(DataFormatError, match="refusing to load"):
        load_checkpoint(tmp_path / "best.pt")
    assert not marker.exists()


def test_a_real_checkpoint_loads_with_its_rng_states(finished):
    checkpoint = load_checkpoint(finished / "checkpoints" / "last.pt")
    assert set(checkpoint) >= {"model", "rng", "state"}
    assert checkpoint["rng"]["numpy"][0] == "MT19937"


@pytest.mark.parametrize("name", ["checkpoints/last.pt", "model.pt"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "directory"])
def test_a_damaged_weights_file_is_one_line(run, name, damage):
    path = run / name
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
    command = (
        ["train", "--resume", str(run), "--no-progress"]
        if name.startswith("checkpoints")
        else ["evaluate", "--run", str(run)]
    )
    expected = "is a directory" if damage == "directory" else "not a readable checkpoint"
    one_error_line(runner.invoke(app, command), f"{path}: {expected}")


def test_weights_that_do_not_fit_the_config_are_one_line(run):
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("dim: 16", "dim: 24", 1))
    one_error_line(
        runner.invoke(app, ["evaluate", "--run", str(run)]),
        f"{run / 'model.pt'}: the weights do not fit the run's model",
        "size mismatch",
    )


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--resume", "{run}", "--no-progress"],
        ["evaluate", "--run", "{run}"],
        ["compare", "{run}", "--label-by", "model.dim"],
    ],
)
def test_a_malformed_run_config_is_one_line(run, command):
    (run / "config.yaml").write_text("model_name: kbrd\ndataset: [demo\n")
    command = [part.format(run=run) for part in command]
    one_error_line(runner.invoke(app, command), f"{run / 'config.yaml'}, line 3: not valid YAML")
    (run / "config.yaml").write_bytes(b"model_name: kbrd\ndataset: \xff\n")
    one_error_line(runner.invoke(app, command), f"{run / 'config.yaml'}, line 2: not UTF-8")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "expected a JSON dict, found list"),
        ('{"test": "oops"}', "test: expected a list of results, found str"),
        ('{"test": ["oops"]}', "test[0]: expected a"),
        (json.dumps({"test": [{"format": FORMAT, "model": 1}]}), "test[0]: malformed"),
        ('{"test": [', "malformed JSON"),
        (b'{"run": "\xff"}', "not UTF-8"),
    ],
)
def test_metrics_of_the_wrong_shape_are_one_line_and_kept(run, content, expected):
    metrics = run / "metrics.json"
    data = content if isinstance(content, bytes) else content.encode()
    metrics.write_bytes(data)
    compared = runner.invoke(app, ["compare", str(run)])
    if "test[0]" in expected or "test:" in expected:
        one_error_line(compared, f"{metrics}, {expected}")
    else:
        one_error_line(compared, str(metrics), expected)
    evaluated = runner.invoke(app, ["evaluate", "--run", str(run)])
    if "test[0]" in expected:  # evaluate replaces the stored results: nothing to refuse
        assert evaluated.exit_code == 0, evaluated.output
    else:
        one_error_line(evaluated, str(metrics))
        assert metrics.read_bytes() == data  # not overwritten


def test_a_full_disk_keeps_the_previous_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full to produce a real ENOSPC")
    settings = [*SMALL_DEMO, "train.epochs=3"]
    reference = tmp_path / "reference"
    args = ["train", "--model", "kbrd", "--dataset", "demo", "--no-progress", *settings]
    assert runner.invoke(app, [*args, "--run-dir", str(reference)]).exit_code == 0

    saves = []
    real_mkstemp = files.tempfile.mkstemp

    def full_after_two_checkpoints(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        if ".last.pt." in name:
            saves.append(name)
            if len(saves) > 2:  # the disk fills up after two epochs
                os.close(fd)
                return os.open("/dev/full", os.O_WRONLY), name
        return fd, name

    monkeypatch.setattr(files.tempfile, "mkstemp", full_after_two_checkpoints)
    run = tmp_path / "run"
    result = runner.invoke(app, [*args, "--run-dir", str(run)])
    last = run / "checkpoints" / "last.pt"
    one_error_line(result, f"{last}: the disk is full; the previous version of the file is kept")
    assert load_checkpoint(last)["state"]["epoch"] == 2  # the second epoch's checkpoint
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(files.tempfile, "mkstemp", real_mkstemp)
    result = runner.invoke(app, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    finished, expected = (json.loads((d / "metrics.json").read_text()) for d in (run, reference))
    assert finished["step_losses"] == expected["step_losses"]
    assert finished["test"] == expected["test"]


def test_a_finished_run_is_not_overwritten_without_overwrite(run):
    before = (run / "metrics.json").read_bytes()
    args = ["train", "--model", "kbrd", "--dataset", "demo", "--no-progress", *SMALL_DEMO]
    result = runner.invoke(app, [*args, "train.max_steps=1", "--run-dir", str(run)])
    one_error_line(result, f"{run}: holds a finished run; pass --overwrite")
    assert (run / "metrics.json").read_bytes() == before

    (run / "model.pt").unlink()  # as if killed before the end
    result = runner.invoke(app, [*args, "train.max_steps=1", "--run-dir", str(run)])
    one_error_line(result, "holds an unfinished run", f"convrec train --resume {run}")

    result = runner.invoke(
        app, [*args, "train.max_steps=1", "train.epochs=1", "--run-dir", str(run), "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history) == 1  # the new run's, not the old one's two epochs
