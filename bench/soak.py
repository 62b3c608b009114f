"""Soak: hold a real `reward-serve` at saturation on loopback, and watch what must not drift.

The run is a number of windows, each bounded by requests and by time; the first windows are warm-up.
Concurrent clients send a mix of `/score` (1 to 16 items), `/best-of-n` and `/get_reward` bodies of
the bundled HH-RLHF data, and honour `Retry-After` on a 429, as a well-behaved client does. The queue
is kept small, so the overload path runs too. Checked, each printed with its figure (exit 1 if one
fails):
- no status but 200 and an explicit 429 with Retry-After (no 5xx, no dropped connection);
- resident memory of the server grows less than 5% from the end of warm-up to the end;
- p99 latency stays bounded: no window's p99 is over 3x the median window's.
Ten minutes or more:  python -m bench.soak --model DIR --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.__main__ import hh_items
from bench.processes import free_port, start, stop

RSS_GROWTH_LIMIT = 0.05
P99_SPREAD_LIMIT = 3.0


@dataclass
class Window:
    """What one window of the soak saw."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ms = np.array(self.latencies) * 1000.0
        return {
            "requests": len(self.latencies),
            "statuses": dict(self.statuses),
            "requests_per_s": round(len(self.latencies) / self.seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "rss_mb": round(self.rss_mb, 1),
        }


def bodies(count: int) -> list[tuple[str, bytes]]:
    """A fixed mix of request paths and bodies over the bundled data."""
    items = hh_items(count)
    mix: list[tuple[str, dict[str, Any]]] = []
    for i in range(0, len(items) - 16, 16):
        chunk = items[i : i + 16]
        mix.append(("/score", {"items": chunk[: 1 + i % 16]}))
        mix.append(
            ("/best-of-n", {"prompt": chunk[0]["prompt"], "responses": [c["response"] for c in chunk[:4]]})
        )
        texts = [f"\n\nHuman: {c['prompt'][-1]['content']}\n\nAssistant: {c['response']}" for c in chunk[:8]]
        mix.append(("/get_reward", {"query": texts}))
    return [(path, json.dumps(body).encode()) for path, body in mix]


async def run_window(
    client: httpx.AsyncClient, mix: Any, concurrency: int, requests: int, seconds: float
) -> Window:
    window, left, deadline = Window(), requests, time.perf_counter() + seconds
    started = time.perf_counter()

    async def client_loop() -> None:
        nonlocal left
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            path, body = next(mix)
            sent = time.perf_counter()
            try:
                response = await client.post(path, content=body, headers={"content-type": "application/json"})
                status = str(response.status_code)
                if status == "429" and "retry-after" not in response.headers:
                    status = "429 without Retry-After"
            except httpx.HTTPError as exc:
                response, status = None, type(exc).__name__
            window.latencies.append(time.perf_counter() - sent)
            window.statuses[status] += 1
            if response is not None and status == "429":
                await asyncio.sleep(float(response.headers["retry-after"]))

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    window.seconds = time.perf_counter() - started
    return window


async def soak(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    server = psutil.Process(pid)
    mix = cycle(bodies(args.items))
    windows = []
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:
        for _ in range(args.windows):
            seconds = args.seconds / args.windows
            window = await run_window(client, mix, args.concurrency, args.window_requests, seconds)
            window.rss_mb = server.memory_info().rss / 2**20
            windows.append(window)
            print(json.dumps(window.summary()), file=sys.stderr, flush=True)
    return verdict(windows, args.warmup_windows)


def verdict(windows: list[Window], warmup: int) -> dict[str, Any]:
    """The checks over the windows after warm-up, with their figures."""
    steady = windows[warmup:]
    statuses: Counter[str] = sum((w.statuses for w in windows), Counter())
    unexpected = {s: n for s, n in statuses.items() if s not in ("200", "429")}
    growth = steady[-1].rss_mb / windows[warmup - 1].rss_mb - 1.0
    p99s = [float(np.percentile(w.latencies, 99)) * 1000.0 for w in steady]
    spread = max(p99s) / statistics.median(p99s)
    return {
        "windows": [w.summary() for w in windows],
        "requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "rss_mb_after_warmup": round(windows[warmup - 1].rss_mb, 1),
        "rss_mb_at_end": round(steady[-1].rss_mb, 1),
        "rss_growth": round(growth, 4),
        "p99_ms_median_window": round(statistics.median(p99s), 1),
        "p99_ms_worst_window": round(max(p99s), 1),
        "checks": {
            "only 200 and 429 with Retry-After": not unexpected,
            f"memory grows less than {RSS_GROWTH_LIMIT:.0%}": growth < RSS_GROWTH_LIMIT,
            f"p99 within {P99_SPREAD_LIMIT:g}x of the median window": spread <= P99_SPREAD_LIMIT,
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Start a server on a free loopback port, soak it, print the verdict as JSON, exit 1 on a failure."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint or ensemble directory to serve")
    parser.add_argument("--seconds", type=float, default=600.0, help="time bound of the whole run")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--window-requests", type=int, default=10**9, help="request bound of a window")
    parser.add_argument("--warmup-windows", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--items", type=int, default=2000, help="HH-RLHF items the request mix is cut from")
    parser.add_argument(
        "--max-queue-items", type=int, default=96, help="the server's queue: small, so 429s happen"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.warmup_windows < args.windows:
        parser.error("--warmup-windows must leave at least one window after warm-up")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as work:
        command = [sys.executable, "-m", "app", "--model", args.model, "--port", str(port)]
        command += ["--max-queue-items", str(args.max_queue_items), "--log-level", "warning"]
        process = start(command, url, Path(work) / "server.log")
        try:
            result = asyncio.run(soak(url, process.pid, args))
        finally:
            stop(process)
    print(json.dumps(result))
    sys.exit(0 if all(result["checks"].values()) else 1)


if __name__ == "__main__":
    main()
