"""A veRL (0.9) reward manager that sends whole batches of samples to reward-serve.

veRL's reward loop calls `run_single` once per sample, concurrently. This manager gathers the samples
that arrive within a few milliseconds and scores them in one `/score` request, with the chat prompt
from `raw_prompt` and the response decoded from its valid tokens. Point veRL at it with:

    reward:
      reward_manager:
        source: importlib
        name: RewardServeManager
        module:
          path: /path/to/examples/verl_reward_manager.py

and `REWARD_SERVER_URL=http://host-a:8000,http://host-b:8000` in the workers' environment.
Needs `pip install reward-client` (client/ in this repository) next to veRL.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from reward_client import AsyncRewardClient
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase


class RewardServeManager(RewardManagerBase):
    """Samples in, one reward each; requests of up to `MAX_BATCH` samples out."""

    MAX_BATCH = 256
    MAX_WAIT_S = 0.005

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, **kwargs: Any) -> None:
        super().__init__(config, tokenizer, compute_score)
        self.urls = [u for u in os.environ.get("REWARD_SERVER_URL", "").split(",") if u]
        if not self.urls:
            raise ValueError("set REWARD_SERVER_URL to one or more reward-serve URLs, comma-separated")
        self.client: AsyncRewardClient | None = None
        self.pending: list[tuple[dict[str, Any], asyncio.Future[float]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def run_single(self, data: Any) -> dict[str, Any]:
        item = data[-1]
        prompt = [
            {"role": m["role"], "content": m.get("content") or ""}
            for m in item.non_tensor_batch["raw_prompt"]
        ]
        responses = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        response = self.tokenizer.decode(responses[:valid], skip_special_tokens=True)
        reward = await self._score({"prompt": prompt, "response": response})
        return {"reward_score": reward, "reward_extra_info": {}}

    async def _score(self, item: dict[str, Any]) -> float:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if len(self.pending) >= self.MAX_BATCH:
            await self._flush()
        elif self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.MAX_WAIT_S)
        self.flusher = None
        await self._flush()

    async def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        if self.client is None:
            self.client = AsyncRewardClient(self.urls)
        try:
            result = await self.client.score([item for item, _ in batch])
        except Exception as exc:  # every sample of the batch fails loudly, never as a silent 0.0
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), reward in zip(batch, result.rewards, strict=True):
            future.set_result(reward)
