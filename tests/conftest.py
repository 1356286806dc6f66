"""Shared fixtures: real data lives in ../shared/data relative to the project root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a real dataset, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} does not exist")
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never write to the user's cache from tests."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CONVREC_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def one_torch_thread():
    """Tiny matrices: a second thread only adds synchronisation (and waits on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
