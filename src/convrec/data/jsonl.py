"""JSON and JSON-lines input with errors that name the file, line and field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from convrec.data.errors import DataFormatError
from convrec.data.files import open_input


def read_json(path: Path, expected: type) -> Any:
    """Parse a whole-file JSON document and check its top-level type."""
    try:
        with open_input(path) as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"malformed JSON ({e.msg})", line=e.lineno) from None
    except DataFormatError:  # not UTF-8 (a ValueError too)
        raise
    except (ValueError, RecursionError) as e:
        raise DataFormatError(path, f"unreadable JSON ({_decode_problem(e)})") from None
    if not isinstance(value, expected):
        raise DataFormatError(
            path, f"expected a JSON {expected.__name__}, found {type(value).__name__}"
        )
    return value


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed value) for each non-blank line."""
    with open_input(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    path, f"malformed JSON line ({e.msg} at column {e.colno})", line=number
                ) from None
            except (ValueError, RecursionError) as e:
                raise DataFormatError(
                    path, f"unreadable JSON line ({_decode_problem(e)})", line=number
                ) from None


def _decode_problem(error: ValueError | RecursionError) -> str:
    """What json.loads hit besides a syntax error: an integer with more digits than Python
    converts (ValueError) or nesting deeper than the recursion limit."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return str(error).split(":")[0]


def get_field(
    obj: Any, key: str, expected: type | tuple[type, ...], *, path: Path, line: int, where: str
) -> Any:
    """`obj[key]`, checked to exist and to have the expected type.

    `where` says which object inside the line is meant (e.g. "turn 3"), so the message
    reads "train.jsonl, line 12, turn 3.text: missing field (expected a string)".
    """
    wanted = _describe(expected)
    if not isinstance(obj, dict):
        raise DataFormatError(
            path, f"expected an object, found {type(obj).__name__}", line=line, key=where
        )
    if key not in obj:
        raise DataFormatError(
            path, f"missing field (expected {wanted})", line=line, key=f"{where}.{key}"
        )
    value = obj[key]
    _check_type(value, expected, path=path, line=line, key=f"{where}.{key}")
    return value


def get_list(
    obj: Any,
    key: str,
    item: type | tuple[type, ...],
    *,
    path: Path,
    line: int,
    where: str,
    required: bool = True,
) -> list[Any]:
    """`obj[key]` checked to be a list whose every element has type `item`; an optional
    field that is absent is an empty list."""
    if not required and isinstance(obj, dict) and key not in obj:
        return []
    values = get_field(obj, key, list, path=path, line=line, where=where)
    for k, value in enumerate(values):
        _check_type(value, item, path=path, line=line, key=f"{where}.{key}[{k}]")
    return values


_NAMES = {str: "a string", list: "a list", dict: "an object", int: "an integer"}


def _describe(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(_NAMES.get(t, t.__name__) for t in expected)
    return _NAMES.get(expected, expected.__name__)


def _check_type(
    value: Any, expected: type | tuple[type, ...], *, path: Path, line: int, key: str
) -> None:
    if not isinstance(value, expected) or isinstance(value, bool):
        raise DataFormatError(
            path,
            f"expected {_describe(expected)}, found {type(value).__name__} {value!r:.60}",
            line=line,
            key=key,
        )
