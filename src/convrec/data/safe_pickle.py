"""Unpickling with an allow-list, for pickles we did not write ourselves.

`pickle.load` runs whatever a file asks for; a KG pickle downloaded from the internet must
not be able to do that. `load_plain_pickle` admits only builtin containers, ints and
strings (KGSF's `subkg.pkl` also uses `collections.defaultdict(list)`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from convrec.data.errors import DataFormatError
from convrec.data.files import open_input

PLAIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "int"),
        ("builtins", "str"),
        ("collections", "defaultdict"),
        ("collections", "OrderedDict"),
        # Python 2 pickles name the builtins module differently.
        ("__builtin__", "dict"),
        ("__builtin__", "list"),
        ("__builtin__", "set"),
        ("__builtin__", "int"),
        ("__builtin__", "str"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    pass


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise UnsafePickleError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def load_restricted(path: Path, allowed: frozenset[tuple[str, str]]) -> Any:
    """Unpickle `path`, admitting only the (module, name) globals in `allowed`."""
    try:
        with open_input(path, binary=True) as f:
            return _AllowListUnpickler(f, allowed).load()
    except DataFormatError:
        raise
    except UnsafePickleError as e:
        raise DataFormatError(
            path, f"unsafe pickle: {e} (only builtin containers, ints and strings are allowed)"
        ) from None
    # What damaged opcodes raise: a pop from an empty stack (IndexError), a memo slot never
    # set (KeyError), a wrong operand type, ...
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        detail = f"missing memo entry {e}" if isinstance(e, KeyError) else str(e)
        raise DataFormatError(path, f"not a readable pickle ({detail:.80})") from None
    except RecursionError:
        raise DataFormatError(path, "not a readable pickle (nested too deeply)") from None
    except (MemoryError, OverflowError):  # a corrupt length field: "read 2**60 bytes"
        raise DataFormatError(
            path, "not a readable pickle (it declares an object too large to allocate)"
        ) from None


def load_plain_pickle(path: Path) -> Any:
    return load_restricted(path, PLAIN_GLOBALS)
