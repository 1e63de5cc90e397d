"""A SKU's demand forecast: its baseline plus, while a pulse is on, the pulse's excess.

This is the one entry point the service, the offline CLI and the benchmarks share, so all
three forecast with the same code. Steps are buckets after the origin (step 0 = the first
bucket after the last observed one). Windows are half-open step ranges [start, end), which
is what replenishment asks: "orders between the bucket a shipment lands and the end of the
pulse".

Without a pulse the forecast is the baseline's: a flat rate, with quantiles of any window
from its negative binomial and conformal correction (analytic, cheap). With a pulse the
demand is the sum of two random paths, the baseline's counts and the pulse's excess (whose
draws carry its parameter uncertainty and count noise), so quantiles come from simulated
paths drawn with a fixed seed: the same inputs always give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain.baseline import BaselineForecast, fit_baseline
from pulsestock.forecast.domain.pulse import (
    DEFAULT_CONVERSION,
    Conversion,
    fit_pulse,
    fit_reach_pulse,
)
from scipy import stats

Series = NDArray[np.float64]

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
PATH_DRAWS = 400
PATH_HORIZON = 72
# A SKU nobody has sold yet: a documented prior instead of an error. One unit per 100
# buckets, dispersed (NB size 0.5): a forecast that says "probably nothing, maybe a few".
PRIOR_RATE = 0.01
PRIOR_DISPERSION = 0.5
MIN_BASELINE_HISTORY = 7


class PulseComponent(Protocol):
    """What the pulse model gives the forecast (pulse.PulseFit satisfies it)."""

    @property
    def model(self) -> str: ...

    def mean_path(self, horizon: int) -> NDArray[np.float64]: ...

    def sample_paths(
        self, horizon: int, draws: int, rng: np.random.Generator
    ) -> NDArray[np.float64]: ...


def validate_levels(levels: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(level) for level in levels)
    if not out or any(not 0.0 < level < 1.0 for level in out):
        raise ValueError("quantile levels must lie strictly between 0 and 1")
    return out


@dataclass(frozen=True)
class DemandForecast:
    baseline: BaselineForecast
    pulse: PulseComponent | None = None
    pulse_onset: int | None = None  # index in the history where the pulse began
    seed: int = 0
    _paths: dict[int, Series] = field(default_factory=dict, compare=False, repr=False)

    @property
    def model(self) -> str:
        if self.pulse is None:
            return self.baseline.method
        return f"{self.baseline.method}+{self.pulse.model}"

    def mean(self, horizon: int) -> Series:
        """Expected demand per step for `horizon` steps."""
        _check_horizon(horizon)
        means = np.full(horizon, self.baseline.rate, dtype=np.float64)
        if self.pulse is not None:
            means += np.maximum(self.pulse.mean_path(horizon), 0.0)
        return means

    def step_quantiles(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Series:
        """Quantiles of each step's demand: shape (horizon, len(levels)), monotone per row."""
        _check_horizon(horizon)
        chosen = validate_levels(levels)
        if self.pulse is None:
            row = self.baseline.quantiles(1, chosen)
            return np.tile(np.asarray(row, dtype=np.float64), (horizon, 1))
        return _monotone(np.quantile(self.paths(horizon), chosen, axis=0).T)

    def window_quantiles(
        self, start: int, end: int, levels: Sequence[float] = DEFAULT_LEVELS
    ) -> list[float]:
        """Quantiles of the total demand over steps [start, end)."""
        if start < 0 or end <= start:
            raise ValueError("a window needs 0 <= start < end")
        chosen = validate_levels(levels)
        if self.pulse is None:
            return self.baseline.quantiles(end - start, chosen)
        totals = self.paths(end)[:, start:end].sum(axis=1)
        return [float(v) for v in _monotone(np.quantile(totals, chosen)[None, :])[0]]

    def window_mean(self, start: int, end: int) -> float:
        if start < 0 or end <= start:
            raise ValueError("a window needs 0 <= start < end")
        return float(self.mean(end)[start:end].sum())

    def paths(self, horizon: int) -> Series:
        """Simulated demand paths, shape (PATH_DRAWS, horizon). Horizons up to PATH_HORIZON
        are the first columns of one PATH_HORIZON simulation (the service asks for the next
        day and the next 72 h on every refit: one simulation serves both, and the answer
        never depends on which was asked first); longer ones are simulated on their own."""
        length = max(horizon, PATH_HORIZON)
        cached = self._paths.get(length)
        if cached is None:
            rng = np.random.default_rng(self.seed)
            cached = _baseline_paths(self.baseline, length, rng)
            if self.pulse is not None:
                cached = cached + np.maximum(self.pulse.sample_paths(length, PATH_DRAWS, rng), 0.0)
            self._paths[length] = cached
        return cached[:, :horizon]

    @cached_property
    def accuracy(self) -> dict[str, float]:
        """The baseline methods' rolling-origin scaled errors on this SKU."""
        return dict(self.baseline.errors)


