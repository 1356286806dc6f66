"""A run: resolved config -> data -> model -> trainer -> test evaluation, in `runs/<id>/`.

runs/<id>/
  config.yaml        the resolved config (the run can be rebuilt from it alone)
  train.log          what the trainer logged
  metrics.json       validation history, per-step losses, test results, data fingerprint
  report.md          the test tables (each protocol of the task, with baselines)
  model.pt           the selected weights (best on validation)
  checkpoints/       last.pt (resumable) and best.pt (during a stage)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from convrec.config import RunConfig
from convrec.data.datasets import get_reader
from convrec.data.datasets.base import Dataset
from convrec.data.errors import DataFormatError
from convrec.data.files import write_atomic
from convrec.data.jsonl import read_json
from convrec.data.schema import ConversationDataset, SequentialDataset
from convrec.data.tasks import EmptySplitError, RecTask, SeqTask, Task
from convrec.evaluation.conversation import conversation_markdown, conversation_metrics
from convrec.evaluation.recommendation import METRIC_MATRIX, rank_targets, validation_metrics
from convrec.evaluation.report import (
    REFERENCE_ROWS,
    RecommendationResult,
    from_json,
    markdown_table,
    recommendation_result,
    to_json,
)
from convrec.models.base import ConvRecModel
from convrec.registry import check_task_kind, get_model, task_kinds
from convrec.training.checkpoint import load_weights, save_atomic, seed_everything
from convrec.training.distributed import DistContext
from convrec.training.trainer import Trainer

log = logging.getLogger("convrec.train")

BASELINES = ("popularity", "repeat")  # in every results table of a task kind they support


def new_run_dir(config: RunConfig, root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{config.model_name}-{config.dataset}-s{config.seed}-{stamp}"


def make_task(dataset: Dataset, config: RunConfig) -> Task:
    """The task a dataset poses: next-item prediction for sequences, else dialogue turns."""
    if isinstance(dataset, SequentialDataset):
        return SeqTask(
            dataset,
            max_items=config.data.max_items,
            train_positions=config.data.train_positions,
            window_stride=config.data.window_stride,
            seed=config.seed,
        )
    return RecTask(dataset, train_turns=config.data.train_turns)


class BuiltTask(NamedTuple):
    task: Task
    fingerprint: str  # of the files and reader options, and of the hold-out when there is one
    held_out: dict[str, dict[str, Any]]  # split -> how it was carved (HoldOut.apply)


def build_task(config: RunConfig) -> BuiltTask:
    """The dataset (cached) as a recommendation task, its fingerprint, and what was held out.

    Splits the files lack are held out of train as `config.data` says (logged; the
    fingerprint then names the hold-out). Fails here, before anything is built or trained,
    when the train or test split (or a validation split) holds no samples, naming the
    settings that were involved.
    """
    check_task_kind(config.model_name, config.dataset)
    reader = get_reader(config.dataset)(config.data_dir, **config.data.options)
    dataset = reader.load()
    data_fingerprint = reader.cache_key()
    carved: dict[str, dict[str, Any]] = {}
    if isinstance(dataset, ConversationDataset):
        holdout = config.data.holdout()
        dataset, carved = holdout.apply(dataset)
        data_fingerprint = holdout.fingerprint(data_fingerprint, carved)
    task = make_task(dataset, config)
    needed = ["train", "valid", "test"]
    if isinstance(task, RecTask):
        if "test" not in task.dataset.splits:
            raise EmptySplitError(
                f"dataset {config.dataset!r} has no test split (it has "
                f"{', '.join(task.dataset.splits)}); hold test dialogues out of train with "
                "data.test_fraction=0.2, or add the test file"
            )
        if "valid" not in task.dataset.splits:
            if get_model(config.model_name).has_stages():
                raise EmptySplitError(
                    f"dataset {config.dataset!r} has no validation split (it has "
                    f"{', '.join(task.dataset.splits)}) and data.valid_fraction=0; "
                    f"{config.model_name} selects its weights on validation, never on test"
                )
            needed.remove("valid")  # a count baseline needs none
    try:
        task.require_samples(needed)
    except EmptySplitError as e:
        settings = [f"data.options.{k}={v!r}" for k, v in config.data.options.items()]
        settings += [f"data.{s}_fraction={how['fraction']}" for s, how in carved.items()]
        source = (
            f"the settings {', '.join(settings)}" if settings else f"the files in {config.data_dir}"
        )
        raise EmptySplitError(f"{e}; check {source}") from None
    return BuiltTask(task, data_fingerprint, carved)


def resolve_backbones(config: RunConfig, *, progress: bool = True) -> RunConfig:
    """The config with `model.lm: pretrained` replaced by the cached compact LM's directory.

    The LM is pre-trained on the run's dataset with `model.compact_lm` settings when the
    cache does not hold it yet (deterministic: the same settings give the same LM).
    """
    if getattr(config.model, "lm", None) is None:  # no LM: transformers is not imported
        return config
    from convrec.text.lm import PRETRAINED_LM
    from convrec.training.lm_pretrain import CorpusSource, pretrain_lm

    if config.model.lm != PRETRAINED_LM or not getattr(config.model, "uses_lm", True):
        return config
    settings = config.model.compact_lm  # type: ignore[attr-defined]
    sources = [
        CorpusSource(
            config.dataset, config.data_dir, dict(config.data.options), config.data.holdout()
        ),
        *(CorpusSource.extra(corpus) for corpus in settings.corpora),
    ]
    path = pretrain_lm(sources, settings, progress=progress)
    model = config.model.model_copy(update={"lm": str(path)})
    return dataclasses.replace(config, model=model)


def build_model(config: RunConfig, task: Task, *, progress: bool = True) -> ConvRecModel:
    config = resolve_backbones(config, progress=progress)
    seed_everything(config.seed)  # the same initial weights on every process
    return get_model(config.model_name)(config.model, task)


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("convrec")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


RUN_FILES = ("config.yaml", "train.log", "metrics.json", "report.md", "model.pt", "checkpoints")


class RunExistsError(ValueError):
    """A new run was asked to write into a directory that holds another run."""


def check_new_run_dir(run_dir: Path, *, overwrite: bool = False) -> list[Path]:
    """The run files in `run_dir` that a new run would replace; refuses unless `overwrite`.

    A finished run is never silently replaced, and an unfinished one can be resumed.
    """
    if not run_dir.exists():
        return []
    if not run_dir.is_dir():
        raise RunExistsError(f"{run_dir}: exists and is not a directory")
    present = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    if present and not overwrite:
        if (run_dir / "model.pt").exists():
            raise RunExistsError(
                f"{run_dir}: holds a finished run; pass --overwrite to replace it, or choose "
                "another --run-dir"
            )
        raise RunExistsError(
            f"{run_dir}: holds an unfinished run; continue it with `convrec train --resume "
            f"{run_dir}`, or pass --overwrite to start again"
        )
    return present


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def train(
    config: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run and evaluate it on the test split; returns metrics.json.

    A new run refuses a directory holding another run unless `overwrite`; everything that
    can fail on the data (a missing or empty split) fails before the directory is touched.
    """
    check_task_kind(config.model_name, config.dataset)  # before the run directory exists
    dist = dist or DistContext()
    replaced = [] if resume else check_new_run_dir(run_dir, overwrite=overwrite)
    task, fingerprint, held_out = build_task(config)
    dist.barrier()  # every process has looked at the directory before it changes
    if dist.is_main:
        _remove(replaced)
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")
    dist.barrier()
    handler = _log_to(run_dir / "train.log") if dist.is_main else None
    try:
        if dist.is_main:  # one process pre-trains a missing LM; the others then find it cached
            resolve_backbones(config, progress=progress)
        dist.barrier()
        model = build_model(config, task, progress=progress)
        trainer = Trainer(
            model,
            config.train,
            seed=config.seed,
            checkpoint_dir=run_dir / "checkpoints",
            validate=lambda m: validation_metrics(m, task, config.train.eval_batch_size),
            dist=dist,
            progress=progress,
        )
        log.info(
            "run %s: %s on %s, seed %d",
            run_dir.name,
            config.model_name,
            config.dataset,
            config.seed,
        )
        for split, how in held_out.items():
            log.info(
                "%s has no %s file: %d of the training file's dialogues held out as %s "
                "(data.%s_fraction=%s, data.split_seed=%d)",
                config.dataset,
                split,
                how["dialogues"],
                split,
                split,
                how["fraction"],
                how["seed"],
            )
        started = time.perf_counter()
        state = trainer.fit(resume=resume)
        seconds = time.perf_counter() - started
        if not dist.is_main:
            return {}
        save_atomic(
            {"model": model.state_dict(), "config": config.to_dict(), "fingerprint": fingerprint},
            run_dir / "model.pt",
        )
        metrics = {
            "run": run_dir.name,
            "model": config.model_name,
            "dataset": config.dataset,
            "seed": config.seed,
            "data_fingerprint": fingerprint,
            "held_out": held_out,
            "lm": getattr(model.config, "lm", None),
            "train_seconds_this_process": round(seconds, 2),
            "resumed": resume,
            "history": state.history,
            "step_losses": state.step_losses,
        }
        write_metrics(run_dir, metrics)
        return evaluate(run_dir, task=task, model=model, progress=progress)
    finally:
        if handler is not None:
            logging.getLogger("convrec").removeHandler(handler)
            handler.close()


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run's metrics.json ({} before training has finished), checked to be an object
    whose `test` (when present) is a list of results; else a DataFormatError naming it."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return {}
    metrics = read_json(path, dict)
    test = metrics.get("test")
    if test is not None and not isinstance(test, list):
        raise DataFormatError(
            path, f"expected a list of results, found {type(test).__name__}", key="test"
        )
    return metrics


