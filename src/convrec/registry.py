"""Models and datasets by name, for the CLI and configs.

Models register with `@register_model`; dataset readers with
`convrec.data.datasets.register_reader`. Importing `convrec.models` registers every model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from convrec.data.datasets import READERS, get_reader

if TYPE_CHECKING:  # models import this module to register; no import back at run time
    from convrec.models.base import ConvRecModel

M = TypeVar("M", bound="type[ConvRecModel]")

MODELS: dict[str, type[ConvRecModel]] = {}


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


__all__ = ["MODELS", "READERS", "get_model", "get_reader", "model_names", "register_model"]
