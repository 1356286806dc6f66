"""One error type for bad input files, so that every reader reports the same way."""

from __future__ import annotations

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
