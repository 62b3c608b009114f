"""The default engine: a transformers sequence classifier, right-padded batches, our own pooling.

Eager by default; `compile=True` runs it through `torch.compile` (inductor, dynamic shapes, frozen
weights), which measured 0.92x eager on the demo model on a CPU, so it is opt-in.
On a CPU, float32 and bfloat16 linear layers run through oneDNN with their weights reordered once
at load (`onednn.PackedLinear`). The reward head and the returned reward stay float32 in every dtype.
A BERT-family encoder pooled at its first token runs its last layer for that token alone
(`first_token`): 1.15x on the demo model, same rewards.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from reward_model.engines import RewardEngine
from reward_model.engines.cascade_attention import use_cascade_attention
from reward_model.engines.first_token import pool_first_token_only
from reward_model.engines.last_token import pool_last_token_only
from reward_model.engines.onednn import onednn_available, pack_linears
from reward_model.engines.prefix_cache import PrefixKVCache
from reward_model.engines.shared_prefix import shared_prefix_logits, supports_prefix_sharing
from reward_model.errors import CheckpointError
from reward_model.prefix_sharing import plan_split
from reward_model.tensors import pad_batch, reward_logits

log = logging.getLogger(__name__)


def reward_head(model: Any) -> torch.nn.Module:
    """The final one-label layer: `score` on decoder classifiers, `classifier` (or its `out_proj`) else."""
    head = getattr(model, "score", None)
    if head is None:
        head = getattr(model, "classifier", None)
    if isinstance(head, torch.nn.Module) and not isinstance(head, torch.nn.Linear):
        head = getattr(head, "out_proj", head)  # RoBERTa/DeBERTa-style classification heads
    if not isinstance(head, torch.nn.Module):
        raise CheckpointError(f"{type(model).__name__}: no `score` or `classifier` head found")
    return head


def _float32_head(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (args[0].float(), *args[1:])


class TransformersEngine(RewardEngine):
    """`AutoModelForSequenceClassification`, eager unless `compile`; `onednn=False` keeps torch's GEMM."""

    name = "transformers"

    def __init__(
        self,
        checkpoint: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        pad_id: int,
        trust_remote_code: bool,
        compile: bool = False,
        onednn: bool = True,
        prefix_cache_bytes: int = 0,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                checkpoint, dtype=dtype, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{checkpoint}: cannot load ({exc})".replace("\n", " ")) from exc
        head = reward_head(model)
        if dtype != torch.float32:
            head.float()  # the reward is read in float32 whatever the backbone's dtype
            head.register_forward_pre_hook(_float32_head)
        self.device, self.dtype, self.pad_id = device, dtype, pad_id
        self.architecture = type(model).__name__
        self.num_parameters = sum(p.numel() for p in model.parameters())
        model = model.to(device).eval()
        self.model = model
        self.first_token_only = pool_first_token_only(model)
        self.last_token_only = pool_last_token_only(model)
        self.shares_prefixes = supports_prefix_sharing(model)
        if self.shares_prefixes:
            use_cascade_attention(model)
        self.prefix_cache = PrefixKVCache(prefix_cache_bytes if self.shares_prefixes else 0)
        if not self.shares_prefixes:
            self.prefix_sharing_note = (
                "bidirectional or sliding-window attention: every item is encoded in full"
            )
        elif prefix_cache_bytes:
            self.prefix_sharing_note = (
                "decoder: each distinct prompt prefix runs once per batch, and is kept for later batches "
                f"({prefix_cache_bytes / 2**20:g} MiB, least recently used out)"
            )
        else:
            self.prefix_sharing_note = "decoder: each distinct prompt prefix runs once per batch"
        self.compiled = compile
        self.packed_linears = 0
        if compile:
            self._rewards: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.compile(
                functools.partial(reward_logits, model), dynamic=True, options={"freezing": True}
            )
        else:
            if device.type == "cpu" and onednn and onednn_available(dtype):
                self.packed_linears = pack_linears(model, keep=head)
            self._rewards = functools.partial(reward_logits, model)

    @torch.inference_mode()
    def forward(
        self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int] | None = None
    ) -> list[float]:
        """Right-pad, run, and read each reward at its own last real token (or the encoder's pooler).

        Sequences with a prefix length run split (`prefix_sharing`) when the model can share; the rest
        run as one plain padded batch."""
        split = [i for i, n in enumerate(prefix_lengths or ()) if n > 0] if self.shares_prefixes else []
        if not split:
            return self._plain(sequences)
        assert prefix_lengths is not None
        rewards = [0.0] * len(sequences)
        plain = sorted(set(range(len(sequences))) - set(split))
        if plain:
            for i, reward in zip(plain, self._plain([sequences[i] for i in plain]), strict=True):
                rewards[i] = reward
        plan = plan_split([sequences[i] for i in split], [prefix_lengths[i] for i in split])
        shared = shared_prefix_logits(self.model, plan, self.pad_id, self.device, self.prefix_cache)
        for i, reward in zip(split, shared.float().cpu().tolist(), strict=True):
            rewards[i] = float(reward)
        return rewards

    def _plain(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        batch = pad_batch(sequences, self.pad_id)
        input_ids = batch.input_ids.to(self.device, non_blocking=True)
        attention_mask = batch.attention_mask.to(self.device, non_blocking=True)
        rewards = self._rewards(input_ids, attention_mask)
        return [float(x) for x in rewards.float().cpu().tolist()]
