"""What the frozen backbones under a prompt share: their compute precision and the cache
that carries a key/value prefix into every attention layer."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
from transformers import DynamicCache

from convrec.prompting.prefix import KeyValues

Precision = Literal["float32", "bfloat16"]
PrecisionSetting = Literal["auto", "float32", "bfloat16"]


def native_bfloat16() -> bool:
    """Whether this machine computes bfloat16 in hardware: a CUDA GPU that supports it, or
    a CPU with AVX512-BF16 / AMX. Elsewhere autocast emulates it, and a bfloat16 matmul was
    measured 20x *slower* than float32 (2-core AMD EPYC with AVX2 only)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(setting: PrecisionSetting) -> Precision:
    """`auto`: bfloat16 where the hardware has it (about 2x faster), float32 elsewhere."""
    if setting == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return setting


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
