"""Which device and dtype a model runs on, resolved from `auto` the same way everywhere."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from reward_model.errors import CheckpointError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """`auto` picks the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available")
    return resolved


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags())


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it, fp16 on other GPUs, float32 on a CPU.

    On a CPU with native bf16, bf16 is faster but an item's reward then moves with the batch it is in
    (by a few percent of the reward's spread, measured in the README), which breaks the service's
    first promise; so there it is opt-in (`--dtype bfloat16`), and float32 is the default strict mode.
    """
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def member_devices(device: str, count: int) -> list[str]:
    """Spread `count` members round-robin across GPUs when `auto` and there are several."""
    if device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(count)]
    return [device] * count
