"""Calibration of pairwise preferences: temperature fitting, NLL and expected calibration error."""

from __future__ import annotations

import math

import numpy as np

from reward_model.checkpoint import LengthFit


def pair_nll(margins: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `P(chosen better) = sigmoid(margin / T)`."""
    return float(np.mean(np.logaddexp(0.0, -np.asarray(margins, dtype=np.float64) / temperature)))


def fit_temperature(
    margins: np.ndarray, *, low: float = 1e-3, high: float = 1e3, iterations: int = 200
) -> float:
    """The T > 0 minimizing `pair_nll`, by golden-section search on log T.

    The NLL is convex in 1/T, hence unimodal in log T, so the search finds the global minimum
    (clamped to [low, high] when the pairs are perfectly separated or pure noise).
    """
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = pair_nll(margins, math.exp(c)), pair_nll(margins, math.exp(d))
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = pair_nll(margins, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = pair_nll(margins, math.exp(d))
    return math.exp((a + b) / 2.0)


def reliability(margins: np.ndarray, temperature: float = 1.0, bins: int = 10) -> dict[str, list[float]]:
    """Top-label reliability table: confidence `sigmoid(|m| / T)` in [0.5, 1] against accuracy, per bin."""
    margins = np.asarray(margins, dtype=np.float64)
    confidence = 1.0 / (1.0 + np.exp(-np.abs(margins) / temperature))
    correct = (margins > 0).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": [], "low": [], "high": []}
    for b in range(bins):
        mask = index == b
        table["low"].append(float(edges[b]))
        table["high"].append(float(edges[b + 1]))
        table["count"].append(float(mask.sum()))
        table["confidence"].append(float(confidence[mask].mean()) if mask.any() else float("nan"))
        table["accuracy"].append(float(correct[mask].mean()) if mask.any() else float("nan"))
    return table


def expected_calibration_error(margins: np.ndarray, temperature: float = 1.0, bins: int = 10) -> float:
    """ECE over `bins` equal-width confidence bins: sum_b (n_b / n) |accuracy_b - confidence_b|."""
    table = reliability(margins, temperature, bins)
    total = sum(table["count"])
    return float(
        sum(
            n / total * abs(acc - conf)
            for n, acc, conf in zip(table["count"], table["accuracy"], table["confidence"], strict=True)
            if n
        )
    )


def fit_length(rewards: np.ndarray, response_tokens: np.ndarray) -> LengthFit | None:
    """The reward's least-squares linear trend in response length (None when lengths do not vary)."""
    if len(rewards) < 2 or float(response_tokens.std()) == 0.0 or float(rewards.std()) == 0.0:
        return None
    slope = float(np.cov(response_tokens, rewards, bias=True)[0, 1] / response_tokens.var())
    correlation = float(np.clip(np.corrcoef(response_tokens, rewards)[0, 1], -1.0, 1.0))
    return LengthFit(slope=slope, mean_tokens=float(response_tokens.mean()), correlation=correlation)
