"""Our engines side by side: each engine and dtype offline (its own process) and served, same items.

Variants whose engine is not installed here (the vLLM engine needs `make test-vllm`'s .venv-vllm)
are skipped and say so. The CPU's model and whether it computes bf16 natively go with the figures.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reward_model.devices import cpu_flags, cpu_has_native_bf16

REPO = Path(__file__).resolve().parent.parent
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

VARIANTS: dict[str, tuple[str, list[str]]] = {
    # name: (engine, flags shared by bench.offline and reward-serve)
    "transformers-eager-float32": ("transformers", ["--dtype", "float32", "--compile", "off"]),
    "transformers-compiled-float32": ("transformers", ["--dtype", "float32", "--compile", "on"]),
    "transformers-eager-bfloat16": ("transformers", ["--dtype", "bfloat16", "--compile", "off"]),
    "transformers-compiled-bfloat16": ("transformers", ["--dtype", "bfloat16", "--compile", "on"]),
    "vllm-float32": ("vllm", ["--dtype", "float32"]),
    "vllm-bfloat16": ("vllm", ["--dtype", "bfloat16"]),
}
DEFAULT_VARIANT = "transformers-eager-float32"
"""What `reward-serve` runs on a CPU with its default settings."""


def python_for(engine: str) -> Path | None:
    """The interpreter that has the engine installed, or None."""
    if engine == "vllm":
        return VLLM_PYTHON if VLLM_PYTHON.exists() else None
    return Path(sys.executable)


def serve_flags(name: str) -> list[str]:
    """reward-serve flags of a variant."""
    engine, flags = VARIANTS[name]
    return ["--engine", engine, *flags]


def offline(
    name: str, model: str, items_path: Path, seconds: float, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """A variant's offline figures (`extra`: more `bench.offline` flags), measured in a process of its own."""
    engine, flags = VARIANTS[name]
    python = python_for(engine)
    if python is None:
        return {"skipped": f"{engine} engine not installed (make test-vllm builds .venv-vllm)"}
    command = [str(python), "-m", "bench.offline", model, str(items_path), "--engine", engine, *flags]
    result = subprocess.run(
        [*command, "--seconds", str(seconds), *extra], capture_output=True, text=True, cwd=REPO, timeout=1800
    )
    if result.returncode != 0:
        return {"skipped": f"failed: {result.stderr.strip()[-500:]}"}
    # vLLM logs to stdout too: the figures are the last line that is a JSON object.
    line = next(x for x in reversed(result.stdout.splitlines()) if x.startswith("{"))
    return dict(json.loads(line))


def direct_singles(model: str, items_path: Path, count: int = 200) -> float:
    """p50 ms of a direct forward of each of the first `count` items, alone, in a fresh process of the
    default variant (what reward-serve runs): the one-client target's baseline."""
    figures = offline(DEFAULT_VARIANT, model, items_path, 0, ["--singles", str(count)])
    if "skipped" in figures:
        raise RuntimeError(f"direct single-item forwards: {figures['skipped']}")
    return float(figures["single_item_p50_ms"])


def fastest_again(
    offline_figures: dict[str, Any], model: str, items_path: Path, seconds: float
) -> dict[str, Any]:
    """The fastest offline variant of each dtype, measured once more after the served loads: a served
    figure is then compared with the mean of a baseline before it and one after it."""
    again = {}
    for dtype in ("float32", "bfloat16"):
        if any(k.endswith(dtype) and "items_per_s" in v for k, v in offline_figures.items()):
            name, _ = fastest(offline_figures, dtype)
            print(f"offline again: {name} ...", flush=True)
            again[name] = offline(name, model, items_path, seconds)
    return again


def cpu_facts() -> dict[str, Any]:
    """The CPU the figures come from."""
    name = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "model": name,
        "machine": platform.machine(),
        "avx512f": "avx512f" in flags,
        "native_bf16": cpu_has_native_bf16(),
        "amx": "amx_tile" in flags,
    }


def fastest(offline_figures: dict[str, Any], dtype: str) -> tuple[str, float]:
    """The fastest measured offline variant of a dtype: the hardware limit as far as we know it."""
    measured = {
        name: figures["items_per_s"]
        for name, figures in offline_figures.items()
        if name.endswith(dtype) and "items_per_s" in figures
    }
    best = max(measured, key=measured.__getitem__)
    return best, measured[best]
