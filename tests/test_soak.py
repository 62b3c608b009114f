"""The soak's short version: `bench.soak` holds a real server at saturation on loopback for a bounded
number of requests, and its checks must pass (the long run: `python -m bench.soak --model DIR`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.serial]


def test_a_short_soak_sees_only_200_and_429_flat_memory_and_bounded_p99(llama_dir: Path):
    command = [sys.executable, "-m", "bench.soak", "--model", str(llama_dir), "--seconds", "300"]
    command += ["--windows", "5", "--warmup-windows", "2", "--window-requests", "200", "--items", "320"]
    command += ["--concurrency", "16", "--max-queue-items", "48"]
    # Two windows of warm-up (400 requests) let the kernel caches (64 entries, `app.cli`) and the
    # allocator settle within this short run, so that what grows after them is what the check is for.
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    verdict = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and all(verdict["checks"].values()), (verdict, result.stderr[-2000:])
    assert verdict["requests"] == 1000 and verdict["statuses"].get("429", 0) > 0  # overload ran too
