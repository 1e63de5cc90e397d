"""Forecast scores (FORECAST.md, "How to measure a forecast"): pure numpy, no I/O.

Conventions, so that every report means the same thing:

- Pinball loss at level tau: tau * (y - q) when y >= q, (1 - tau) * (q - y) otherwise,
  averaged over the scored (origin, step) cells.
- CRPS from quantiles: twice the pinball loss integrated over tau, approximated by the
  midpoint rule on `CRPS_LEVELS` (20 levels, tau = 0.025, 0.075, ..., 0.975). This is exact
  for the piecewise-constant quantile function those levels define, and needs no samples.
  From samples: the energy form E|X - y| - E|X - X'| / 2 (the unbiased "fair" version is not
  used; with a few hundred draws the difference is below a per cent).
- Coverage: the share of outcomes inside [lower, upper], both ends included (counts are
  integers, and an NB quantile that equals the outcome did cover it).
- RMSSE and MASE are scaled by the in-sample naive one-step error of the history before the
  origin (squared for RMSSE, absolute for MASE), as M5 does. A history with no one-step
  change has no scale: the score is NaN, and aggregates skip it (`np.nanmean`).
- Log ratio of cumulative demand: log((forecast total + 1) / (actual total + 1)) over the
  horizon; the +1 keeps a zero actual or forecast finite and weighs little on large totals.
  Positive means over-forecast.
- Paired bootstrap: resample series (units) with replacement, seeded, and take the 2.5 and
  97.5 percentiles of the mean difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

Series = NDArray[np.float64]

CRPS_LEVELS: tuple[float, ...] = tuple((k + 0.5) / 20 for k in range(20))


def _levels(levels: Sequence[float]) -> Series:
    out = np.asarray(levels, dtype=np.float64)
    if out.ndim != 1 or out.size == 0 or np.any((out <= 0) | (out >= 1)):
        raise ValueError("levels must lie strictly between 0 and 1")
    return out


def pinball(actual: ArrayLike, quantiles: ArrayLike, levels: Sequence[float]) -> Series:
    """Mean pinball loss per level. `actual` has shape (n,), `quantiles` (n, len(levels))."""
    taus = _levels(levels)
    y = np.asarray(actual, dtype=np.float64).reshape(-1, 1)
    q = np.asarray(quantiles, dtype=np.float64).reshape(y.shape[0], taus.size)
    diff = y - q
    loss = np.where(diff >= 0, taus * diff, (taus - 1) * diff)
    return np.asarray(loss.mean(axis=0), dtype=np.float64)


def crps_from_quantiles(actual: ArrayLike, quantiles: ArrayLike, levels: Sequence[float]) -> float:
    """CRPS as twice the level-averaged pinball loss. Pass the quantiles at `CRPS_LEVELS` for
    the documented approximation; other evenly spread levels work the same way."""
    return float(2.0 * pinball(actual, quantiles, levels).mean())


def crps_from_samples(actual: ArrayLike, samples: ArrayLike) -> float:
    """Mean energy-form CRPS; `samples` has shape (n, draws). E|X - X'| from the sorted
    draws in O(draws log draws): sum_i (2i - m - 1) x_(i) * 2 / m^2."""
    y = np.asarray(actual, dtype=np.float64).reshape(-1)
    x = np.sort(np.asarray(samples, dtype=np.float64).reshape(y.size, -1), axis=1)
    m = x.shape[1]
    first = np.abs(x - y[:, None]).mean(axis=1)
    weights = 2 * np.arange(1, m + 1) - m - 1
    spread = 2.0 * (x * weights).sum(axis=1) / (m * m)
    return float((first - 0.5 * spread).mean())


def coverage(actual: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    y = np.asarray(actual, dtype=np.float64)
    low, high = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    return float(np.mean((y >= low) & (y <= high)))


def naive_scale(history: ArrayLike, *, squared: bool) -> float:
    """Mean (squared or absolute) one-step change of the history; NaN when it never moves
    or is shorter than two buckets."""
    h = np.asarray(history, dtype=np.float64)
    if h.size < 2:
        return float("nan")
    steps = np.diff(h)
    scale = float(np.mean(steps * steps) if squared else np.mean(np.abs(steps)))
    return scale if scale > 0 else float("nan")


def rmsse(actual: ArrayLike, forecast: ArrayLike, history: ArrayLike) -> float:
    """Root mean squared scaled error of one origin's horizon."""
    y, f = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    scale = naive_scale(history, squared=True)
    return float(np.sqrt(np.mean((y - f) ** 2) / scale))


def mase(actual: ArrayLike, forecast: ArrayLike, history: ArrayLike) -> float:
    """Mean absolute scaled error of one origin's horizon."""
    y, f = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    return float(np.mean(np.abs(y - f)) / naive_scale(history, squared=False))


def log_ratio_cumulative(forecast: ArrayLike, actual: ArrayLike) -> float:
    """log((sum forecast + 1) / (sum actual + 1)) over the horizon."""
    total_f = float(np.sum(np.asarray(forecast, dtype=np.float64)))
    total_a = float(np.sum(np.asarray(actual, dtype=np.float64)))
    return float(np.log((total_f + 1.0) / (total_a + 1.0)))


def paired_bootstrap(
    ours: ArrayLike, theirs: ArrayLike, *, draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ours - theirs over paired units and its bootstrap 95 % interval (units where
    either is NaN are dropped first)."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired scores must have the same shape")
    diff = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, diff.size, size=(draws, diff.size))
    means = diff[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)
