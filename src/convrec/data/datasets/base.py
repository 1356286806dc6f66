"""The reader base class and the dataset registry.

A reader turns one published format into the data model of `convrec.data.schema`. It says
which files it reads (they fingerprint the cache) and how to parse them; `load` adds the
cache. Readers register by name so the CLI and configs can refer to them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from convrec.data.cache import cached, default_cache_dir, fingerprint
from convrec.data.errors import DataFormatError, optional_file, require_file
from convrec.data.jsonl import iter_json_lines
from convrec.data.schema import (
    SPLITS,
    ConversationDataset,
    Dialogue,
    SequentialDataset,
    TaskKind,
)

Dataset = ConversationDataset | SequentialDataset

log = logging.getLogger("convrec.data")


class DatasetReader(ABC):
    """Reads one dataset format from `data_dir` into the data model.

    Subclasses set `name` (registry key), `version` (bump whenever the produced data can
    change: it invalidates every cached copy), `description`, `task_kind` (what `read`
    returns: dialogues or sequences, known before reading so that a model/dataset mismatch
    fails at once), and implement `input_files` and `read`.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    description: ClassVar[str]
    task_kind: ClassVar[TaskKind]
    needs_data_dir: ClassVar[bool] = True

    def __init__(self, data_dir: str | Path | None = None, **options: Any) -> None:
        if self.needs_data_dir:
            if data_dir is None:
                raise ValueError(f"dataset {self.name!r} needs --data-dir (its directory)")
            data_dir = Path(data_dir)
            if not data_dir.is_dir():
                raise DataFormatError(data_dir, f"not a directory (expected the {self.name} files)")
        self.data_dir = Path(data_dir) if data_dir is not None else None
        unknown = set(options) - set(self.default_options())
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for dataset {self.name!r}; "
                f"allowed: {sorted(self.default_options())}"
            )
        self.options = {**self.default_options(), **options}

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {}

    @abstractmethod
    def input_files(self) -> list[Path]:
        """Every file `read` uses; fails with DataFormatError when a required one is missing."""

    @abstractmethod
    def read(self) -> Dataset:
        """Parse the files (no cache)."""

    def cache_key(self) -> str:
        return fingerprint(
            self.input_files(), namespace=f"{self.name}/v{self.version}", options=self.options
        )

    def load(self, cache_dir: str | Path | None = None, use_cache: bool = True) -> Dataset:
        if not use_cache:
            dataset = self.read()
        else:
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            path = root / "datasets" / f"{self.name}-{self.cache_key()[:24]}.pkl"
            dataset = cached(path, self.read)
        self.warn_about(dataset)
        return dataset

    def warn_about(self, dataset: Dataset) -> None:  # noqa: B027 (a hook; default: silent)
        """Log what is legal but probably not meant (also when served from the cache)."""


class ConversationReader(DatasetReader):
    """Shared by the dialogue formats: one file per split, any subset of splits present.

    Option `split_files` ({split: file name in the data directory}) reads exactly those
    files as those splits instead of every `split_file` present, e.g.
    `data.options.split_files.train=valid_data.jsonl` to train on the one ReDial file
    shipped in ../shared/data (with `data.valid_fraction` / `data.test_fraction` holding
    validation and test dialogues out of it: `convrec.data.splits`).
    """

    split_file: ClassVar[str]  # e.g. "{split}_data.jsonl"
    task_kind: ClassVar[TaskKind] = "conversational"

    def __init__(self, data_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        files = self.options["split_files"]
        if not isinstance(files, dict) or not all(
            split in SPLITS and isinstance(name, str) and name for split, name in files.items()
        ):
            raise ValueError(
                f"data.options.split_files must map splits ({', '.join(SPLITS)}) to file "
                f"names in the data directory, not {files!r}"
            )
        if len(set(files.values())) != len(files):
            raise ValueError(f"data.options.split_files names one file for two splits: {files}")

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {"split_files": {}}

    def split_paths(self) -> dict[str, Path]:
        assert self.data_dir is not None
        named = self.options["split_files"]
        if named:
            return {
                split: require_file(self.data_dir / named[split], f"the {split} dialogues")
                for split in SPLITS
                if split in named
            }
        found = {}
        for split in SPLITS:
            path = optional_file(self.data_dir / self.split_file.format(split=split), "dialogues")
            if path is not None:
                found[split] = path
        if not found:
            expected = ", ".join(self.split_file.format(split=s) for s in SPLITS)
            raise DataFormatError(
                self.data_dir, f"missing required file: none of {expected} is present"
            )
        return found

    def warn_about(self, dataset: Dataset) -> None:
        assert isinstance(dataset, ConversationDataset)
        paths = self.split_paths()
        for split, dialogues in dataset.splits.items():
            if not dialogues:
                log.warning(
                    "%s: no dialogues in this file (split %r is empty)", paths[split], split
                )

    def read_splits(
        self, parse: Callable[[str, Path, int, Any, Counter[str]], Dialogue]
    ) -> tuple[dict[str, tuple[Dialogue, ...]], dict[str, dict[str, int]]]:
        """Parse each split file line by line into dialogues, with per-split counters.

        `parse(split, path, line, raw, counts)` turns one JSON line into a `Dialogue` and
        counts what it dropped in `counts`.
        """
        splits: dict[str, tuple[Dialogue, ...]] = {}
        counters: dict[str, dict[str, int]] = {}
        for split, path in self.split_paths().items():
            counts: Counter[str] = Counter()
            splits[split] = tuple(
                parse(split, path, line, raw, counts) for line, raw in iter_json_lines(path)
            )
            counters[split] = dict(counts)
        return splits, counters


READERS: dict[str, type[DatasetReader]] = {}


def register_reader(cls: type[DatasetReader]) -> type[DatasetReader]:
    if cls.name in READERS:
        raise ValueError(f"dataset reader {cls.name!r} registered twice")
    READERS[cls.name] = cls
    return cls


def get_reader(name: str) -> type[DatasetReader]:
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(READERS)}") from None


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    **options: Any,
) -> Dataset:
    """Read dataset `name` from `data_dir` (cached). Options are the reader's own."""
    return get_reader(name)(data_dir, **options).load(cache_dir=cache_dir, use_cache=use_cache)
