"""A parser for RecBole atomic files (`.inter`, `.item`, `.user`, `.kg`, `.link`).

An atomic file is tab-separated text whose first line types every column as `name:type`::

    user_id:token   item_id:token   rating:float    timestamp:float
    196             242             3               881250949

Types: `token` (a string id), `token_seq` (space-separated tokens), `float`, `float_seq`
(space-separated floats). Columns come back as

    token      -> numpy str array           (vectorised unique / sort / compare)
    float      -> float64 array
    token_seq  -> list of tuple[str, ...]    (empty tokens dropped, as RecBole does)
    float_seq  -> list of float64 arrays

Blank lines are skipped, but errors still give the line number in the file. Every malformed
input raises `DataFormatError` naming the file, the line and the column.

Speed: the row structure is checked on the raw bytes with numpy (tabs per line), after which
the whole body is split in one `str.split` and columns are strided slices of that list; no
Python code runs per line. 100k lines parse in a few tens of milliseconds.
"""

from __future__ import annotations

import codecs
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from convrec.data.errors import DataFormatError
from convrec.data.files import read_bytes

FieldType = Literal["token", "token_seq", "float", "float_seq"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
Column = np.ndarray | list

SEQ_SEPARATOR = " "


@dataclass(frozen=True)
class AtomicFile:
    """The typed columns of one atomic file; `lines[i]` is row i's 1-based line number."""

    path: Path
    types: dict[str, FieldType]  # every column of the header, in file order
    columns: dict[str, Column]  # the columns that were asked for
    lines: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.lines)

    def column(self, name: str, type_: FieldType | None = None) -> Column:
        """A column by name; a missing column or another type is a format error (line 1)."""
        if name not in self.types:
            raise DataFormatError(
                self.path,
                f"missing column {name!r} (the header has {', '.join(self.types)})",
                line=1,
                key=name,
            )
        if type_ is not None and self.types[name] != type_:
            raise DataFormatError(
                self.path,
                f"column {name!r} has type {self.types[name]!r}, expected {type_!r}",
                line=1,
                key=name,
            )
        if name not in self.columns:
            raise KeyError(f"column {name!r} of {self.path} was not requested when reading")
        return self.columns[name]

    def fail(self, row: int, field: str, problem: str) -> DataFormatError:
        """An error for data row `row` (0-based), located by its line in the file."""
        return DataFormatError(self.path, problem, line=int(self.lines[row]), key=field)


def read_atomic(path: str | Path, columns: Collection[str] | None = None) -> AtomicFile:
    """Parse the atomic file at `path`; convert only `columns` (all when None).

    Every row is checked for the right number of fields, also when the broken part is in a
    column nobody asked for: a misaligned file must not be half read.
    """
    path = Path(path)
    data = _read_bytes(path)
    head, _, body = data.partition(b"\n")
    if not head.strip():
        raise DataFormatError(path, "empty header: expected `name:type` columns", line=1)
    types = _parse_header(path, _decode(path, head, first_line=1))
    names = list(types)

    lines = _row_lines(path, body, names)
    text = _decode(path, body, first_line=2)
    if len(lines) != text.count("\n") + 1:  # blank lines to drop (rare)
        text = "\n".join(filter(None, text.split("\n")))
    flat = text.replace("\n", "\t").split("\t") if len(lines) else []

    wanted = set(names if columns is None else columns)
    parsed = AtomicFile(path, types, {}, lines)
    for j, name in enumerate(names):
        if name in wanted:
            parsed.columns[name] = _convert(parsed, name, flat[j :: len(names)])
    return parsed


# -- internals -------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """The file's bytes with a UTF-8 BOM, CRLF line ends and one final newline removed.

    A NUL byte is an error: numpy strings drop trailing NULs, so "7\\0" would silently
    become the token "7".
    """
    data = read_bytes(path).removeprefix(codecs.BOM_UTF8)
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise DataFormatError(path, "NUL byte (not allowed in an atomic file)", line=line)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data.removesuffix(b"\n")


def _decode(path: Path, data: bytes, first_line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise DataFormatError(path, f"not UTF-8 text ({e.reason})", line=line) from None


def _parse_header(path: Path, header: str) -> dict[str, FieldType]:
    types: dict[str, FieldType] = {}
    for column in header.split("\t"):
        name, sep, type_ = column.rpartition(":")
        if not sep or not name:
            raise DataFormatError(
                path,
                f"header column {column!r} has no type (expected name:type)",
                line=1,
                key=column,
            )
        if type_ not in FIELD_TYPES:
            raise DataFormatError(
                path,
                f"header column {column!r} has unknown type {type_!r} "
                f"(expected one of {', '.join(FIELD_TYPES)})",
                line=1,
                key=column,
            )
        if name in types:
            raise DataFormatError(path, f"duplicate header column {name!r}", line=1, key=name)
        types[name] = type_  # type: ignore[assignment]  (checked against FIELD_TYPES)
    return types


def _row_lines(path: Path, body: bytes, names: list[str]) -> np.ndarray:
    """Line numbers of the non-blank body lines, after checking each has len(names) fields.

    Works on bytes: tab and newline are single bytes in UTF-8, so counting them per line
    with numpy is exact and needs no per-line Python.
    """
    raw = np.frombuffer(body, dtype=np.uint8)
    ends = np.append(np.flatnonzero(raw == ord("\n")), len(raw))
    starts = np.concatenate(([0], ends[:-1] + 1))
    tabs = np.bincount(np.searchsorted(ends, np.flatnonzero(raw == ord("\t"))), minlength=len(ends))
    filled = ends > starts
    bad = np.flatnonzero(filled & (tabs != len(names) - 1))
    if len(bad):
        got = int(tabs[bad[0]]) + 1
        raise DataFormatError(
            path,
            f"expected {len(names)} tab-separated fields ({', '.join(names)}), found {got}",
            line=int(bad[0]) + 2,
            key=names[got] if got < len(names) else f"extra field {got}",
        )
    return np.flatnonzero(filled) + 2


def _convert(parsed: AtomicFile, name: str, raw: list[str]) -> Column:
    type_ = parsed.types[name]
    if type_ == "token":
        return np.asarray(raw, dtype=np.str_) if raw else np.empty(0, dtype=np.str_)
    if type_ == "float":
        return _floats(parsed, name, raw)
    seqs = [value.split(SEQ_SEPARATOR) for value in raw]
    if type_ == "token_seq":
        return [tuple(filter(None, seq)) for seq in seqs]
    return [_floats(parsed, name, list(filter(None, seq)), row=i) for i, seq in enumerate(seqs)]


def _floats(parsed: AtomicFile, name: str, raw: list[str], row: int | None = None) -> np.ndarray:
    """Parse floats as Python's float() does; on failure, name the first bad value."""
    try:
        return np.fromiter(map(float, raw), dtype=np.float64, count=len(raw))
    except ValueError:
        pass
    for i, value in enumerate(raw):
        try:
            float(value)
        except ValueError:
            if row is None:
                raise parsed.fail(i, name, f"value {value!r} is not a float") from None
            raise parsed.fail(
                row, name, f"value {i + 1} of the float sequence, {value!r}, is not a float"
            ) from None
    raise AssertionError("unreachable: float() failed above")