def write_metrics(run_dir: Path, metrics: dict[str, Any], name: str = "metrics.json") -> None:
    write_atomic(run_dir / name, json.dumps(metrics, indent=2) + "\n")


def _recorded_backbones(config: RunConfig, run_dir: Path) -> RunConfig:
    """Use the LM directory the run trained with when it is still there (another cache
    directory, or a moved cache, would otherwise mean pre-training it again)."""
    if getattr(config.model, "lm", None) is None:
        return config
    from convrec.text.lm import PRETRAINED_LM

    if config.model.lm != PRETRAINED_LM:
        return config
    recorded = read_metrics(run_dir).get("lm")
    if not isinstance(recorded, str) or not Path(recorded).is_dir():
        return config
    return dataclasses.replace(config, model=config.model.model_copy(update={"lm": recorded}))


def load_run(run_dir: Path) -> tuple[RunConfig, Task, ConvRecModel]:
    """Rebuild a trained run's model with its selected weights."""
    config = RunConfig.load(run_dir / "config.yaml")
    weights = run_dir / "model.pt"
    if not weights.exists():
        raise ValueError(f"{run_dir}: no model.pt (training has not finished; use --resume)")
    task = build_task(config).task
    config = _recorded_backbones(config, run_dir)
    model = build_model(config, task)
    load_weights(model, weights)
    model.eval()
    return config, task, model


