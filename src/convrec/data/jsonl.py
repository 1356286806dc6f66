"""JSON and JSON-lines input with errors that name the file, line and field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from convrec.data.errors import DataFormatError


def read_json(path: Path, expected: type) -> Any:
    """Parse a whole-file JSON document and check its top-level type."""
    try:
        with path.open(encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise DataFormatError(path, "missing required file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line = getattr(e, "lineno", None)
        raise DataFormatError(path, f"malformed JSON ({e})", line=line) from None
    if not isinstance(value, expected):
        raise DataFormatError(
            path, f"expected a JSON {expected.__name__}, found {type(value).__name__}"
        )
    return value


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed value) for each non-blank line."""
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "missing required file") from None
    with f:
        try:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(
                        path, f"malformed JSON line ({e.msg} at column {e.colno})", line=number
                    ) from None
        except UnicodeDecodeError as e:
            raise DataFormatError(path, f"not UTF-8 text ({e})") from None


def get_field(
    obj: Any, key: str, expected: type | tuple[type, ...], *, path: Path, line: int, where: str
) -> Any:
    """`obj[key]`, checked to exist and to have the expected type.

    `where` says which object inside the line is meant (e.g. "turn 3"), so the message
    reads "train.jsonl, line 12, turn 3.text: missing field (expected a string)".
    """
    names = {str: "a string", list: "a list", dict: "an object", int: "an integer"}
    if isinstance(expected, tuple):
        wanted = " or ".join(names.get(t, t.__name__) for t in expected)
    else:
        wanted = names.get(expected, expected.__name__)
    if not isinstance(obj, dict):
        raise DataFormatError(
            path, f"expected an object, found {type(obj).__name__}", line=line, key=where
        )
    if key not in obj:
        raise DataFormatError(
            path, f"missing field (expected {wanted})", line=line, key=f"{where}.{key}"
        )
    value = obj[key]
    if not isinstance(value, expected) or isinstance(value, bool):
        raise DataFormatError(
            path,
            f"expected {wanted}, found {type(value).__name__} {value!r:.60}",
            line=line,
            key=f"{where}.{key}",
        )
    return value
