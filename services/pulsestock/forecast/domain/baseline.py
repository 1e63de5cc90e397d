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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

Series = NDArray[np.float64]
Method = Callable[[Series], float]


# Block length of the smoothing recursion's closed form: (1 - alpha)^-k stays far inside a
# float's range for every alpha < 1 (10^64 at alpha = 0.9).
_BLOCK = 64


def ses_path(demand: Series, alpha: float = 0.1) -> Series:
    """The SES level after each observation (initialised at the first): element t is the
    forecast made with demand[: t + 1]. The recursion level_t = (1 - alpha) level_t-1 +
    alpha x_t in closed form, a block of buckets at a time (cumulative sums of discounted
    observations), not a Python loop: numpy only (scipy.signal costs seconds at import)."""
    series = np.asarray(demand, dtype=np.float64)
    if series.size == 0:
        return series
    if alpha >= 1.0:
        return series.copy()
    keep = 1.0 - alpha
    out = np.empty_like(series)
    out[0] = level = float(series[0])
    powers = keep ** np.arange(1, _BLOCK + 1, dtype=np.float64)
    for start in range(1, series.size, _BLOCK):
        block = series[start : start + _BLOCK]
        grow = powers[: block.size]
        levels = grow * (level + alpha * np.cumsum(block / grow))
        out[start : start + block.size] = levels
        level = float(levels[-1])
    return out


def ses(demand: Series, alpha: float = 0.1) -> float:
    return max(float(ses_path(np.asarray(demand, dtype=np.float64), alpha)[-1]), 0.0)


def _demand_occasions(demand: Series) -> tuple[NDArray[np.intp], Series, Series]:
    """Indices of non-zero demand, their sizes, and the intervals before each (the first
    counted from one bucket before the series, as Croston and statsforecast do)."""
    nonzero = np.flatnonzero(demand > 0)
    intervals = np.diff(nonzero, prepend=-1).astype(np.float64)
    return nonzero, demand[nonzero].astype(np.float64), intervals


def _per_bucket(nonzero: NDArray[np.intp], values: Series, size: int) -> Series:
    """Values known at each demand occasion, carried forward to every bucket; 0 before the
    first occasion."""
    out = np.zeros(size)
    if nonzero.size == 0:
        return out
    count = np.cumsum(np.isin(np.arange(size), nonzero))  # occasions seen up to t
    seen = count > 0
    out[seen] = values[count[seen] - 1]
    return out


def croston_path(demand: Series, alpha: float = 0.1, *, sba: bool = True) -> Series:
    """Croston's rate after each bucket: smoothed size over smoothed interval, both updated
    on demand occasions only; with the Syntetos-Boylan factor (1 - alpha/2) by default,
    since plain Croston is biased upwards."""
    nonzero, sizes, intervals = _demand_occasions(demand)
    if nonzero.size == 0:
        return np.zeros(demand.size)
    rates = ses_path(sizes, alpha) / ses_path(intervals, alpha)
    factor = (1 - alpha / 2) if sba else 1.0
    return factor * _per_bucket(nonzero, rates, demand.size)


def croston_sba(demand: Series, alpha: float = 0.1) -> float:
    series = np.asarray(demand, dtype=np.float64)
    return float(croston_path(series, alpha)[-1]) if series.size else 0.0


def tsb_path(demand: Series, alpha: float = 0.1, beta: float = 0.05) -> Series:
    """TSB after each bucket: the probability of demand smoothed every bucket (so it decays
    while nothing sells), times the size smoothed on demand occasions."""
    if demand.size == 0:
        return demand.astype(np.float64)
    probability = ses_path((demand > 0).astype(np.float64), beta)
    nonzero, sizes, _ = _demand_occasions(demand)
    if nonzero.size == 0:
        return np.zeros(demand.size)
    return probability * _per_bucket(nonzero, ses_path(sizes, alpha), demand.size)


def tsb(demand: Series, alpha: float = 0.1, beta: float = 0.05) -> float:
    series = np.asarray(demand, dtype=np.float64)
    return float(tsb_path(series, alpha, beta)[-1]) if series.size else 0.0


def adida(demand: Series) -> float:
    """Aggregate into blocks of the mean inter-demand interval, SES there, spread back."""
    series = np.asarray(demand, dtype=np.float64)
    nonzero = np.count_nonzero(series > 0)
    if nonzero == 0:
        return 0.0
    block = max(1, round(series.size / nonzero))
    usable = series.size - series.size % block
    if usable < 2 * block:
        return float(series.mean())
    blocks = series[series.size - usable :].reshape(-1, block).sum(axis=1)
    return ses(blocks, alpha=0.2) / block


