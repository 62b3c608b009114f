"""BERT-family encoders pooled at the first token: their last layer runs for that token alone.

A sequence classifier of the BERT family (BERT, MiniLM, RoBERTa, ELECTRA: the demo model among them)
reads its reward from the first token's final hidden state only. The last layer's keys and values
need every token, but its queries, attention output, feed-forward block and layer norms only matter at
the first token: running them there alone skips about 5/6 of the last layer, 14% of a 6-layer
MiniLM's linear work, and gives the same reward (within float rounding; parity is tested).

Models of another shape (DeBERTa, decoders, anything with cross-attention) are left as they are.
"""

from __future__ import annotations

from typing import Any

import torch

FIRST_TOKEN_POOLED = frozenset(
    {
        "BertForSequenceClassification",
        "RobertaForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "ElectraForSequenceClassification",
    }
)


class FirstTokenLayer(torch.nn.Module):
    """A BERT-style encoder layer that returns only the first token's output, [B, 1, hidden]."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer: Any = layer

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *_: Any, **__: Any
    ) -> torch.Tensor:
        attention = self.layer.attention
        own = attention.self
        first = hidden_states[:, :1]
        batch, width = hidden_states.shape[:2]
        heads, size = own.num_attention_heads, own.attention_head_size

        def split(x: torch.Tensor, length: int) -> torch.Tensor:
            return x.view(batch, length, heads, size).transpose(1, 2)

        mask = None if attention_mask is None else attention_mask[:, :, :1]  # [B, 1, S or 1, S]: first row
        context = torch.nn.functional.scaled_dot_product_attention(
            split(own.query(first), 1),
            split(own.key(hidden_states), width),
            split(own.value(hidden_states), width),
            attn_mask=mask,
            scale=own.scaling,
        )
        attended = attention.output(context.transpose(1, 2).reshape(batch, 1, heads * size), first)
        out: torch.Tensor = self.layer.output(self.layer.intermediate(attended), attended)
        return out


def pool_first_token_only(model: Any) -> bool:
    """Make the last encoder layer of a first-token-pooled BERT-family classifier run for the first
    token alone; True if it did."""
    if type(model).__name__ not in FIRST_TOKEN_POOLED:
        return False
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return False
    last = layers[-1]
    own = getattr(getattr(last, "attention", None), "self", None)
    shaped = all(hasattr(own, name) for name in ("query", "key", "value", "scaling", "num_attention_heads"))
    if (
        not shaped
        or not hasattr(last, "intermediate")
        or getattr(last, "crossattention", None) is not None
        or getattr(model.config, "is_decoder", False)
        or getattr(last, "chunk_size_feed_forward", 0)
    ):
        return False
    layers[-1] = FirstTokenLayer(last)
    return True
