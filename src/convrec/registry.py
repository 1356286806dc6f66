"""Models and datasets by name, for the CLI and configs.

Models register with `@register_model`; dataset readers with
`convrec.data.datasets.register_reader`. Importing `convrec.models` registers every model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from convrec.data.datasets import READERS, get_reader
from convrec.data.schema import TaskKind

if TYPE_CHECKING:  # models import this module to register; no import back at run time
    from convrec.models.base import ConvRecModel

M = TypeVar("M", bound="type[ConvRecModel]")

MODELS: dict[str, type[ConvRecModel]] = {}

DATA_OF_KIND: dict[TaskKind, str] = {
    "conversational": "dialogues",
    "sequential": "per-user interaction sequences",
}


def register_model(cls: M) -> M:
    if cls.name in MODELS:
        raise ValueError(f"model {cls.name!r} registered twice")
    MODELS[cls.name] = cls
    return cls


def get_model(name: str) -> type[ConvRecModel]:
    import convrec.models  # noqa: F401  (registers the built-in models)

    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None


def model_names() -> list[str]:
    import convrec.models  # noqa: F401

    return sorted(MODELS)


def task_kinds(model: type[ConvRecModel]) -> tuple[TaskKind, ...]:
    """The kinds of task (dataset) a model can be trained and evaluated on."""
    return model.task_kinds


def check_task_kind(model_name: str, dataset_name: str) -> None:
    """Fail, naming both sides and the models that would fit, when a model cannot work on
    a dataset's kind of task. Uses the reader's declared kind: no data is read."""
    kind = get_reader(dataset_name).task_kind
    supported = task_kinds(get_model(model_name))
    if kind in supported:
        return
    fitting = [name for name in model_names() if kind in task_kinds(MODELS[name])]
    needs = " or ".join(f"{k} ({DATA_OF_KIND[k]})" for k in supported)
    raise ValueError(
        f"model {model_name!r} needs a {needs} dataset, but {dataset_name!r} is {kind} "
        f"({DATA_OF_KIND[kind]}); models for {kind} datasets: {', '.join(fitting) or 'none'}"
    )


__all__ = [
    "MODELS",
    "READERS",
    "check_task_kind",
    "get_model",
    "get_reader",
    "model_names",
    "register_model",
    "task_kinds",
]
