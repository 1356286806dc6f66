"""Serving trained models to people: a chat session that a terminal or a service drives.

May import the layers below it (data, models, training); nothing below imports it.
"""

from convrec.serving.session import ChatReply, ChatSession

__all__ = ["ChatReply", "ChatSession"]
