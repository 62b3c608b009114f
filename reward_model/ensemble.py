"""The one ensemble combiner: per-member normalization, aggregation, spread and calibration temperature.

Pure functions over floats, so that serving, evaluation and tests combine member rewards identically,
and tests can check them exactly against hand-computed values. A single model is an ensemble of one.
Aggregations include the conservative ones of Coste et al. (2024).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reward_model.errors import InvalidInput

if TYPE_CHECKING:
    from reward_model.checkpoint import ModelLayout, RewardMetadata


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


NO_LENGTH_FIT = "length_residual: the model's reward.json has no length fit (retrain it)"
MAX_LENGTH_PENALTY = 1e6
"""Bounds α so that α x tokens stays a finite reward (a reward is never returned non-finite)."""


@dataclass(frozen=True, slots=True)
class LengthControl:
    """Length control for one request: `penalty` α in `r - α x response tokens` (units of the
    reported reward), and `residual`: subtract each member's fitted length trend (reward.json)."""

    penalty: float = 0.0
    residual: bool = False


@dataclass(frozen=True, slots=True)
class CombinedReward:
    """One item's reward, the members' disagreement, and the member rewards it came from."""

    reward: float
    std: float
    member_rewards: tuple[float, ...]
    """On the reported scale: standardized when the combination is normalized."""


@dataclass(frozen=True)
class Combiner:
    """How member rewards become one reported reward, and the temperature on that reward's scale."""

    metadata: tuple[RewardMetadata, ...]
    weights: tuple[float, ...]
    aggregation: str = "mean"
    uncertainty_coef: float = 1.0
    ensemble_temperature: float | None = None
    """Fitted on the aggregated, standardized rewards of the ensemble as served (ensemble.json)."""

    @classmethod
    def for_layout(
        cls, layout: ModelLayout, *, aggregation: str | None = None, uncertainty_coef: float | None = None
    ) -> Combiner:
        """The manifest's defaults, overridden where the caller (a setting) says otherwise."""
        manifest = layout.manifest
        calibration = manifest.calibration if manifest is not None else None
        return cls(
            metadata=tuple(m.metadata for m in layout.members),
            weights=tuple(m.weight for m in layout.members),
            aggregation=aggregation or (manifest.aggregation if manifest else "mean"),
            uncertainty_coef=uncertainty_coef
            if uncertainty_coef is not None
            else (manifest.uncertainty_coef if manifest else 1.0),
            ensemble_temperature=calibration.temperature if calibration is not None else None,
        )

    def normalizes(self, requested: bool) -> bool:
        """Raw scales differ between members, so an ensemble always reports standardized rewards."""
        return len(self.metadata) > 1 or requested

    def combine(
        self,
        raw: Sequence[float],
        *,
        normalized: bool,
        method: str | None = None,
        length: LengthControl | None = None,
        response_tokens: Sequence[int] = (),
    ) -> CombinedReward:
        """One item's raw member rewards (in member order) into its reported reward.

        With `length`: each member's own length trend is subtracted from its raw reward first
        (`residual`), and `penalty` x the first member's response tokens from the result."""
        if length is not None and length.residual:
            raw = [self._residual(i, r, response_tokens[i]) for i, r in enumerate(raw)]
        values = tuple(self._normalize(i, r) for i, r in enumerate(raw)) if normalized else tuple(raw)
        reward = aggregate(
            values, method or self.aggregation, weights=self.weights, coef=self.uncertainty_coef
        )
        if length is not None and length.penalty:
            reward -= length.penalty * response_tokens[0]
        return CombinedReward(reward, spread(values), values)

    def length_fits(self) -> bool:
        """Whether every member's reward.json has a length trend to subtract."""
        return all(m.length is not None for m in self.metadata)

    def _residual(self, index: int, reward: float, tokens: int) -> float:
        fit = self.metadata[index].length
        if fit is None:
            raise InvalidInput(NO_LENGTH_FIT)
        # centred on the training responses' mean length, so the normalization statistics still hold
        return reward - fit.slope * (tokens - fit.mean_tokens)

    def temperature(self, normalized: bool) -> float:
        """Calibration temperature T in `P(a better) = sigmoid((r_a - r_b) / T)`, on the reported scale.

        Raw rewards: the first member's own T. Standardized: the ensemble's fitted T when the manifest
        has one, else the members' mean T / std.
        """
        if not normalized:
            return self.metadata[0].calibration.temperature
        if len(self.metadata) > 1 and self.ensemble_temperature is not None:
            return self.ensemble_temperature
        scaled = [m.calibration.temperature / m.normalization.std for m in self.metadata]
        return math.fsum(scaled) / len(scaled)

    def _normalize(self, index: int, reward: float) -> float:
        stats = self.metadata[index].normalization
        return (reward - stats.mean) / stats.std


def preference_probability(margin: float, temperature: float) -> float:
    """sigmoid(margin / T), computed without overflow."""
    x = margin / temperature
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
