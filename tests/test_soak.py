"""The soak's short version: `bench.soak` holds a real server at saturation on loopback for a bounded
number of requests, and its checks must pass (the long run: `python -m bench.soak --model DIR`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_a_short_soak_sees_only_200_and_429_flat_memory_and_bounded_p99(llama_dir: Path):
    command = [sys.executable, "-m", "bench.soak", "--model", str(llama_dir), "--seconds", "300"]
    command += ["--windows", "8", "--warmup-windows", "5", "--window-requests", "300", "--items", "320"]
    command += ["--concurrency", "16", "--max-queue-items", "48"]
    # oneDNN caches a kernel per batch shape, up to 1024 of them, and resident memory rises until the
    # cache is full: a minute or two at the long soak's traffic. A small cache, and five windows of
    # warm-up (1,500 requests), let the caches and the allocator settle within this short run, so
    # that what grows after them is what the check is for.
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    verdict = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and all(verdict["checks"].values()), (verdict, result.stderr[-2000:])
    assert verdict["requests"] == 2400 and verdict["statuses"].get("429", 0) > 0  # overload ran too
