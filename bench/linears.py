"""float32 linear layers on a CPU: oneDNN with prepacked weights (the default) against torch's own GEMM.

Both engines run the same checkpoint over the same items in one process, in alternating rounds, so
the ratio is taken under the same load:
    python -m bench.linears MODEL [--items 256] [--rounds 3]
It prints, per round and engine, the single-item latency (every 5th item by length, alone) and the
batched throughput at batch sizes 8 and 32, then the packed ÷ torch ratios and the largest reward
difference between the two.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch

from bench.__main__ import hh_items
from bench.engines import cpu_facts
from reward_model.engines.transformers_engine import TransformersEngine
from reward_model.formatting import RewardInput
from reward_model.loading import LoadOptions, open_reward_model


def timings(engine: TransformersEngine, ids: Sequence[Sequence[int]]) -> dict[str, float]:
    """Single-item latency (ms) and items/s at batch sizes 8 and 32, over `ids` sorted by length."""
    figures = {}
    started = time.perf_counter()
    singles = ids[::5]
    for x in singles:
        engine.forward([x])
    figures["single_ms"] = (time.perf_counter() - started) / len(singles) * 1000
    for batch_size in (8, 32):
        started = time.perf_counter()
        for i in range(0, len(ids), batch_size):
            engine.forward(ids[i : i + batch_size])
        figures[f"batch{batch_size}_per_s"] = len(ids) / (time.perf_counter() - started)
    return figures


def main() -> None:
    """Measure both engines in alternating rounds and print the figures and ratios."""
    parser = argparse.ArgumentParser(prog="python -m bench.linears", description=__doc__)
    parser.add_argument("model", help="a single checkpoint (one member)")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    [member] = open_reward_model(args.model, LoadOptions(dtype="float32")).members
    packed = member.engine
    if not isinstance(packed, TransformersEngine) or not packed.packed_linears:
        raise SystemExit("error: this torch build or device does not pack linears for oneDNN")
    plain = TransformersEngine(
        member.checkpoint,
        device=torch.device("cpu"),
        dtype=torch.float32,
        pad_id=member.pad_id,
        trust_remote_code=False,
        onednn=False,
    )
    inputs = [RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in hh_items(args.items)]
    ids = sorted((e.input_ids for e in member.encode(inputs)), key=len)
    print(json.dumps(cpu_facts()), flush=True)
    print(f"{packed.packed_linears} linear layers packed; {len(ids)} items", flush=True)
    rounds: dict[str, list[dict[str, float]]] = {"onednn-packed": [], "torch": []}
    for number in range(args.rounds):
        for name, engine in (("onednn-packed", packed), ("torch", plain)):
            rounds[name].append(timings(engine, ids))
            print(number, name, json.dumps({k: round(v, 2) for k, v in rounds[name][-1].items()}), flush=True)
    pairs = list(zip(rounds["onednn-packed"], rounds["torch"], strict=True))
    for key in rounds["torch"][0]:
        ratio = statistics.median(a[key] / b[key] for a, b in pairs)
        print(f"packed / torch, {key}: {ratio:.2f}")
    gap = max(abs(a - b) for a, b in zip(packed.forward(ids[:32]), plain.forward(ids[:32]), strict=True))
    print(f"largest reward difference over 32 items: {gap:.2e}")


if __name__ == "__main__":
    main()
