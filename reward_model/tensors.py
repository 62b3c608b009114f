"""Token id lists into right-padded tensors, and rewards out of a sequence classifier.

Training and serving both read rewards through `reward_logits`, so they pool identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from reward_model.engines.last_token import pools_last_token_only


@dataclass(frozen=True)
class PaddedBatch:
    """Right-padded tensors for one forward pass."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> PaddedBatch:
    """Right-pad token id lists into tensors; right padding keeps positions identical to unpadded input."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return PaddedBatch(ids, mask)


def reward_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One reward per right-padded row.

    Decoder classifiers are pooled at the last real token from the attention mask, never by searching
    for the pad id, which lands one token early when pad == eos and the input ends with eos.
    """
    if uses_last_token_pooling(model):
        base = getattr(model, model.base_model_prefix)
        last = attention_mask.sum(dim=1) - 1
        pooled = last_token_states(base, last, input_ids=input_ids, attention_mask=attention_mask)
        logits: torch.Tensor = model.score(pooled)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[:, 0]


def last_token_states(base: Any, last: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """The decoder `base`'s final hidden state at index `last` of each row, [B, hidden]. A base whose
    last layer runs for the pooled token alone (`engines.last_token`) is told where, and returns only it."""
    if pools_last_token_only(base):
        only: torch.Tensor = base(**inputs, pooled_at=last).last_hidden_state[:, 0]
        return only
    hidden: torch.Tensor = base(**inputs).last_hidden_state
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def uses_last_token_pooling(model: Any) -> bool:
    """Decoder classifiers (Llama, Qwen, Mistral, GPT-2...) put a `score` head on every position."""
    head = getattr(model, "score", None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return isinstance(head, torch.nn.Linear) and isinstance(base, torch.nn.Module)


def max_positions(config: Any) -> int | None:
    """The longest input the model's position embeddings allow, when its config says."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
