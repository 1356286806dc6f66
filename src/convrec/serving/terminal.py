"""Text made safe to print on a terminal.

What a user types (piped or pasted), what a model generates and what a dataset calls an
item all reach stdout. Escape sequences in them could recolour the terminal, rewrite its
title, move the cursor over earlier lines or (OSC 52) fill the clipboard, so they are
removed, as are the other control characters and the bidirectional overrides that make
text read differently from what it is. Newlines and tabs are kept.
"""

from __future__ import annotations

import re

_ESCAPE_SEQUENCE = re.compile(
    r"""
    (?: \x1b\[ | \x9b ) [0-?]* [ -/]* [@-~]            # CSI: colours, cursor, erase
  | (?: \x1b[]P^_X] | [\x90\x98\x9d-\x9f] ) .*? (?: \x07 | \x1b\\ | \x9c | $ )
                                                      # OSC, DCS, PM, APC, SOS strings
  | \x1b [ -/]* [0-~]?                                # other escapes (and a lone ESC)
    """,
    re.VERBOSE | re.DOTALL,
)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` without escape sequences, control characters or bidi overrides."""
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))
