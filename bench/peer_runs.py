"""Running the peer servers: start, stop, raw-reward parity against ours, and the timed scenarios.

The peers themselves (commands, request bodies) are described in `bench/peers.py`.
Smoke run: python -m bench.peer_runs --model DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import peers
from bench.loadgen import load
from bench.peers import (
    PARITY_RELATIVE,
    PARITY_TOLERANCE,
    PEERS,
    PEERS_ROOT,
    Peer,
    available_peers,
    render_texts,
)
from bench.processes import free_port, wait_ready


def launch(
    peer: Peer,
    model_dir: str | Path,
    port: int,
    work: Path,
    *,
    dtype: str = "float32",
    timeout: float = 600.0,
) -> subprocess.Popen[bytes]:
    """Start the peer in its own process group on 127.0.0.1:port; wait (bounded) until it is ready."""

    served = peer.prepare(model_dir, work)
    log = work / f"{peer.name}.log"
    with log.open("wb") as fh:
        process = subprocess.Popen(
            peer.command(served, port, dtype),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=peer.environment(),
            cwd=work,
            start_new_session=True,  # vLLM forks an engine process: stop the whole group
        )
    try:
        wait_ready(process, peer.ready_url(f"http://127.0.0.1:{port}"), log, peer.label, timeout)
    except RuntimeError:
        shutdown(process)
        raise
    return process


def shutdown(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the peer (it stops its own children), then SIGKILL what is left of its process group."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    # vLLM's engine core and workers must not outlive the server and eat the next scenario's CPU.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


def peer_rewards(peer: Peer, base: str, texts: Sequence[str], timeout: float = 60.0) -> list[float]:
    """The peer's raw rewards for `texts`, in order (one request)."""
    import httpx

    response = httpx.post(peer.score_url(base), json=peer.body(texts), timeout=timeout)
    response.raise_for_status()
    rewards = peer.rewards(response.json())
    if len(rewards) != len(texts):
        raise RuntimeError(f"{peer.label} returned {len(rewards)} rewards for {len(texts)} texts")
    return rewards


def warm_up(peer: Peer, base: str, texts: Sequence[str], sizes: Sequence[int] = (1, 16, 64)) -> None:
    """A few untimed requests of each size, so that first-call compilation is not timed (ours warms up
    at startup; vLLM compiles at startup too, infinity's torch.compile meets new shapes on first use)."""
    for size in sizes:
        for start in range(0, 2 * size, size):
            peer_rewards(peer, base, texts[start : start + size], timeout=300)


def check_parity(
    peer: Peer,
    base: str,
    texts: Sequence[str],
    expected: Sequence[float],
    tolerance: float = PARITY_TOLERANCE,
    relative: float = PARITY_RELATIVE,
) -> dict[str, Any]:
    """Compare the peer's raw rewards with ours (float32); `ok` is False when any differs too much.

    Too much: more than `tolerance`, or more than `relative` times the largest |reward|. The second
    bound matters for a checkpoint with a fresh head, whose logits are about 0.02: there a peer that
    reads other token ids (infinity without its view: `[CLS] [SEP] text [SEP]`) is off by only 2.5e-3.
    """
    got = peer_rewards(peer, base, texts)
    diff = max(abs(a - b) for a, b in zip(got, expected, strict=True))
    scale = max(abs(x) for x in expected)
    return {
        "ok": diff <= min(tolerance, relative * scale),
        "max_abs_diff": diff,
        "max_rel_diff": diff / scale if scale else float("inf"),
        "peer": got,
        "ours": list(expected),
    }


def reference_rewards(model_dir: str | Path, items: Sequence[Mapping[str, Any]]) -> list[float]:
    """Our raw rewards for the items, float32, through the project's one loader (what /score returns)."""
    from reward_model.formatting import RewardInput
    from reward_model.loading import LoadOptions, open_reward_model

    model = open_reward_model(model_dir, LoadOptions(dtype="float32"))
    [member] = model.members
    ids = [
        e.input_ids
        for e in member.encode([RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in items])
    ]
    return member.score_sequences(ids)


