"""What the frozen backbones under a prompt share: their compute precision and the cache
that carries a key/value prefix into every attention layer."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
from transformers import DynamicCache

from convrec.prompting.prefix import KeyValues

Precision = Literal["float32", "bfloat16"]


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    """bfloat16 autocast for a frozen backbone (prompt-side modules stay float32)."""
    if precision == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def prefix_cache(key_values: KeyValues, precision: Precision) -> DynamicCache:
    """A fresh cache holding the per-layer prefix (a forward mutates it: one per forward).

    The cache concatenates the prefix with the tokens' keys, so both get one dtype.
    """
    cache = DynamicCache()
    dtype = torch.bfloat16 if precision == "bfloat16" else None
    for layer, (key, value) in enumerate(key_values):
        cache.update(key.to(dtype), value.to(dtype), layer)
    return cache
