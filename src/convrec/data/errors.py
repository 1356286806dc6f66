"""One error type for bad input files, so that every reader reports the same way."""

from __future__ import annotations

import reprlib
from pathlib import Path


class DataFormatError(ValueError):
    """A data file does not have the format its reader expects.

    The message always names the file, the place in it (line number or key) and what was
    expected, so that a user can open the file and fix it.
    """

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.key = key
        self.problem = problem
        where = str(self.path)
        if line is not None:
            where += f", line {line}"
        if key is not None:
            where += f", {key}"
        super().__init__(f"{where}: {problem}")


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is a file, else fail with a message saying what it should hold."""
    if path.is_dir():
        raise DataFormatError(path, f"is a directory, expected a file ({what})")
    if not path.is_file():
        raise DataFormatError(path, f"missing required file ({what})")
    return path


def optional_file(path: Path, what: str) -> Path | None:
    """`path` if it is a file, None if nothing is there; a directory in its place is an error
    (it is never silently skipped)."""
    if not path.exists() and not path.is_symlink():
        return None
    return require_file(path, what)


def parse_id(text: str) -> int | None:
    """The non-negative integer `text` spells in ASCII digits (at most 18, so it fits an
    int64), else None. `str.isdigit` alone also admits "²", which `int` rejects, and `int`
    refuses more than 4300 digits."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxstring = _SHORT.maxother = 60


def short_repr(value: object, width: int = 60) -> str:
    """`repr(value)` cut to `width` characters, also for values nested too deeply for
    `repr` (a pickle can hold a list inside a list a million times)."""
    return _SHORT.repr(value)[:width]
