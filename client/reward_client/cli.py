"""`reward-client score IN.jsonl OUT.jsonl --url URL [--url URL ...]`: score a file against live servers.

Each input line is an item (`{"prompt", "response"}` or `{"messages"}`; other fields are carried
through). Each output line is the input line with `reward` (and `std`) added, in input order. Lines
already in OUT are not scored again, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reward_client.aio import AsyncRewardClient
from reward_client.errors import RewardClientError
from reward_client.policy import RetryPolicy

ITEM_FIELDS = ("prompt", "response", "messages")


def done_lines(output: Path) -> int:
    """Complete lines already written; a torn last line (the run was killed mid-write) is dropped."""
    if not output.exists():
        return 0
    data = output.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        output.write_bytes(complete)
    return complete.count(b"\n")


async def score_file(
    source: Path, output: Path, client: AsyncRewardClient, batch: int, progress: bool = True
) -> int:
    """Score what is not yet in `output`, appending in input order; returns the lines scored now."""
    rows, start = await asyncio.to_thread(_read, source, output)
    started, scored = time.monotonic(), 0
    with output.open("a", encoding="utf-8") as out:
        for first in range(start, len(rows), batch):
            chunk = rows[first : first + batch]
            result = await client.score([{k: r[k] for k in ITEM_FIELDS if k in r} for r in chunk])
            for row, reward, std in zip(chunk, result.rewards, result.stds, strict=True):
                out.write(json.dumps({**row, "reward": reward, "std": std}) + "\n")
            out.flush()
            scored += len(chunk)
            if progress:
                _progress(start + scored, len(rows), scored / max(time.monotonic() - started, 1e-9))
    if progress:
        print(file=sys.stderr)
    return scored


def _read(source: Path, output: Path) -> tuple[list[dict[str, Any]], int]:
    lines = source.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()], done_lines(output)


def _progress(done: int, total: int, rate: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {done}/{total} items, {rate:.1f} items/s", end="", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `reward-client`."""
    parser = argparse.ArgumentParser(prog="reward-client", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a JSONL file")
    score.add_argument("input", type=Path)
    score.add_argument("output", type=Path)
    score.add_argument("--url", action="append", required=True, help="a server (repeat for several)")
    score.add_argument("--api-key", default=None)
    score.add_argument("--batch", type=int, default=1024, help="items per write (chunked per server limit)")
    score.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    score.add_argument("--deadline", type=float, default=600.0, help="seconds per batch of --batch items")
    score.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    policy = RetryPolicy(deadline=args.deadline)
    options: dict[str, Any] = {"api_key": args.api_key, "policy": policy, "max_concurrency": args.concurrency}

    async def run() -> int:
        async with AsyncRewardClient(args.url, **options) as client:
            return await score_file(args.input, args.output, client, args.batch, not args.quiet)

    try:
        scored = asyncio.run(run())
    except (RewardClientError, OSError, ValueError) as exc:
        print(f"\nreward-client: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    if not args.quiet:
        print(f"reward-client: scored {scored} items into {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