def _at_origins(path: Callable[[Series], Series]) -> Callable[[Series, Sequence[int]], Series]:
    """A method whose state after each bucket comes from one pass: its forecast at origin o
    is the state after bucket o - 1, i.e. made from demand[:o] alone."""

    def forecasts(demand: Series, origins: Sequence[int]) -> Series:
        return path(demand)[np.asarray(origins, dtype=np.intp) - 1]

    return forecasts


def _adida_at_origins(demand: Series, origins: Sequence[int]) -> Series:
    return np.array([adida(demand[:origin]) for origin in origins])


METHODS: dict[str, Method] = {
    "ses": ses,
    "croston_sba": croston_sba,
    "tsb": tsb,
    "adida": adida,
}
# The same methods evaluated at many origins at once (fitting scores every origin).
AT_ORIGINS: dict[str, Callable[[Series, Sequence[int]], Series]] = {
    "ses": _at_origins(ses_path),
    "croston_sba": _at_origins(croston_path),
    "tsb": _at_origins(tsb_path),
    "adida": _adida_at_origins,
}


@dataclass(frozen=True)
class BaselineForecast:
    method: str
    rate: float  # expected demand per bucket
    dispersion: float  # negative binomial size r (large = Poisson-like)
    # How far to move the interval's upper end outwards (negative: inwards), in units of
    # demand over `calibrated_horizon` buckets, from past outcomes.
    conformal_shift: float
    calibrated_horizon: int
    coverage: float
    errors: dict[str, float]  # each method's rolling-origin mean absolute scaled error
    # The lower end's shift over `calibrated_horizon` (None: the same as the upper end's),
    # and both ends' shifts for a single bucket, calibrated on single buckets' outcomes
    # (None: derived from the horizon's by the square-root rule).
    lower_shift: float | None = None
    step_shifts: tuple[float, float] | None = None

    def shift(self, horizon: int, *, upper: bool) -> float:
        """The conformal shift of one end of the interval of demand over `horizon` buckets.

        Calibrated at two horizons (one bucket, and `calibrated_horizon`), it is linear in
        the horizon between them and proportional beyond: a total's miss grows with the
        horizon when the level is off (the common case), not with its square root."""
        total = self.conformal_shift if upper or self.lower_shift is None else self.lower_shift
        calibrated = max(self.calibrated_horizon, 1)
        if self.step_shifts is None:
            return total * float(np.sqrt(horizon / calibrated))
        step = self.step_shifts[1] if upper else self.step_shifts[0]
        if calibrated == 1 or horizon == 1:
            return step * horizon if calibrated == 1 else step
        if horizon >= calibrated:
            return total * horizon / calibrated
        return step + (total - step) * (horizon - 1) / (calibrated - 1)

    def quantiles(self, horizon: int, levels: Sequence[float]) -> list[float]:
        """Demand over the next `horizon` buckets at each level: never negative, monotone."""
        if horizon <= 0:
            raise ValueError("horizon must be positive")
        mean = self.rate * horizon
        if mean <= 0:
            return [0.0 for _ in levels]
        size = self.dispersion * horizon  # a sum of independent NB(r, p) is NB(h r, p)
        p = size / (size + mean)
        chosen = np.asarray(levels, dtype=np.float64)
        raw = stats.nbinom.ppf(chosen, size, p)
        half = self.coverage / 2
        # The interval's ends move by the whole shift, levels nearer the median by less.
        reach = np.minimum(np.abs(chosen - 0.5) / half, 1.0) if half > 0 else chosen * 0.0
        shifted = np.where(
            chosen >= 0.5,
            raw + self.shift(horizon, upper=True) * reach,
            raw - self.shift(horizon, upper=False) * reach,
        )
        order = np.argsort(chosen, kind="stable")
        monotone = np.maximum.accumulate(np.maximum(shifted[order], 0.0))
        out = np.empty_like(monotone)
        out[order] = monotone
        return [float(v) for v in out]


def _dispersion(demand: Series) -> float:
    """Method-of-moments NB size; a series no more spread than Poisson gets a large one."""
    return float(_dispersions(np.asarray(demand, dtype=np.float64), [demand.size])[0])


def _dispersions(demand: Series, origins: Sequence[int]) -> Series:
    """_dispersion of demand[:o] for every origin o, from running sums."""
    at = np.asarray(origins, dtype=np.intp)
    sums, squares = np.cumsum(demand)[at - 1], np.cumsum(demand * demand)[at - 1]
    mean = sums / at
    variance = np.where(at > 1, (squares - at * mean * mean) / np.maximum(at - 1, 1), 0.0)
    overdispersed = (mean > 0) & (variance > mean * 1.0001)
    safe = np.where(overdispersed, variance - mean, 1.0)
    return np.where(overdispersed, mean * mean / safe, 1e6)