SMOKE_ITEMS = [
    {"prompt": "How do I boil an egg?", "response": "Simmer it for 8 minutes."},
    {
        "prompt": [
            {"role": "user", "content": "Can you help me write a poem?"},
            {"role": "assistant", "content": "Of course. What about?"},
            {"role": "user", "content": "The sea, at night."},
        ],
        "response": "Dark water folds the moon in silver lines, and the tide keeps time.",
    },
    {"prompt": "hi", "response": "no"},
]


def main(argv: list[str] | None = None) -> None:
    """Smoke check: start each installed peer, compare its raw rewards with ours, stop it."""
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=main.__doc__)
    parser.add_argument("--model", required=True, help="A one-label checkpoint directory.")
    parser.add_argument(
        "--peer", action="append", choices=sorted(PEERS), help="Default: every installed one."
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait for a peer's start.")
    args = parser.parse_args(argv)
    peers = available_peers(args.peer)
    if not peers:
        raise SystemExit(f"no peer installed under {PEERS_ROOT}: run bash bench/install_peers.sh")
    texts, fits = render_texts(args.model, SMOKE_ITEMS)
    assert all(fits)
    ours = reference_rewards(args.model, SMOKE_ITEMS)
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    report: dict[str, Any] = {"ours": ours}
    failed = False
    for peer in peers:
        port = free_port()
        started = time.monotonic()
        process = launch(peer, args.model, port, work, timeout=args.timeout)
        try:
            parity = check_parity(peer, f"http://127.0.0.1:{port}", texts, ours)
            report[peer.name] = {"ready_s": round(time.monotonic() - started, 1), **parity}
            failed |= not parity["ok"]
        finally:
            shutdown(process)
    print(json.dumps(report, indent=2))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()


def run_peers(
    model: str,
    items: list[dict[str, Any]],
    texts: list[str],
    names: list[str] | None,
    dtype: str,
    seconds: float,
    work: Path,
) -> dict[str, Any]:
    """Each installed peer server on the same texts and load patterns, after a raw-reward parity check."""

    selected = peers.available_peers(names)
    if not selected:
        print(f"no peer server installed in {peers.PEERS_ROOT} (bash bench/install_peers.sh)", flush=True)
        return {}
    probe = items[:16]
    ours = reference_rewards(model, probe)
    tolerance = (1e-3, 1e-2) if dtype == "float32" else (5e-2, 5e-2)
    out: dict[str, Any] = {}
    for peer in selected:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        print(f"{peer.label}: starting ...", flush=True)
        try:
            process = launch(peer, model, port, work, dtype=dtype)
        except RuntimeError as exc:
            out[peer.name] = {"label": peer.label, "error": str(exc)[-1000:]}
            print(f"{peer.label}: did not start, skipped", flush=True)
            continue
        try:
            parity = check_parity(peer, base, texts[:16], ours, *tolerance)
            figures: dict[str, Any] = {
                "label": peer.label,
                "parity": {k: parity[k] for k in ("ok", "max_abs_diff", "max_rel_diff")},
            }
            out[peer.name] = figures
            if not parity["ok"]:
                print(f"{peer.label}: rewards differ from ours ({parity['max_abs_diff']:.2e}), not timed")
                continue
            warm_up(peer, base, texts)
            for concurrency, size in [(8, 16), (64, 1), (1, 1), (64, 16)]:
                print(f"{peer.label}: concurrency {concurrency}, {size} items/request ...", flush=True)
                bodies = peers.peer_requests(peer, texts, size)
                url = peer.score_url(base)
                figures[f"c{concurrency}_n{size}"] = load(url, bodies, concurrency, seconds, work)
        finally:
            shutdown(process)
    return out