def _check_horizon(horizon: int) -> None:
    if horizon <= 0:
        raise ValueError("horizon must be positive")


def _monotone(rows: Series) -> Series:
    return np.maximum.accumulate(np.maximum(rows, 0.0), axis=1)


def _baseline_paths(baseline: BaselineForecast, horizon: int, rng: np.random.Generator) -> Series:
    if baseline.rate <= 0:
        return np.zeros((PATH_DRAWS, horizon))
    size = baseline.dispersion
    p = size / (size + baseline.rate)
    return rng.negative_binomial(size, p, size=(PATH_DRAWS, horizon)).astype(np.float64)


def prior_baseline(
    rate: float = PRIOR_RATE, dispersion: float = PRIOR_DISPERSION
) -> BaselineForecast:
    return BaselineForecast("prior", rate, dispersion, 0.0, 1, 0.8, {})


def validated(history: Sequence[float] | Series) -> Series:
    series = np.asarray(history, dtype=np.float64)
    if series.ndim != 1:
        raise ValueError("history must be a 1-D series")
    if series.size and (np.any(series < 0) or not np.all(np.isfinite(series))):
        raise ValueError("history must be finite and non-negative")
    return series


def baseline_before(series: Series, onset: int | None, horizon_hint: int = 1) -> BaselineForecast:
    """The baseline fitted on the buckets before `onset` (the pulse's own demand would
    inflate it), on all of them without one, the documented prior with too little history."""
    before = series if onset is None else series[: max(onset, 0)]
    if before.size >= MIN_BASELINE_HISTORY and float(before.sum()) > 0:
        return fit_baseline(before, horizon=horizon_hint)
    if before.size > 0 and float(before.sum()) > 0:
        return prior_baseline(rate=float(before.mean()))
    return prior_baseline()


def fit_demand(
    history: Sequence[float] | Series,
    *,
    pulse_onset: int | None = None,
    pulse: PulseComponent | None = None,
    horizon_hint: int = 1,
    seed: int = 0,
) -> DemandForecast:
    """The forecast from a SKU's per-bucket demand `history` (oldest first): the baseline
    (see baseline_before) plus `pulse`, the pulse component already fitted on the excess
    since `pulse_onset` (see fit_pulse_at); the caller decides whether a pulse is on."""
    series = validated(history)
    return DemandForecast(
        baseline_before(series, pulse_onset, horizon_hint), pulse, pulse_onset, seed
    )


# --- finding and fitting a pulse -------------------------------------------------------

# Onset rule (forecast_history): a bucket among the last ONSET_SCAN is an onset when its
# demand exceeds the ONSET_LEVEL quantile of the negative binomial fitted (by moments) to the
# ONSET_REFERENCE buckets before it, is more than twice their mean, and is at least
# MIN_PULSE_UNITS. The pulse on at the end is the first onset after the last run of
# PULSE_QUIET buckets without one (an earlier burst has ended by then). Far above the
# baseline's upper quantile, on the series alone, with no lookahead.
ONSET_SCAN = 28
ONSET_REFERENCE = 28
ONSET_LEVEL = 0.999
MIN_PULSE_UNITS = 3.0
PULSE_QUIET = 7


