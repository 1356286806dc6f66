"""Shared fixtures: real data lives in ../shared/data relative to the project root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from convrec.data.kg import KnowledgeGraph
from convrec.models.base import ConvRecModel, ModelConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def run_guard(script: str, timeout: float = 300) -> dict[str, Any]:
    """Run a scale guard's `script` in a fresh Python process (its own peak RSS, its own
    resource limits) from the project root; the JSON object on its last output line."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def shared_dataset(name: str) -> Path:
    """Path of a real dataset, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} does not exist")
    return path


def random_kg(
    seed: int = 0, entities: int = 60, relations: int = 6, triples: int = 900
) -> KnowledgeGraph:
    """Uniformly random (head, relation, tail) triples, every third entity an item;
    Freebase-style names (`m.07`, `r.type.rel2`). Duplicates and self-edges can occur."""
    rng = np.random.default_rng(seed)
    spo = np.stack(
        [
            rng.integers(0, entities, triples),
            rng.integers(0, relations, triples),
            rng.integers(0, entities, triples),
        ],
        axis=1,
    )
    return KnowledgeGraph(
        [f"m.{i:02d}" for i in range(entities)],
        [f"r.type.rel{r}" for r in range(relations)],
        spo,
        items=range(0, entities, 3),
    )


# A kbrd run on a small demo world, trained for a few steps: enough for chat and serve tests.
SMALL_KBRD_DEMO = [
    "data.options={num_movies: 60, num_dialogues: 160}",
    "model.dim=16",
    "model.attention_dim=16",
    "model.num_bases=2",
    "train.batch_size=16",
    "train.eval_batch_size=64",
    "train.max_steps=3",
    "train.epochs=1",
]


@pytest.fixture(scope="session")
def kbrd_demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kbrd-demo-cache")


@pytest.fixture(scope="session")
def kbrd_demo_run(tmp_path_factory: pytest.TempPathFactory, kbrd_demo_cache: Path) -> Path:
    """A finished kbrd run on the small demo world (chat and serve tests talk to it)."""
    from convrec.config import resolve_config
    from convrec.training.run import train

    directory = tmp_path_factory.mktemp("kbrd-demo-run") / "kbrd-demo"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVREC_CACHE_DIR", str(kbrd_demo_cache))
        train(resolve_config("kbrd", "demo", overrides=SMALL_KBRD_DEMO), directory, progress=False)
    return directory


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


class IndexRanker(ConvRecModel):
    """Test double: ranks the catalogue in index order (scores -position), trains nothing."""

    name = "index-ranker"
    description = "test double"
    Config = ModelConfig

    def collate(self, samples):
        return {"size": len(samples)}

    def recommend(self, batch):
        return -torch.arange(self.task.num_items, dtype=torch.float).expand(batch["size"], -1)
