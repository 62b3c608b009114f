"""Linear layers run by oneDNN on a CPU, with weights reordered once at load.

torch's float32 GEMM goes through MKL, which picks its kernels by CPU vendor and runs a generic path
on AMD (`MKL_VERBOSE=1` shows it), leaving AVX-512 unused on Zen 4; oneDNN picks by ISA flags
(`python -m bench.linears` measures the two in one process). bfloat16 linears reach oneDNN through
torch too, but with their weights reordered on every call: packed once, they ran 1.07-1.09x faster on a
Zen 4 (same process, alternating rounds). An encoder's feed-forward GELU runs inside the linear layer
before it (a oneDNN post-op: one pass over the wide intermediate tensor instead of two).
"""

from __future__ import annotations

import torch

# transformers' GELU modules that compute exactly what oneDNN's post-op of that name computes
_GELU_POST_OPS = {"GELUActivation": "none", "GELUTanh": "tanh"}


class PackedLinear(torch.nn.Module):
    """An `nn.Linear` run by oneDNN, its weight reordered into oneDNN's blocked layout once; optionally
    followed by a fused GELU (`gelu` is oneDNN's algorithm name: "none" for erf, "tanh")."""

    def __init__(self, linear: torch.nn.Linear, gelu: str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.post_op, self.algorithm = ("gelu", gelu) if gelu else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ W.T + b` as `nn.Linear` computes it, then the GELU if one is fused."""
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x, self.packed, self.bias, self.post_op, [], self.algorithm
        )
        return out


def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """True when this torch build and CPU can run `PackedLinear` in `dtype` (float32 or bfloat16)."""
    available = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    if not (available and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def _gelu_algorithm(module: torch.nn.Module) -> str | None:
    """oneDNN's GELU algorithm for a transformers GELU module, None for anything else."""
    algorithm = _GELU_POST_OPS.get(type(module).__name__)
    if algorithm == "none" and getattr(module, "act", None) is not torch.nn.functional.gelu:
        return None  # GELUActivation(use_gelu_python=True)
    return algorithm


def pack_linears(model: torch.nn.Module, keep: torch.nn.Module) -> int:
    """Swap every `nn.Linear` except `keep` (the reward head) for a `PackedLinear`, fusing the GELU of
    an encoder's feed-forward block (`dense` then `intermediate_act_fn`, as in BERT and RoBERTa)."""
    swapped = 0
    for parent in list(model.modules()):
        gelu = _gelu_algorithm(getattr(parent, "intermediate_act_fn", torch.nn.Identity()))
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child is not keep:
                fused = gelu if name == "dense" else None
                setattr(parent, name, PackedLinear(child, gelu=fused))
                if fused:
                    parent.intermediate_act_fn = torch.nn.Identity()
                swapped += 1
    return swapped