def split_results(
    model: ConvRecModel,
    name: str,
    task: Task,
    config: RunConfig,
    fingerprint: str | None,
    split: str = "test",
) -> list[RecommendationResult]:
    """Metrics on `split` under each of the task's protocols, with the metrics of its kind."""
    return [
        recommendation_result(
            rank_targets(
                model, task, task.eval_samples(split, protocol), config.train.eval_batch_size
            ),
            model=name,
            dataset=config.dataset,
            split=split,
            protocol=protocol,
            protocol_description=description,
            seed=config.seed,
            dataset_fingerprint=fingerprint,
            metric_matrix=METRIC_MATRIX[task.kind],
        )
        for protocol, description in task.protocols.items()
    ]


def baseline_results(
    task: Task, config: RunConfig, fingerprint: str | None, split: str = "test"
) -> list[RecommendationResult]:
    """The baselines of the task's kind on the same samples: a table is read against them."""
    results = []
    for name in BASELINES:
        if name == config.model_name or task.kind not in task_kinds(get_model(name)):
            continue
        baseline = get_model(name)(get_model(name).Config(), task)
        baseline.fit()
        results += split_results(baseline, name, task, config, fingerprint, split)
    return results


# Where `evaluate` writes each split's results. Validation results go to their own files, so
# that metrics.json (what tables and `convrec compare` read) only ever holds test results.
EVALUATION_FILES = {
    "test": ("metrics.json", "report.md"),
    "valid": ("valid_metrics.json", "valid_report.md"),
}


