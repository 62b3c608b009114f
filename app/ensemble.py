"""Aggregation of member rewards into one reward, the conservative ones included (Coste et al. 2024).

Plain functions over floats, so that tests can check them exactly against hand-computed values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from app.errors import InvalidInput


def spread(values: Sequence[float]) -> float:
    """Population standard deviation of member rewards: the ensemble's disagreement (0 for one member)."""
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def aggregate(values: Sequence[float], method: str, *, weights: Sequence[float], coef: float) -> float:
    """Combine one item's member rewards with `mean`, `median`, `min`, `mean_minus_std` or `weighted`."""
    if method == "mean":
        return math.fsum(values) / len(values)
    if method == "median":
        return float(statistics.median(values))
    if method == "min":
        return min(values)
    if method == "mean_minus_std":
        return math.fsum(values) / len(values) - coef * spread(values)
    if method == "weighted":
        total = math.fsum(weights)
        if total <= 0:
            raise InvalidInput("aggregation 'weighted' needs member weights with a positive sum")
        return math.fsum(w * v for w, v in zip(weights, values, strict=True)) / total
    raise InvalidInput(f"unknown aggregation {method!r}")
