"""RewardModelRunner: loads one checkpoint onto a device and turns batches of token ids into rewards.

It knows nothing about HTTP, queues or text formatting. Batches are right-padded; rewards are read
at the last real token (decoder models) or from the model's own pooler (encoder models), so the pad
token, including pad == eos, never moves where a reward is read and padding never changes a score.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.checkpoint import RewardMetadata, validate_checkpoint, weights_sha256
from app.errors import CheckpointError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """`auto` picks the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` means bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on the CPU."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass(frozen=True)
class PaddedBatch:
    """Right-padded tensors for one forward pass, with the token counts the metrics need."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    real_tokens: int
    padded_tokens: int


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> PaddedBatch:
    """Right-pad token id lists into tensors; right padding keeps positions identical to unpadded input."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    real = sum(len(s) for s in sequences)
    return PaddedBatch(ids, mask, real, longest * len(sequences))


class RewardModelRunner:
    """One model copy on one device: `forward(batch)` returns a float reward per sequence."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        metadata: RewardMetadata | None = None,
        device_lock: threading.Lock | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.checkpoint = Path(checkpoint)
        self.metadata = metadata or validate_checkpoint(self.checkpoint)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.checkpoint, trust_remote_code=trust_remote_code
            )
            model = AutoModelForSequenceClassification.from_pretrained(
                self.checkpoint, dtype=self.dtype, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.checkpoint}: cannot load ({exc})".replace("\n", " ")) from exc
        if model.config.num_labels != 1:
            raise CheckpointError(f"{self.checkpoint}: num_labels is {model.config.num_labels}, must be 1")
        if not getattr(self.tokenizer, "is_fast", False):
            raise CheckpointError(f"{self.checkpoint}: a fast (Rust) tokenizer is required for offsets")
        if self.tokenizer.pad_token_id is None:
            # Causal LMs ship without a pad token. Any id works: rewards are read at the last real
            # token and padding sits to the right of it, so pads are never attended to or pooled.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.tokenizer.pad_token_id is None:
            raise CheckpointError(f"{self.checkpoint}: tokenizer has no pad, eos or unk token to pad with")
        self.model = model.to(self.device).eval()
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.architecture = type(model).__name__
        self.max_positions = _max_positions(model.config)
        self.weights_sha256 = weights_sha256(self.checkpoint)
        # Ensemble members on one device take turns: concurrent forward passes would only fight
        # over the same cores or streams and make every member slower.
        self.device_lock = device_lock or threading.Lock()
        log.info("loaded %s (%s) on %s as %s", self.checkpoint, self.architecture, self.device, self.dtype)

    @property
    def num_parameters(self) -> int:
        """Parameter count, for `/info`."""
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def forward(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Score a batch of token id lists; one float per sequence, in order."""
        batch = pad_batch(sequences, self.pad_id)
        input_ids = batch.input_ids.to(self.device, non_blocking=True)
        attention_mask = batch.attention_mask.to(self.device, non_blocking=True)
        try:
            with self.device_lock:
                rewards = reward_logits(self.model, input_ids, attention_mask)
        except torch.OutOfMemoryError:
            self.empty_cache()  # so that the batcher's retry on half the batch has the memory back
            raise
        return [float(x) for x in rewards.float().cpu().tolist()]

    def empty_cache(self) -> None:
        """Release cached accelerator memory after an out-of-memory error."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def reward_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One reward per right-padded row; training and serving both read rewards through this function.

    Decoder classifiers are pooled at the last real token from the attention mask, never by searching
    for the pad id, which lands one token early when pad == eos and the input ends with eos.
    """
    if uses_last_token_pooling(model):
        base = getattr(model, model.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logits: torch.Tensor = model.score(pooled)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[:, 0]


def uses_last_token_pooling(model: Any) -> bool:
    """Decoder classifiers (Llama, Qwen, Mistral, GPT-2...) put a `score` head on every position."""
    head = getattr(model, "score", None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return isinstance(head, torch.nn.Linear) and isinstance(base, torch.nn.Module)


def _max_positions(config: Any) -> int | None:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def is_finite(value: float) -> bool:
    """True for a reward that JSON can carry and clients can use."""
    return math.isfinite(value)
