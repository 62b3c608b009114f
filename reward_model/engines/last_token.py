"""Llama-style decoders pooled at the last token: their last layer's feed-forward runs there alone.

A decoder reward model reads its reward from each item's last real token. The last layer's attention
must still run for every token (later layers do not exist, but its keys and values are what that
token attends to), yet its MLP, by far the larger half of the layer, and its residual and norm only
matter at the pooled token. Running them there alone saves about 2/3 of the last layer's linear work,
which counts most in a shared-prompt suffix pass (short rows, the prompt already done). Same reward,
within float rounding (parity with the whole model is tested).

The engine passes `pooled_at` (each row's pooled index) through the base model's forward, as
transformers passes any extra keyword down to its layers; without it the layer is the original one,
so training and every other caller see the plain model.
"""

from __future__ import annotations

from typing import Any

import torch

# Layers whose forward is exactly: norm -> self-attention -> residual -> norm -> MLP -> residual.
LLAMA_STYLE_LAYERS = frozenset(
    {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"}
)


class LastTokenLayer(torch.nn.Module):
    """A Llama-style decoder layer that, given `pooled_at`, returns only those tokens' outputs,
    [B, 1, hidden]: attention over every token as before, the MLP at the pooled token alone."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer: Any = layer

    def forward(
        self, hidden_states: torch.Tensor, pooled_at: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        layer = self.layer
        if pooled_at is None:
            out: torch.Tensor = layer(hidden_states, **kwargs)
            return out
        attended, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden_states), **kwargs)
        rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
        pooled = (hidden_states[rows, pooled_at] + attended[rows, pooled_at])[:, None]
        result: torch.Tensor = pooled + layer.mlp(layer.post_attention_layernorm(pooled))
        return result


def pool_last_token_only(model: Any) -> bool:
    """Wrap the last layer of a Llama-style decoder classifier (above); True if it did."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(base, "layers", None)
    if not isinstance(getattr(model, "score", None), torch.nn.Linear) or not isinstance(
        layers, torch.nn.ModuleList
    ):
        return False
    if not len(layers) or type(layers[-1]).__name__ not in LLAMA_STYLE_LAYERS:
        return False
    layers[-1] = LastTokenLayer(layers[-1])
    return True


def pools_last_token_only(base: Any) -> bool:
    """True once `pool_last_token_only` wrapped the last layer of this base (decoder) model."""
    layers = getattr(base, "layers", None)
    return (
        isinstance(layers, torch.nn.ModuleList) and len(layers) > 0 and isinstance(layers[-1], LastTokenLayer)
    )
