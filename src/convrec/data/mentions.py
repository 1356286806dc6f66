"""Locating item mentions in text, so responses can have them masked with a slot token."""

from __future__ import annotations

from collections.abc import Iterable

from convrec.data.schema import Mention


def locate_mentions(text: str, names: Iterable[tuple[str, int]]) -> tuple[tuple[Mention, ...], int]:
    """Find each (surface name, item) case-insensitively in `text`.

    Each name claims its first occurrence that does not overlap an earlier claim, so a
    movie named twice is masked twice. Returns the mentions sorted by position and the
    number of names that could not be found (these stay unmasked; readers count them).
    """
    lowered = text.lower()
    claimed: list[Mention] = []
    missing = 0
    for name, item in names:
        needle = name.strip().lower()
        start = lowered.find(needle) if needle else -1
        while start >= 0 and any(start < m.end and start + len(needle) > m.start for m in claimed):
            start = lowered.find(needle, start + 1)
        if start < 0:
            missing += 1
            continue
        claimed.append(Mention(item=item, start=start, end=start + len(needle)))
    return tuple(sorted(claimed, key=lambda m: m.start)), missing
