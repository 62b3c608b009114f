"""The one loader: open a checkpoint or an ensemble for scoring, with one rule for the input length.

`reward-serve`, `reward-eval`, the trainer's own evaluation and the benchmark all open models here,
so the same checkpoint always gets the same token ids and the same rewards.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reward_model.checkpoint import MemberSpec, ModelLayout, RewardMetadata, read_layout, weights_sha256
from reward_model.devices import member_devices, resolve_device, resolve_dtype
from reward_model.engines import EngineName, open_engine
from reward_model.ensemble import Combiner
from reward_model.errors import CheckpointError
from reward_model.formatting import EncodedInput, InputFormatter, RewardInput
from reward_model.prefix_sharing import split_points
from reward_model.tensors import max_positions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """How to open a model: where it runs and how long its inputs may be."""

    device: str = "auto"
    dtype: str = "auto"
    max_input_tokens: int | None = None
    """A cap below the checkpoint's own `max_length`; unset: no extra cap."""
    engine: EngineName = "transformers"
    compile: bool = False
    """`torch.compile` the transformers engine (measured slower than eager on CPU here; see README)."""
    truncate: bool = True
    trust_remote_code: bool = False
    prefix_sharing: bool = True
    """Run a shared prompt once for all its responses, on engines and models that can."""
    prefix_cache_mb: float = 1024.0
    """Memory for prompts' keys and values kept across batches (decoders, transformers engine); 0: none."""
    allow_pickle: bool = False
    """Accept checkpoints whose only weights are pickle files (they can run code when loaded)."""


def effective_max_length(
    metadata: RewardMetadata, max_input_tokens: int | None, positions: int | None
) -> int:
    """The one rule: the checkpoint's max_length, capped by the caller's limit and the model's positions."""
    return min(x for x in (metadata.max_length, max_input_tokens, positions) if x)


