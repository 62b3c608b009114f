"""The offline limit: direct batched forward passes through the shared loader, no server in between.

Run in its own process per engine and dtype, so that each measurement starts clean (one OpenMP team,
no compiled graphs or oneDNN primitives left from another configuration):
    python -m bench.offline MODEL ITEMS.json --engine transformers --dtype float32 --compile on
Every batch shape is seen once before timing, as a warmed-up server has seen it.
`--singles N` times the first N items one at a time, in file order: the items a one-client load sends
first, for the one-client latency target (the benchmark runs it right before and after that load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from reward_model.formatting import RewardInput
from reward_model.loading import LoadOptions, open_reward_model


def offline_limit(
    model: str, items: list[dict[str, Any]], seconds: float, options: LoadOptions | None = None
) -> dict[str, Any]:
    """Batched forward passes sorted by length, at the best batch size: the engine's ceiling."""
    started_load = time.perf_counter()
    [runner] = open_reward_model(model, options or LoadOptions()).members
    ids = [
        e.input_ids
        for e in runner.encode([RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in items])
    ]
    ids.sort(key=len)
    results = {}
    warm_started = time.perf_counter()
    for batch_size in (8, 16, 32, 64):
        for i in range(0, len(ids), batch_size):  # warm-up: every shape once (compiles, primitives)
            runner.forward(ids[i : i + batch_size])
    warm_seconds = time.perf_counter() - warm_started
    for batch_size in (8, 16, 32, 64):
        done = tokens = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for i in range(0, len(ids), batch_size):
                batch = ids[i : i + batch_size]
                runner.forward(batch)
                done += len(batch)
                tokens += sum(len(x) for x in batch)
            if runner.device.type == "cuda":
                torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        results[batch_size] = {"items_per_s": done / elapsed, "tokens_per_s": tokens / elapsed}
    best = max(results, key=lambda b: results[b]["items_per_s"])
    single = []
    for x in ids[:: max(1, len(ids) // 50)][:50]:
        started = time.perf_counter()
        runner.forward([x])
        single.append(time.perf_counter() - started)
    return {
        "by_batch_size": results,
        "best_batch_size": best,
        **results[best],
        "single_item_p50_ms": statistics.median(single) * 1000,
        "load_seconds": warm_started - started_load,
        "warmup_seconds": warm_seconds,
        "engine": runner.engine.name,
        "compiled": runner.engine.compiled,
        "device": str(runner.device),
        "dtype": str(runner.dtype).removeprefix("torch."),
    }


def single_item_latency(
    model: str, items: list[dict[str, Any]], count: int, options: LoadOptions | None = None
) -> dict[str, Any]:
    """p50 of one direct forward per item over the first `count` items, in order, after 3 warm-ups."""
    [runner] = open_reward_model(model, options or LoadOptions()).members
    inputs = [RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in items[:count]]
    ids = [e.input_ids for e in runner.encode(inputs)]
    for x in ids[:3]:
        runner.forward([x])
    took = []
    for x in ids:
        started = time.perf_counter()
        runner.forward([x])
        took.append(time.perf_counter() - started)
    return {"single_item_p50_ms": statistics.median(took) * 1000, "items": len(ids)}


def main() -> None:
    """Measure one engine configuration and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.offline", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("items", help="JSON file: a list of {prompt, response}")
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--compile", choices=["on", "off"], default="off")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--singles", type=int, default=0, help="only time the first N items, one each")
    args = parser.parse_args()
    with open(args.items, encoding="utf-8") as fh:
        items = json.load(fh)
    options = LoadOptions(engine=args.engine, dtype=args.dtype, compile=args.compile == "on")
    if args.singles:
        print(json.dumps(single_item_latency(args.model, items, args.singles, options)), flush=True)
    else:
        print(json.dumps(offline_limit(args.model, items, args.seconds, options)), flush=True)


if __name__ == "__main__":
    main()
