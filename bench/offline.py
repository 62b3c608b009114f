"""The offline limit: direct batched forward passes through the shared loader, no server in between."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from reward_model.formatting import RewardInput
from reward_model.loading import open_reward_model


def offline_limit(model: str, items: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Direct batched forward passes, sorted by length, at the best batch size: the hardware ceiling."""
    [runner] = open_reward_model(model).members
    ids = [
        e.input_ids
        for e in runner.encode([RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in items])
    ]
    ids.sort(key=len)
    results = {}
    for batch_size in (8, 16, 32, 64):
        runner.forward(ids[:batch_size])  # warm-up
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
        "device": str(runner.device),
        "dtype": str(runner.dtype),
    }
