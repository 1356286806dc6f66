"""How a dialogue is written out as text for the language models.

One convention everywhere (the LM's pre-training corpus, prompt contexts, responses, the
sentence encoder's input): each turn is `"<Speaker>: <text>"`, with the speakers named as
UniCRS names them. Item mentions are rendered per `ItemMode` (`<movie>` slots for the LM,
titles for the sentence encoder, which knows words, not slots).
"""

from __future__ import annotations

from collections.abc import Iterable

from convrec.data.samples import ItemMode, render_response
from convrec.data.schema import Role, Turn

SPEAKERS: dict[Role, str] = {"seeker": "User", "recommender": "System"}


def speaker_prefix(role: Role) -> str:
    return f"{SPEAKERS[role]}: "


def render_turn(turn: Turn, item_mode: ItemMode = "text") -> str:
    return speaker_prefix(turn.role) + render_response(turn, item_mode)


def render_context(turns: Iterable[Turn], item_mode: ItemMode = "text", sep: str = " ") -> str:
    """The dialogue so far as one string, each turn prefixed by its speaker."""
    return sep.join(render_turn(turn, item_mode) for turn in turns)
