"""BASELINE, NOT THE PRODUCT: the hand-written reward server of tutorials and OpenRLHF's `serve_rm`.

One forward pass per request, under a lock, padded to the longest item of that request. It opens
the model with the project's one loader, so both servers score the same token ids with the same
model; only the serving strategy (how requests become batches) differs.
Run: python -m bench.naive_server MODEL_DIR PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI

from reward_model.formatting import RewardInput
from reward_model.loading import open_reward_model


def build_app(model_dir: str) -> FastAPI:
    """The naive server: lock, pad to the request's longest item, forward, return."""
    [model] = open_reward_model(model_dir).members
    lock = asyncio.Lock()
    app = FastAPI()

    @app.post("/score")
    async def score(body: dict[str, Any]) -> dict[str, list[float]]:
        # As OpenRLHF's serve_rm: the forward pass runs on the event loop thread, one request at a
        # time. (A sync handler would spread torch over threadpool threads, which is slower on CPU.)
        async with lock:
            items = [RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in body["items"]]
            ids = [e.input_ids for e in model.encode(items)]
            with torch.inference_mode():
                return {"rewards": model.forward(ids)}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


if __name__ == "__main__":
    uvicorn.run(build_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
