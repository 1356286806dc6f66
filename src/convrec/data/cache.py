"""Cache of processed datasets, keyed by what they were built from.

The key is a fingerprint of the input files' bytes, the reader's name and version, and its
options. Changing any input file, bumping a reader's `version` or passing other options
gives a new key, so a stale cache is never read. Files are written atomically (temp file +
rename), so an interrupted write never leaves a half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from convrec.data.errors import DataFormatError
from convrec.data.safe_pickle import PLAIN_GLOBALS, load_restricted

T = TypeVar("T")

CACHE_ENV = "CONVREC_CACHE_DIR"

# What a cache file may contain: our own data classes, numpy arrays and plain containers.
CACHE_GLOBALS = PLAIN_GLOBALS | {
    ("convrec.data.schema", "ConversationDataset"),
    ("convrec.data.schema", "SequentialDataset"),
    ("convrec.data.schema", "Dialogue"),
    ("convrec.data.schema", "Turn"),
    ("convrec.data.schema", "Mention"),
    ("convrec.data.kg", "KnowledgeGraph"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
}


def default_cache_dir() -> Path:
    """`$CONVREC_CACHE_DIR`, else `~/.cache/convrec`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "convrec"


def fingerprint(files: Iterable[Path], *, namespace: str, options: Mapping[str, Any]) -> str:
    """sha256 over the files' names and bytes plus a namespace and JSON-able options."""
    digest = hashlib.sha256()
    digest.update(namespace.encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cached(path: Path, build: Callable[[], T]) -> T:
    """Load `path` if it exists and is readable, else build, save atomically and return."""
    if path.is_file():
        try:
            return load_restricted(path, CACHE_GLOBALS)
        except DataFormatError:
            pass  # unreadable (e.g. written by an incompatible version): rebuild it
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return value