def evaluate(
    run_dir: Path,
    *,
    split: str = "test",
    task: Task | None = None,
    model: ConvRecModel | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics on `split` (every protocol, 95% bootstrap CIs; responses of a model that
    can respond) into the split's files (EVALUATION_FILES); returns what was written.

    The test split's results join the run's metrics.json. The validation split's go to
    valid_metrics.json: what a choice between runs (a setting, a backbone) is made on.
    """
    if split not in EVALUATION_FILES:
        raise ValueError(f"split must be one of {', '.join(EVALUATION_FILES)}, not {split!r}")
    metrics_file, report_file = EVALUATION_FILES[split]
    config = RunConfig.load(run_dir / "config.yaml")
    run_metrics = read_metrics(run_dir)  # before the model: a broken file is not overwritten
    if task is None or model is None:
        config, task, model = load_run(run_dir)
    fingerprint = run_metrics.get("data_fingerprint")
    if not isinstance(fingerprint, str):
        fingerprint = None
    metrics = run_metrics if split == "test" else {"run": run_dir.name, "split": split}
    results = split_results(model, config.model_name, task, config, fingerprint, split)
    results += baseline_results(task, config, fingerprint, split)
    metrics[split] = [to_json(r) for r in results]
    report = (
        f"# {config.model_name} on {config.dataset} (seed {config.seed}), {split} split\n\n"
        + markdown_table(results, reference_rows=REFERENCE_ROWS)
        + "\n"
    )
    if model.can_respond and isinstance(task, RecTask):
        started = time.perf_counter()
        conversation = conversation_metrics(model, task, split, progress=progress)
        conversation["seconds"] = round(time.perf_counter() - started, 1)
        metrics["conversation"] = conversation
        report += "\n## Conversation\n\n" + conversation_markdown(config.model_name, conversation)
    write_metrics(run_dir, metrics, metrics_file)
    write_atomic(run_dir / report_file, report)
    return metrics


def run_results(run_dir: Path) -> list[RecommendationResult]:
    """The test results stored in a run's metrics.json."""
    path = run_dir / "metrics.json"
    if not path.exists():
        raise ValueError(f"{run_dir}: no metrics.json (not a finished run)")
    stored = read_metrics(run_dir).get("test")
    if not stored:
        raise ValueError(f"{run_dir}: metrics.json has no test results; run `convrec evaluate`")
    results = []
    for k, record in enumerate(stored):
        try:
            results.append(from_json(record))
        except ValueError as e:
            raise DataFormatError(path, str(e), key=f"test[{k}]") from None
    return results


def compare_results(
    run_dirs: list[Path], label_by: list[str] | None = None
) -> tuple[list[list[RecommendationResult]], list[str | None]]:
    """Each run's results and its label (`run_labels`), for `compare_table`.

    The shared baselines every run carries are kept once (from the first run that has
    them), in a group of their own without a label: they do not depend on the variant.
    """
    seen: set[tuple[str, str, str, str]] = set()
    groups: list[list[RecommendationResult]] = []
    labels: list[str | None] = []
    for run_dir, label in zip(run_dirs, run_labels(run_dirs, label_by or []), strict=True):
        own, baselines = [], []
        for result in run_results(run_dir):
            key = (result.model, result.dataset, result.split, result.protocol)
            if result.model not in BASELINES:
                own.append(result)
            elif key not in seen:
                seen.add(key)
                baselines.append(result)
        groups += [own, baselines]
        labels += [label, None]
    return groups, labels


_ABSENT = object()  # a setting a run's config does not have


def run_labels(run_dirs: list[Path], settings: list[str]) -> list[str | None]:
    """Each run's values of the dotted `settings` (e.g. `model.knowledge`) as `name=value`,
    so a comparison can tell variants of one model apart; a run whose config lacks a
    setting (another model) just gets no part for it."""
    if not settings:
        return [None] * len(run_dirs)
    configs = [RunConfig.load(run_dir / "config.yaml").to_dict() for run_dir in run_dirs]
    found: set[str] = set()
    labels: list[str | None] = []
    for config in configs:
        parts = []
        for setting in settings:
            node: Any = config
            for key in setting.split("."):
                node = node.get(key, _ABSENT) if isinstance(node, dict) else _ABSENT
            if node is not _ABSENT:
                found.add(setting)
                value = str(node).lower() if isinstance(node, bool) else node
                parts.append(f"{setting.rsplit('.', 1)[-1]}={value}")
        labels.append(", ".join(parts) or None)
    missing = [s for s in settings if s not in found]
    if missing:
        raise ValueError(f"label setting {missing[0]!r}: no run's config.yaml has it")
    return labels
