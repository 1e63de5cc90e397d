"""Baseline (non-pulse) demand of one SKU: intermittent counts per bucket, forecast by the
field's standard methods and chosen per SKU by its own rolling-origin error.

Methods (FORECAST.md): SES; Croston with the Syntetos-Boylan correction (SBA); TSB, which
smooths the probability of demand instead of the interval so obsolescence shows; ADIDA,
temporal aggregation to blocks of the mean interval. Each gives a flat per-bucket rate.
Quantiles of the demand over a horizon come from a negative binomial around that rate (its
dispersion from the series itself), then a conformal correction (conformalised quantile
intervals: how far past outcomes fell outside the NB interval made at their origin), so the
80 % interval covers about 80 %. Pure numpy/scipy: no I/O, no clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

Series = NDArray[np.float64]
Method = Callable[[Series], float]


def ses(demand: Series, alpha: float = 0.1) -> float:
    level = float(demand[0])
    for value in demand[1:]:
        level += alpha * (float(value) - level)
    return max(level, 0.0)


def _croston_parts(demand: Series, alpha: float) -> tuple[float, float] | None:
    """Smoothed size of non-zero demands and smoothed interval between them."""
    nonzero = np.flatnonzero(demand > 0)
    if nonzero.size == 0:
        return None
    size, interval = float(demand[nonzero[0]]), float(nonzero[0] + 1)
    for previous, index in itertools.pairwise(nonzero):
        size += alpha * (float(demand[index]) - size)
        interval += alpha * (float(index - previous) - interval)
    return size, interval


def croston_sba(demand: Series, alpha: float = 0.1) -> float:
    parts = _croston_parts(demand, alpha)
    if parts is None:
        return 0.0
    size, interval = parts
    return (1 - alpha / 2) * size / interval  # Syntetos-Boylan: Croston is biased upwards


def tsb(demand: Series, alpha: float = 0.1, beta: float = 0.05) -> float:
    occurred = demand > 0
    probability = float(occurred.mean())
    nonzero = demand[occurred]
    size = float(nonzero[0]) if nonzero.size else 0.0
    for value, hit in zip(demand, occurred, strict=True):
        probability += beta * (float(hit) - probability)
        if hit:
            size += alpha * (float(value) - size)
    return probability * size


def adida(demand: Series) -> float:
    """Aggregate into blocks of the mean inter-demand interval, SES there, spread back."""
    nonzero = np.flatnonzero(demand > 0)
    if nonzero.size == 0:
        return 0.0
    block = max(1, round(demand.size / nonzero.size))
    usable = demand.size - demand.size % block
    if usable < 2 * block:
        return float(demand.mean())
    blocks = demand[demand.size - usable :].reshape(-1, block).sum(axis=1)
    return ses(blocks, alpha=0.2) / block


METHODS: dict[str, Method] = {
    "ses": ses,
    "croston_sba": croston_sba,
    "tsb": tsb,
    "adida": adida,
}


@dataclass(frozen=True)
class BaselineForecast:
    method: str
    rate: float  # expected demand per bucket
    dispersion: float  # negative binomial size r (large = Poisson-like)
    # How far to move the interval's ends outwards (negative: inwards), in units of demand
    # over `calibrated_horizon` buckets, from past outcomes.
    conformal_shift: float
    calibrated_horizon: int
    coverage: float
    errors: dict[str, float]  # each method's rolling-origin mean absolute scaled error

    def quantiles(self, horizon: int, levels: Sequence[float]) -> list[float]:
        """Demand over the next `horizon` buckets at each level: never negative, monotone."""
        if horizon <= 0:
            raise ValueError("horizon must be positive")
        mean = self.rate * horizon
        if mean <= 0:
            return [0.0 for _ in levels]
        size = self.dispersion * horizon  # a sum of independent NB(r, p) is NB(h r, p)
        p = size / (size + mean)
        shift = self.conformal_shift * np.sqrt(horizon / self.calibrated_horizon)
        half = self.coverage / 2
        values = []
        for level in levels:
            raw = float(stats.nbinom.ppf(level, size, p))
            # The interval's ends move by the whole shift, levels nearer the median by less.
            reach = min(abs(level - 0.5) / half, 1.0) if half > 0 else 0.0
            values.append((level, float(max(0.0, raw + np.sign(level - 0.5) * shift * reach))))
        out: dict[float, float] = {}
        highest = 0.0
        for level, value in sorted(values):
            highest = max(highest, value)
            out[level] = highest
        return [out[level] for level in levels]


def _dispersion(demand: Series) -> float:
    """Method-of-moments NB size; a series no more spread than Poisson gets a large one."""
    mean, variance = float(demand.mean()), float(demand.var(ddof=1)) if demand.size > 1 else 0.0
    if mean <= 0 or variance <= mean * 1.0001:
        return 1e6
    return mean * mean / (variance - mean)


def _scaled_errors(demand: Series, method: Method, origins: Sequence[int], horizon: int) -> float:
    """Mean absolute error of the horizon's total from each origin, scaled by the in-sample
    naive one-step error (MASE-like), using only data before each origin."""
    errors = []
    for origin in origins:
        history, future = demand[:origin], demand[origin : origin + horizon]
        naive = float(np.abs(np.diff(history)).mean()) if history.size > 1 else 1.0
        forecast = method(history) * future.size
        errors.append(abs(forecast - float(future.sum())) / max(naive * future.size, 1e-9))
    return float(np.mean(errors)) if errors else float("inf")


def fit_baseline(
    demand: Sequence[float] | Series,
    *,
    horizon: int = 1,
    coverage: float = 0.8,
    min_history: int = 14,
    max_origins: int = 30,
) -> BaselineForecast:
    """Choose the method with the smallest rolling-origin error over this SKU's own series,
    and calibrate its `coverage` interval on the same origins' outcomes."""
    series = np.asarray(demand, dtype=np.float64)
    if series.ndim != 1 or series.size == 0:
        raise ValueError("demand must be a non-empty 1-D series")
    if np.any(series < 0) or not np.all(np.isfinite(series)):
        raise ValueError("demand must be finite and non-negative")
    first = max(min_history, series.size - max_origins * horizon)
    origins = list(range(first, series.size - horizon + 1, horizon))
    errors = {name: _scaled_errors(series, m, origins, horizon) for name, m in METHODS.items()}
    chosen = min(errors, key=lambda name: (errors[name], name)) if origins else "croston_sba"
    rate = METHODS[chosen](series)
    dispersion = _dispersion(series)
    shift = _conformal_shift(series, METHODS[chosen], origins, horizon, coverage)
    return BaselineForecast(chosen, rate, dispersion, shift, horizon, coverage, errors)


def _conformal_shift(
    series: Series, method: Method, origins: Sequence[int], horizon: int, coverage: float
) -> float:
    """Conformalised quantile interval: at each past origin, how far the outcome fell outside
    (positive) or inside (negative) the NB interval made then; the ceil((n+1)·coverage)-th
    smallest of those is the shift that would have covered `coverage` of them."""
    lower, upper = (1 - coverage) / 2, (1 + coverage) / 2
    scores = []
    for origin in origins:
        history = series[:origin]
        mean = method(history) * horizon
        actual = float(series[origin : origin + horizon].sum())
        if mean <= 0:
            low = high = 0.0
        else:
            size = _dispersion(history) * horizon
            low, high = stats.nbinom.ppf([lower, upper], size, size / (size + mean))
        scores.append(max(float(low) - actual, actual - float(high)))
    if len(scores) < 5:
        return 0.0  # too few outcomes to correct: the NB interval as it is
    rank = min(len(scores), int(np.ceil((len(scores) + 1) * coverage)))
    return float(np.sort(scores)[rank - 1])
