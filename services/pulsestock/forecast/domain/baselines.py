"""The reference forecasters every forecast report includes (FORECAST.md: naive, seasonal
naive, SES, Croston, SBA, TSB, ADIDA, an exponential-decay fit, a power-law-decay fit and
Szabo-Huberman's log-linear rule), each a function history -> per-step means.

They are scored against ours, so their distributions are built the same way for all of
them: a negative binomial around each step's mean with the dispersion of the history itself
(baseline._dispersion: method-of-moments NB size, Poisson-like when the history is not
overdispersed). No conformal correction: that is part of our method, not of theirs. The
intermittent methods reuse baseline.py's implementations (plain Croston = croston_path
without the Syntetos-Boylan factor). The decay fits and the log-linear rule are the simple
versions: least squares on log(demand + 0.5) since the recent peak, and c fitted on the
series' own most recent cumulative ratios. Pure numpy/scipy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain import baseline
from scipy import stats

Series = NDArray[np.float64]
Forecaster = Callable[[Series, int, int | None], Series]

# How many recent buckets the decay fits look at for the peak they decay from.
DECAY_WINDOW = 28
LOG_OFFSET = 0.5  # log(y + 0.5): zero buckets stay finite in the decay fits


def _flat(value: float, horizon: int) -> Series:
    return np.full(horizon, max(float(value), 0.0))


def naive(history: Series, horizon: int, season: int | None = None) -> Series:
    return _flat(history[-1], horizon)


def seasonal_naive(history: Series, horizon: int, season: int | None = None) -> Series:
    """The value one season earlier, repeated; when the history holds fewer than two
    seasons (or there is no season) it is the naive forecast, so every series is scored by
    every model and the comparisons stay paired."""
    if season is None or season < 2 or history.size < 2 * season:
        return naive(history, horizon)
    last = history[history.size - season :]
    return np.maximum(last[np.arange(horizon) % season], 0.0)


def ses_forecast(history: Series, horizon: int, season: int | None = None) -> Series:
    return _flat(baseline.ses(history), horizon)


def croston_classic(history: Series, horizon: int, season: int | None = None) -> Series:
    path = baseline.croston_path(history, sba=False)
    return _flat(path[-1] if path.size else 0.0, horizon)


def sba(history: Series, horizon: int, season: int | None = None) -> Series:
    return _flat(baseline.croston_sba(history), horizon)


def tsb_forecast(history: Series, horizon: int, season: int | None = None) -> Series:
    return _flat(baseline.tsb(history), horizon)


def adida_forecast(history: Series, horizon: int, season: int | None = None) -> Series:
    return _flat(baseline.adida(history), horizon)


def _since_peak(history: Series) -> tuple[Series, Series, float]:
    """The recent window from its peak on (ages 0, 1, ...) and the age of the next bucket.
    With fewer than three buckets after the peak the whole window is used (age 0 = its
    start): a decay needs some buckets to be fitted on."""
    window = history[-DECAY_WINDOW:]
    peak = int(np.argmax(window))
    if window.size - peak < 3:
        peak = 0
    tail = window[peak:]
    ages = np.arange(tail.size, dtype=np.float64)
    return ages, np.log(tail + LOG_OFFSET), float(tail.size)


def _decay(x: Series, logs: Series) -> tuple[float, float]:
    """Least-squares intercept and slope, the slope clamped to <= 0 (a decay fit that
    extrapolates growth would explode within the horizon)."""
    if x.size < 2 or np.ptp(x) == 0:
        return float(logs.mean()), 0.0
    slope, intercept = np.polyfit(x, logs, 1)
    if slope > 0:
        return float(logs.mean()), 0.0
    return float(intercept), float(slope)


def exponential_decay(history: Series, horizon: int, season: int | None = None) -> Series:
    """y(t) + 0.5 = A exp(-t / tau) fitted since the recent peak, extrapolated."""
    ages, logs, next_age = _since_peak(history)
    intercept, slope = _decay(ages, logs)
    future = next_age + np.arange(horizon)
    return np.asarray(np.maximum(np.exp(intercept + slope * future) - LOG_OFFSET, 0.0))


def power_law_decay(history: Series, horizon: int, season: int | None = None) -> Series:
    """y(t) + 0.5 = A (t + 1)^(-b) fitted since the recent peak (Crane-Sornette's
    t^-(1-theta) relaxation), extrapolated."""
    ages, logs, next_age = _since_peak(history)
    intercept, slope = _decay(np.log(ages + 1.0), logs)
    future = np.log(next_age + np.arange(horizon) + 1.0)
    return np.asarray(np.maximum(np.exp(intercept + slope * future) - LOG_OFFSET, 0.0))


def szabo_huberman(history: Series, horizon: int, season: int | None = None) -> Series:
    """log(C(t + H) + 1) = log(C(t) + 1) + c, C the cumulative demand since the history's
    start. c is the median of that log ratio over the series' own `horizon` most recent
    complete pairs (the ages nearest the origin's, as the rule is fitted at a fixed age);
    the predicted increment is spread evenly over the horizon."""
    cumulative = np.concatenate(([0.0], np.cumsum(history)))
    last = history.size - horizon  # latest t whose C(t + H) is known
    if last < 1:
        return _flat(history.mean() if history.size else 0.0, horizon)
    starts = np.arange(max(1, last - horizon + 1), last + 1)
    ratios = np.log(cumulative[starts + horizon] + 1.0) - np.log(cumulative[starts] + 1.0)
    c = float(np.median(ratios))
    now = cumulative[-1] + 1.0
    return _flat((now * np.exp(c) - now) / horizon, horizon)


def szabo_huberman_factors(pulses: Sequence[Series], age: int, horizon: int) -> Series:
    """Szabo-Huberman's c(age, age + horizon) as its authors fit it: per platform, from other
    items' histories, log((C(age + horizon) + 1) / (C(age) + 1)) with C the cumulative count
    since onset; one factor per item long enough to have both."""
    out = []
    for series in pulses:
        values = np.asarray(series, dtype=np.float64)
        if values.size < age + 1:
            continue
        cumulative = np.concatenate(([0.0], np.cumsum(values)))
        end = min(age + horizon, values.size)
        out.append(np.log(cumulative[end] + 1.0) - np.log(cumulative[age] + 1.0))
    return np.asarray(out, dtype=np.float64)


def szabo_huberman_trained(
    history: Series, factors: Series, levels: Sequence[float]
) -> tuple[float, list[float]]:
    """The remaining count after `history` (since onset) by the log-linear rule with factors
    learned on other items (szabo_huberman_factors): the point uses their mean (the rule's
    least-squares c), the quantiles their empirical quantiles."""
    now = float(np.sum(history)) + 1.0
    if factors.size == 0:
        return 0.0, [0.0 for _ in levels]
    point = now * (np.exp(float(factors.mean())) - 1.0)
    values = now * (np.exp(np.quantile(factors, list(levels))) - 1.0)
    return max(point, 0.0), [max(float(v), 0.0) for v in values]


REFERENCES: dict[str, Forecaster] = {
    "naive": naive,
    "seasonal_naive": seasonal_naive,
    "ses": ses_forecast,
    "croston": croston_classic,
    "sba": sba,
    "tsb": tsb_forecast,
    "adida": adida_forecast,
    "exponential_decay": exponential_decay,
    "power_law_decay": power_law_decay,
    "szabo_huberman": szabo_huberman,
}

# The season length a bucket has, for seasonal naive (None: no season assumed).
SEASONS: dict[str, int] = {"5min": 288, "hourly": 24, "daily": 7, "weekly": 52, "monthly": 12}


def nb_quantiles(means: Series, dispersion: float, levels: Sequence[float]) -> Series:
    """Quantiles of NB(size = dispersion, mean = m) for each step's mean m: shape
    (len(means), len(levels)); a zero mean gives zeros."""
    m = np.maximum(np.asarray(means, dtype=np.float64), 0.0)[:, None]
    taus = np.asarray(levels, dtype=np.float64)[None, :]
    size = float(dispersion)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(m > 0, size / (size + m), 1.0)
    values = stats.nbinom.ppf(taus, size, np.broadcast_to(p, (m.shape[0], taus.shape[1])))
    return np.where(m > 0, np.asarray(values, dtype=np.float64), 0.0)


@dataclass(frozen=True)
class ReferenceForecast:
    model: str
    means: Series  # expected demand per step, shape (horizon,)
    dispersion: float  # NB size shared by every step

    def quantiles(self, levels: Sequence[float]) -> Series:
        return nb_quantiles(self.means, self.dispersion, levels)


def reference_forecasts(
    history: Sequence[float] | Series, horizon: int, *, season: int | None = None
) -> dict[str, ReferenceForecast]:
    """Every reference model's forecast from `history` (oldest first, non-negative)."""
    series = np.asarray(history, dtype=np.float64)
    if series.ndim != 1 or series.size == 0:
        raise ValueError("history must be a non-empty 1-D series")
    if horizon <= 0:
        raise ValueError("horizon must be positive")
    dispersion = baseline._dispersion(series)
    return {
        name: ReferenceForecast(name, method(series, horizon, season), dispersion)
        for name, method in REFERENCES.items()
    }
