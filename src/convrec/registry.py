"""Models and datasets by name, for the CLI and configs.

Models register with `@register_model`; dataset readers with
`convrec.data.datasets.register_reader`. A built-in model's module is imported when the
model is first asked for, so that serving a kbrd run never imports T5 or NLTK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from convrec.data.datasets import READERS, get_reader
from convrec.data.schema import TaskKind

if TYPE_CHECKING:  # models import this module to register; no import back at run time
    from convrec.models.base import ConvRecModel

M = TypeVar("M", bound="type[ConvRecModel]")

MODELS: dict[str, type[ConvRecModel]] = {}
# The built-in models and the modules that register them (imported on first use).
BUILTIN_MODELS = {
    "kbrd": "convrec.models.kbrd",
    "kp4sr": "convrec.models.kp4sr",
    "popularity": "convrec.models.popularity",
    "repeat": "convrec.models.popularity",
    "sasrec": "convrec.models.sasrec",
    "step": "convrec.models.step",
    "text": "convrec.models.text",
    "unicrs": "convrec.models.unicrs",
}

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
    if name not in MODELS and name in BUILTIN_MODELS:
        importlib.import_module(BUILTIN_MODELS[name])
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {model_names()}") from None


def model_names() -> list[str]:
    for module in sorted(set(BUILTIN_MODELS.values())):
        importlib.import_module(module)
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