def _naive_scales(demand: Series, origins: Sequence[int]) -> Series:
    """Mean absolute one-step change of demand[:o] for every origin o (1 when o < 2)."""
    at = np.asarray(origins, dtype=np.intp)
    steps = np.concatenate(([0.0], np.cumsum(np.abs(np.diff(demand)))))
    return np.where(at > 1, steps[at - 1] / np.maximum(at - 1, 1), 1.0)


def _scaled_errors(demand: Series, rates: Series, origins: Sequence[int], horizon: int) -> float:
    """Mean absolute error of the horizon's total from each origin, scaled by the in-sample
    naive one-step error (MASE-like), using only data before each origin."""
    if not len(origins):
        return float("inf")
    actual = _horizon_totals(demand, origins, horizon)
    naive = _naive_scales(demand, origins)
    errors = np.abs(rates * horizon - actual) / np.maximum(naive * horizon, 1e-9)
    return float(errors.mean())


def _horizon_totals(demand: Series, origins: Sequence[int], horizon: int) -> Series:
    at = np.asarray(origins, dtype=np.intp)
    sums = np.concatenate(([0.0], np.cumsum(demand)))
    return sums[at + horizon] - sums[at]


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
    rates = {name: at(series, origins) for name, at in AT_ORIGINS.items()} if origins else {}
    errors = {name: _scaled_errors(series, r, origins, horizon) for name, r in rates.items()}
    if not errors:
        errors = {name: float("inf") for name in METHODS}
    chosen = min(errors, key=lambda name: (errors[name], name)) if origins else "croston_sba"
    rate = max(METHODS[chosen](series), 0.0)
    dispersion = _dispersion(series)
    if origins:
        lower, upper = _conformal_shifts(series, rates[chosen], origins, horizon, coverage)
        steps = _conformal_shifts(series, rates[chosen], origins, 1, coverage, steps=horizon)
    else:
        lower = upper = 0.0
        steps = (0.0, 0.0)
    return BaselineForecast(
        chosen, rate, dispersion, upper, horizon, coverage, errors, lower, steps
    )


def _conformal_shifts(
    series: Series,
    rates: Series,
    origins: Sequence[int],
    horizon: int,
    coverage: float,
    *,
    steps: int = 1,
) -> tuple[float, float]:
    """Conformalised quantile interval, each end on its own: at each past origin, how far
    the outcome fell below the NB interval's lower end (positive) or above its upper end,
    made then; each end's shift is the ceil((n+1)(1 - a/2))-th smallest of its own scores
    (a = 1 - coverage), so each end misses about a/2 of them. Separate ends matter for
    intermittent demand: a lower end at zero is right on a day that is usually zero, however
    far the upper end must move. With `steps` > 1 the outcomes are the single buckets at
    each of the `steps` buckets after every origin (horizon 1 each, the rate made at the
    origin): what a per-bucket quantile is judged on."""
    at = np.asarray(origins, dtype=np.intp)
    if steps > 1:
        offsets = np.arange(steps)
        valid = at[:, None] + offsets[None, :] < series.size
        rows, cols = np.nonzero(valid)
        base = at[rows]
        targets = base + offsets[cols]
        rates = np.asarray(rates)[rows]
        actual = series[targets]
        dispersion_at = _dispersions(series, list(base))
    else:
        actual = _horizon_totals(series, origins, horizon)
        dispersion_at = _dispersions(series, origins)
    if actual.size < 5:
        return 0.0, 0.0  # too few outcomes to correct: the NB interval as it is
    lower, upper = (1 - coverage) / 2, (1 + coverage) / 2
    means = np.maximum(rates, 0.0) * horizon
    sizes = dispersion_at * horizon
    positive = means > 0
    low, high = np.zeros(actual.size), np.zeros(actual.size)
    if positive.any():
        m, r = means[positive], sizes[positive]
        low[positive] = stats.nbinom.ppf(lower, r, r / (r + m))
        high[positive] = stats.nbinom.ppf(upper, r, r / (r + m))
    side = 1 - (1 - coverage) / 2
    rank = min(actual.size, int(np.ceil((actual.size + 1) * side)))
    below = float(np.sort(low - actual)[rank - 1])
    above = float(np.sort(actual - high)[rank - 1])
    return below, above