class ScoringModel:
    """One checkpoint on one device: its tokenizer and formatter, and the engine that runs its weights."""

    def __init__(self, spec: MemberSpec, options: LoadOptions, device: str | None = None) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.name, self.checkpoint, self.metadata = spec.name, spec.path, spec.metadata
        self.weight = spec.weight
        remote = options.trust_remote_code
        try:
            config = AutoConfig.from_pretrained(self.checkpoint, trust_remote_code=remote)
            self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint, trust_remote_code=remote)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.checkpoint}: cannot load ({exc})".replace("\n", " ")) from exc
        if config.num_labels != 1:
            raise CheckpointError(f"{self.checkpoint}: num_labels is {config.num_labels}, must be 1")
        if not getattr(self.tokenizer, "is_fast", False):
            raise CheckpointError(f"{self.checkpoint}: a fast (Rust) tokenizer is required for offsets")
        if self.tokenizer.pad_token_id is None:
            # Causal LMs ship without a pad token. Any id works: rewards are read at the last real
            # token and padding sits to the right of it, so pads are never attended to or pooled.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.tokenizer.pad_token_id is None:
            raise CheckpointError(f"{self.checkpoint}: tokenizer has no pad, eos or unk token to pad with")
        self.pad_id = int(self.tokenizer.pad_token_id)
        max_length = effective_max_length(spec.metadata, options.max_input_tokens, max_positions(config))
        try:
            self.formatter = InputFormatter(
                self.tokenizer,
                input_format=spec.metadata.input_format.type,
                max_length=max_length,
                truncate=options.truncate,
            )
        except ValueError as exc:
            raise CheckpointError(f"{self.checkpoint}: {exc}") from exc
        resolved = resolve_device(device or options.device)
        self.engine = open_engine(
            options.engine,
            self.checkpoint,
            device=resolved,
            dtype=resolve_dtype(options.dtype, resolved),
            pad_id=self.pad_id,
            max_length=max_length,
            trust_remote_code=remote,
            compile=options.compile,
            prefix_cache_bytes=int(options.prefix_cache_mb * 2**20) if options.prefix_sharing else 0,
        )
        self.shares_prefixes = options.prefix_sharing and self.engine.shares_prefixes
        self.prefix_sharing_note = (
            "off by the prefix_sharing setting"
            if self.engine.shares_prefixes and not options.prefix_sharing
            else self.engine.prefix_sharing_note
        )
        self.weights_sha256 = weights_sha256(self.checkpoint)
        self.encoding_key = encoding_key(self.tokenizer, self.formatter)
        """Equal for members whose tokenizer, format and limits produce identical input ids. Computed
        here, at load: it serializes the whole vocabulary, which must not happen on a request."""
        log.debug(
            "opened %s (%s) with %s on %s as %s",
            self.checkpoint,
            self.architecture,
            self.engine.name,
            self.device,
            self.dtype,
        )

    @property
    def architecture(self) -> str:
        """The model class, e.g. `LlamaForSequenceClassification`."""
        return self.engine.architecture

    @property
    def device(self) -> torch.device:
        """Where the engine runs the model."""
        return self.engine.device

    @property
    def dtype(self) -> torch.dtype:
        """The backbone's dtype (the reward head and the reward are float32 in every dtype)."""
        return self.engine.dtype

    @property
    def num_parameters(self) -> int:
        """Parameter count, for `/info`."""
        return self.engine.num_parameters

    def encode(self, items: Sequence[RewardInput]) -> list[EncodedInput]:
        """Format, tokenize and truncate items for this model."""
        return self.formatter.encode(items)

    def forward(
        self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int] | None = None
    ) -> list[float]:
        """Raw rewards of a batch of token id lists, one float per sequence, in order."""
        return self.engine.forward(sequences, prefix_lengths if self.shares_prefixes else None)

    def prefix_lengths(self, encoded: Sequence[EncodedInput]) -> list[int]:
        """Where each item splits for prefix sharing (`prefix_sharing.split_points`); 0: not split."""
        if not self.shares_prefixes:
            return [0] * len(encoded)
        return split_points(encoded)

    def score_sequences(
        self, sequences: Sequence[Sequence[int]], max_batch_tokens: int = 8192
    ) -> list[float]:
        """Offline scoring in length-sorted, token-budgeted batches; rewards in input order."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        rewards = [0.0] * len(sequences)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(sequences[order[end]]) <= max_batch_tokens:
                end += 1
            batch = order[start:end]
            for i, reward in zip(batch, self.forward([sequences[i] for i in batch]), strict=True):
                rewards[i] = reward
            start = end
        return rewards


def encoding_key(tokenizer: Any, formatter: InputFormatter) -> str:
    """A digest of what decides the input ids: vocabulary, chat template, format and limits."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else repr(tokenizer)
    template = getattr(tokenizer, "chat_template", None) or ""
    digest = hashlib.sha256(f"{vocab}|{template}|{formatter.format_name}".encode()).hexdigest()[:16]
    return f"{digest}:{formatter.max_length}:{formatter.truncate}"


def open_member(spec: MemberSpec, options: LoadOptions, device: str | None = None) -> ScoringModel:
    """Open one checkpoint of a layout (on `device`, else the options' device)."""
    return ScoringModel(spec, options, device)


@dataclass
class RewardModel:
    """A checkpoint or ensemble opened for offline scoring: its members and how to combine them."""

    layout: ModelLayout
    members: list[ScoringModel]
    combiner: Combiner

    def encode(self, items: Sequence[RewardInput]) -> list[list[EncodedInput]]:
        """Each member's encodings of the items (outer list: members); members that tokenize alike share."""
        shared: dict[str, list[EncodedInput]] = {}
        for member in self.members:
            if member.encoding_key not in shared:
                shared[member.encoding_key] = member.encode(items)
        return [shared[member.encoding_key] for member in self.members]

    def score(
        self, items: Sequence[RewardInput], encoded: list[list[EncodedInput]] | None = None
    ) -> list[list[float]]:
        """Raw rewards per member (outer list) and item (inner list)."""
        encoded = encoded if encoded is not None else self.encode(items)
        return [
            member.score_sequences([e.input_ids for e in member_encoded])
            for member, member_encoded in zip(self.members, encoded, strict=True)
        ]


def open_reward_model(path: str | Path, options: LoadOptions | None = None, **overrides: Any) -> RewardModel:
    """Open a checkpoint or an ensemble directory for scoring, every member on its device."""
    options = options or LoadOptions()
    layout = read_layout(path, allow_pickle=options.allow_pickle)
    devices = member_devices(options.device, len(layout.members))
    members = [
        open_member(spec, options, device) for spec, device in zip(layout.members, devices, strict=True)
    ]
    return RewardModel(layout, members, Combiner.for_layout(layout, **overrides))
