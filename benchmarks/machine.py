"""What machine a benchmark ran on, in one line, for its record.

Timings on the project's machines differ by kind (an AMD EPYC with AVX2 only vs a CPU
with AVX512-BF16, where bfloat16 autocast is ~2x faster instead of ~20x slower), so every
record names the CPU and its widest vector extension, not just the core count.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (Linux; else unknown)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU", set()
    model, flags = "unknown CPU", set()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = " ".join(value.split())
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def vector_extension(flags: set[str]) -> str:
    """The widest vector extension that matters for our kernels."""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return "AVX512-BF16"
    if "avx512f" in flags:
        return "AVX512"
    if "avx2" in flags:
        return "AVX2"
    return "no AVX2"


def describe_machine() -> str:
    """e.g. 'x86_64, 2 cores, AMD EPYC, AVX2'."""
    model, flags = cpu_model_and_flags()
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}, {vector_extension(flags)}"


if __name__ == "__main__":
    print(describe_machine())