def onset_flags(series: Series, scan: int = ONSET_SCAN) -> NDArray[np.bool_]:
    """Whether each of the last `scan` buckets is an onset by the rule above."""
    n = series.size
    flags = np.zeros(min(scan, n), dtype=bool)
    offset = n - flags.size
    first = max(MIN_BASELINE_HISTORY, offset)
    if first >= n:
        return flags
    candidates = np.arange(first, n)
    sums = np.concatenate(([0.0], np.cumsum(series)))
    squares = np.concatenate(([0.0], np.cumsum(series * series)))
    starts = np.maximum(candidates - ONSET_REFERENCE, 0)
    counts = (candidates - starts).astype(np.float64)
    mean = (sums[candidates] - sums[starts]) / counts
    variance = np.maximum(
        (squares[candidates] - squares[starts] - counts * mean * mean) / np.maximum(counts - 1, 1),
        0.0,
    )
    overdispersed = variance > mean * 1.0001
    size = np.where(overdispersed, mean * mean / np.where(overdispersed, variance - mean, 1.0), 1e6)
    size = np.maximum(size, 1e-3)
    safe_mean = np.maximum(mean, 1e-9)
    upper = stats.nbinom.ppf(ONSET_LEVEL, size, size / (size + safe_mean))
    values = series[candidates]
    hit = (values > upper) & (values > 2.0 * mean) & (values >= MIN_PULSE_UNITS)
    flags[candidates - offset] = hit
    return flags


def detect_onset(history: Sequence[float] | Series, scan: int = ONSET_SCAN) -> int | None:
    """The index of the pulse on at the end of `history` (see the rule above), or None."""
    series = validated(history)
    flags = onset_flags(series, scan)
    hits = np.flatnonzero(flags)
    if hits.size == 0:
        return None
    offset = series.size - flags.size
    gaps = np.diff(hits)
    restart = np.flatnonzero(gaps > PULSE_QUIET)
    first = hits[restart[-1] + 1] if restart.size else hits[0]
    return int(first + offset)


def fit_pulse_at(
    series: Series,
    onset: int,
    base: BaselineForecast,
    *,
    reach: Series | None = None,
    conversion: Conversion | None = None,
) -> PulseComponent:
    """The pulse since `onset`: on the demand's excess over the baseline rate; with a reach
    series that shows reach since onset, on reach x conversion (reach's excess over its
    pre-onset median, the conversion's Gamma prior updated with the excess orders)."""
    excess = np.maximum(series[onset:] - base.rate, 0.0)
    if reach is not None:
        before = reach[:onset]
        level = float(np.median(before)) if before.size else 0.0
        reach_excess = np.maximum(reach[onset:] - level, 0.0)
        if float(reach_excess.sum()) > 0:
            return fit_reach_pulse(
                reach_excess, excess, conversion_prior=conversion or DEFAULT_CONVERSION
            )
    return fit_pulse(excess)


def forecast_history(
    history: Sequence[float] | Series,
    *,
    heat: Sequence[float] | Series | None = None,
    horizon_hint: int = 1,
    seed: int = 0,
) -> DemandForecast:
    """The forecast from the history alone (the offline CLI's and the backtests' path): finds
    whether a pulse is on at the end of `history` (detect_onset) and, if so, fits it (on reach
    x conversion given `heat`, the reach series aligned with it) on top of the baseline of
    the buckets before its onset."""
    if heat is not None and len(heat) != len(history):
        raise ValueError("heat must be aligned with history")
    series = validated(history)
    onset = detect_onset(series)
    base = baseline_before(series, onset, horizon_hint)
    if onset is None:
        return DemandForecast(base, None, None, seed)
    reach = None if heat is None else np.maximum(np.asarray(heat, dtype=np.float64), 0.0)
    return DemandForecast(base, fit_pulse_at(series, onset, base, reach=reach), onset, seed)
