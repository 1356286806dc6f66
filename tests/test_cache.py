from __future__ import annotations

import os
import pickle
import shutil

import pytest

from convrec.data.datasets import load_dataset
from convrec.data.datasets.inspired import InspiredReader
from tests.conftest import shared_dataset
from tests.test_inspired import write_unicrs


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    root = write_unicrs(tmp_path / "d")
    first = InspiredReader(root).load(cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "datasets").glob("inspired-*.pkl"))) == 1

    def fail(self):
        raise AssertionError("read() must not run when the cache is valid")

    monkeypatch.setattr(InspiredReader, "read", fail)
    second = InspiredReader(root).load(cache_dir=tmp_path / "cache")
    assert second.splits == first.splits and second.kg == first.kg
    assert second.item_titles == first.item_titles and second.counters == first.counters


def test_changed_input_file_invalidates_the_cache(tmp_path):
    root = write_unicrs(tmp_path / "d")
    cache = tmp_path / "cache"
    before = InspiredReader(root).load(cache_dir=cache)
    (root / "item_ids.json").write_text("[0, 1]")
    after = InspiredReader(root).load(cache_dir=cache)
    assert before.kg.num_items == 1 and after.kg.num_items == 2
    assert len(list((cache / "datasets").glob("inspired-*.pkl"))) == 2


def test_a_corrupt_cache_file_is_rebuilt(tmp_path):
    root = write_unicrs(tmp_path / "d")
    cache = tmp_path / "cache"
    InspiredReader(root).load(cache_dir=cache)
    (path,) = (cache / "datasets").glob("inspired-*.pkl")
    path.write_bytes(b"not a pickle")
    assert InspiredReader(root).load(cache_dir=cache).kg.num_items == 1


def test_a_cache_file_carrying_code_is_not_run_and_is_rebuilt(tmp_path):
    root = write_unicrs(tmp_path / "d")
    cache = tmp_path / "cache"
    InspiredReader(root).load(cache_dir=cache)
    (path,) = (cache / "datasets").glob("inspired-*.pkl")
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Payload()))
    assert InspiredReader(root).load(cache_dir=cache).kg.num_items == 1
    assert not marker.exists()


def test_reader_version_is_part_of_the_key(tmp_path, monkeypatch):
    root = write_unicrs(tmp_path / "d")
    key = InspiredReader(root).cache_key()
    monkeypatch.setattr(InspiredReader, "version", InspiredReader.version + 1)
    assert InspiredReader(root).cache_key() != key


def test_unknown_dataset_and_option(tmp_path):
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        load_dataset("nope", tmp_path)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]"):
        load_dataset("inspired", write_unicrs(tmp_path / "d"), colour="red")


@pytest.mark.real_data
def test_cached_inspired_equals_fresh_read(tmp_path):
    root = tmp_path / "inspired"
    shutil.copytree(shared_dataset("inspired"), root)
    fresh = InspiredReader(root).read()
    InspiredReader(root).load(cache_dir=tmp_path / "cache")
    again = InspiredReader(root).load(cache_dir=tmp_path / "cache")
    assert again.splits == fresh.splits and again.kg == fresh.kg
