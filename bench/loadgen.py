"""Load generator, run as its own process: N concurrent clients, bounded in time and request count.

Bodies are encoded once up front so that the generator spends as little of the machine's CPU as it can.
Only loopback URLs are accepted. Prints one JSON object with throughput, latency percentiles and errors.
Run: python -m bench.loadgen URL BODIES.json CONCURRENCY SECONDS MAX_REQUESTS
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np


def load(
    url: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
    seconds: float,
    work: Path,
    max_requests: int = 100000,
) -> dict[str, float]:
    """Run the load generator in its own process and return its figures."""
    path = work / "bodies.json"
    path.write_text(json.dumps(bodies))
    command = [sys.executable, "-m", "bench.loadgen", url, str(path), str(concurrency), str(seconds)]
    result = subprocess.run(
        [*command, str(max_requests)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=seconds + 300,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def check_loopback(url: str) -> None:
    """Refuse any target that is not this machine."""
    host = urlparse(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise SystemExit(f"loadgen: refusing non-loopback target {host!r}")


async def run(
    url: str,
    bodies: list[bytes],
    items_per_body: list[int],
    concurrency: int,
    seconds: float,
    max_requests: int,
) -> dict[str, float]:
    """Send requests until the time or count bound; return the figures."""
    latencies: list[float] = []
    items = 0
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # A request may wait behind every other client's: 64 clients of a 3 s item is over three minutes on
    # a slow CPU. A timeout shorter than that counts work the server did as errors (the run is still
    # bounded: the deadline, then at most one timeout).
    async with httpx.AsyncClient(timeout=600.0, limits=limits) as client:

        async def worker(offset: int) -> None:
            nonlocal items, errors, sent
            index = offset
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = bodies[index % len(bodies)]
                started = time.perf_counter()
                try:
                    response = await client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                if ok:
                    items += items_per_body[index % len(bodies)]
                else:
                    errors += 1
                index += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "items": items,
        "errors": errors,
        "seconds": elapsed,
        "items_per_s": items / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def main() -> None:
    """Entry point."""
    url, bodies_path, concurrency, seconds, max_requests = sys.argv[1:6]
    check_loopback(url)
    with open(bodies_path, encoding="utf-8") as fh:
        payload = json.load(fh)
    bodies = [json.dumps(b).encode() for b in payload]
    # Items per body: ours ("items", "responses", OpenRLHF's "query"), vLLM /classify ("input"),
    # infinity /rerank ("documents").
    keys = ("items", "responses", "query", "input", "documents")
    sizes = [len(next((b[k] for k in keys if b.get(k)), [])) for b in payload]
    result = asyncio.run(run(url, bodies, sizes, int(concurrency), float(seconds), int(max_requests)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
