"""Checkpoints that let a killed run continue to exactly the result it would have had.

A checkpoint holds the model, optimizer and scheduler states, every random generator's
state (python, numpy, torch) and the trainer's position (stage, epoch, step within the
epoch, early-stopping bookkeeping). Writes are atomic: a kill or a full disk during a save
leaves the previous checkpoint intact. Reads never execute code from the file: run
directories are shared and downloaded, so their checkpoints are untrusted input.
"""

from __future__ import annotations

import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convrec.data.errors import DataFormatError
from convrec.data.files import open_input, write_atomic


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_atomic(obj: Any, path: Path) -> None:
    """`torch.save` to `path` atomically; a full disk keeps the previous file and says so."""
    write_atomic(path, lambda stream: torch.save(obj, stream))


# What a checkpoint holds besides tensors and plain containers: numpy's RNG state (an
# ndarray of uint32). Nothing else is unpickled, so a crafted file cannot run code.
_numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
CHECKPOINT_GLOBALS = [
    np.ndarray,
    np.dtype,
    np.dtypes.UInt32DType,
    _numpy_core.multiarray._reconstruct,
]
_FORBIDDEN_GLOBAL = re.compile(r"GLOBAL (\S+)")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint or weights file (a dict holding at least a "model" state dict).

    Loaded with torch's weights-only unpickler and an allow-list of exactly the types our
    checkpoints hold; a file asking for anything else is refused before it can run, and a
    truncated or foreign file is a `DataFormatError` naming it.
    """
    try:
        with (
            open_input(path, binary=True) as f,
            torch.serialization.safe_globals(CHECKPOINT_GLOBALS),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            checkpoint = torch.load(f, map_location="cpu", weights_only=True)
    except DataFormatError:
        raise
    except pickle.UnpicklingError as e:
        found = _FORBIDDEN_GLOBAL.search(str(e))
        what = f"it asks for {found.group(1)}" if found else "it is not a torch.save file"
        raise DataFormatError(
            path,
            f"refusing to load: {what}; a convrec checkpoint holds only tensors, plain values "
            "and RNG states (nothing in the file was run)",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataFormatError(
            path, f"not a readable checkpoint: truncated or not written by torch.save ({problem})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise DataFormatError(path, "not a convrec checkpoint (expected a dict with 'model')")
    return checkpoint


def load_weights(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load the "model" state of the checkpoint at `path` into `model`; returns the file."""
    checkpoint = load_checkpoint(path)
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, ValueError) as e:
        detail = " ".join(str(e).split())
        raise DataFormatError(
            path, f"the weights do not fit the run's model (config changed?): {detail:.300}"
        ) from None
    return checkpoint
