"""Serving trained models to people: a chat session that a terminal or a service drives.

May import the layers below it (data, models, training); nothing below imports it. The
session (and the model code behind it) loads on first use, so that `convrec.serving.terminal`
stays a light import for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convrec.serving.session import ChatReply, ChatSession

__all__ = ["ChatReply", "ChatSession"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from convrec.serving import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
