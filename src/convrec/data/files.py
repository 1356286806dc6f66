"""Opening input files and writing output files so that every failure is one clear line.

Inputs: a missing file, a directory where a file belongs, a file we may not read and bytes
that are not UTF-8 are `DataFormatError`s naming the file (and the line, for text).
Outputs are written atomically (temp file, fsync, rename): a full disk or a kill during a
write leaves the previous file as it was, and a full disk is said in so many words.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from convrec.data.errors import DataFormatError


class FileWriteError(OSError):
    """An output file could not be written; the previous version of it is kept."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@contextmanager
def open_input(path: Path, *, binary: bool = False, newline: str | None = None) -> Iterator[IO]:
    """`path` opened for reading (UTF-8 text unless `binary`), failing with a clear message.

    A decoding error while the caller reads also becomes a `DataFormatError` with the line.
    """
    try:
        f = path.open("rb") if binary else path.open(encoding="utf-8", newline=newline)
    except FileNotFoundError:
        raise DataFormatError(path, "missing required file") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a directory, expected a file") from None
    except PermissionError:
        raise DataFormatError(path, "permission denied") from None
    with f:
        try:
            yield f
        except UnicodeDecodeError as e:
            raise DataFormatError(
                path, f"not UTF-8 text ({e.reason})", line=_line_of(path)
            ) from None


def _line_of(path: Path) -> int | None:
    """The 1-based line of the first bytes of `path` that are not UTF-8."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return data.count(b"\n", 0, e.start) + 1
    except OSError:
        pass
    return None


def read_bytes(path: Path) -> bytes:
    with open_input(path, binary=True) as f:
        return f.read()


def read_text(path: Path) -> str:
    """The whole file as text; bad bytes fail with the line they are on."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFormatError(path, f"not UTF-8 text ({e.reason})", line=line) from None


def write_atomic(path: Path, data: bytes | str | Callable[[IO[bytes]], None]) -> None:
    """Replace `path` by `data` (bytes, text written as UTF-8, or a function writing a
    binary stream) so that no reader ever sees half a file.

    The content is built in memory first, then written to a temporary file beside `path`,
    flushed to disk and renamed over it; on any failure the temporary file goes and the old
    `path` stays. A full disk (or quota) raises `FileWriteError` saying so.
    """
    if callable(data):
        buffer = io.BytesIO()
        data(buffer)
        payload: bytes | memoryview = buffer.getbuffer()
    else:
        payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_error(path: Path, error: OSError) -> FileWriteError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return FileWriteError(path, "the disk is full; the previous version of the file is kept")
    return FileWriteError(path, f"could not write ({error.strerror or error})")
