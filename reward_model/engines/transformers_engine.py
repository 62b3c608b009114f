"""The default engine: a transformers sequence classifier, right-padded batches, our own pooling.

Eager by default; `compile=True` runs it through `torch.compile` (inductor, dynamic shapes, frozen
weights), which measured 0.92x eager on the demo model on a CPU, so it is opt-in. bfloat16 runs
through oneDNN on CPUs with native bf16; the reward head and the returned reward stay float32.
float32 on a CPU stays torch's own MKL path: oneDNN with prepacked weights scored batches 1.23-1.36x
faster on AMD Zen 4 but single items 2x slower (see the README), so it is not used.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from reward_model.engines import RewardEngine
from reward_model.errors import CheckpointError
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
    """`AutoModelForSequenceClassification`, eager unless `compile`."""

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
        self.compiled = compile
        if compile:
            self._rewards: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.compile(
                functools.partial(reward_logits, model), dynamic=True, options={"freezing": True}
            )
        else:
            self._rewards = functools.partial(reward_logits, model)

    @torch.inference_mode()
    def forward(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Right-pad, run, and read each reward at its own last real token (or the encoder's pooler)."""
        batch = pad_batch(sequences, self.pad_id)
        input_ids = batch.input_ids.to(self.device, non_blocking=True)
        attention_mask = batch.attention_mask.to(self.device, non_blocking=True)
        rewards = self._rewards(input_ids, attention_mask)
        return [float(x) for x in rewards.float().cpu().tolist()]
