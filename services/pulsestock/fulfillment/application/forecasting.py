"""Forecasts for replenishment, from the forecast service's own domain code.

- `blind_forecast`: `forecast_history` over the order history, exactly what the forecast
  service's offline path does (when its pulse model lands there, blind gets it too).
- `informed_forecast`: the same baseline plus a pulse driven by content heat. Until the
  forecast service's `forecast_history(..., heat=...)` fits heat-driven pulses, the pulse
  comes from `HeatPulse` below (an adapter that only uses forecast's public `fit_demand` /
  `DemandForecast`); set `INFORMED_SOURCE = "forecast"` to use theirs instead.
- `ForecastOutlook`: a `DemandForecast` seen as replenishment's `DemandOutlook`. Baseline
  windows use `BaselineForecast.quantiles` (cached per window length: ~0.3 ms a call);
  pulse windows use the forecast's simulated paths (drawn once per forecast), only as far
  as the pulse reaches, the baseline beyond.

Heat is reach (views an hour). The prior conversion is the forecast service's default, one
order per 1,000 views; each pulse's true conversion is unknown to the policy and learnt from
the orders that follow the heat (shrunk towards the prior).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain.baseline import BaselineForecast
from pulsestock.forecast.domain.demand import DemandForecast, fit_demand, forecast_history

Series = NDArray[np.float64]

INFORMED_SOURCE: Literal["adapter", "forecast"] = "adapter"
HISTORY_HOURS = 28 * 24  # what a refit looks at
MAX_PULSE_HOURS = 21 * 24
PRIOR_LEAD_HOURS = 6  # heat leads orders by this much until the orders say otherwise
PRIOR_CONVERSION = 1e-3  # orders per unit of heat (view): forecast's default prior mean
CONVERSION_PSEUDO_HEAT = 30.0 / PRIOR_CONVERSION  # the prior weighs as much as 30 orders
HEAT_TRIGGER = 3.0  # heat excess over this multiple of its background opens a pulse


def baseline_window_quantiles(
    baseline: BaselineForecast, horizon: int, levels: Sequence[float]
) -> Series:
    """The baseline's quantiles of the demand over `horizon` buckets (zeros for none)."""
    if horizon <= 0:
        return np.zeros(len(levels))
    return np.asarray(baseline.quantiles(horizon, levels), dtype=np.float64)


@dataclass
class ForecastOutlook:
    """A `DemandForecast` as replenishment's DemandOutlook (hour steps after now)."""

    forecast: DemandForecast
    # Baseline windows by (length, levels); a caller that keeps the baseline between
    # forecasts passes the same dict to every outlook built on it.
    baseline_windows: dict[tuple[int, tuple[float, ...]], Series] = field(default_factory=dict)
    _cache: dict[tuple[int, int, tuple[float, ...]], Series] = field(default_factory=dict)
    _pulse_end: int | None = None
    _cumulative: Series | None = None

    def _baseline(self, horizon: int, levels: Sequence[float]) -> Series:
        key = (horizon, tuple(levels))
        if key not in self.baseline_windows:
            self.baseline_windows[key] = baseline_window_quantiles(
                self.forecast.baseline, horizon, levels
            )
        return self.baseline_windows[key]

    def tail_rate(self) -> float:
        return float(self.forecast.baseline.rate)

    def pulse_end(self) -> int:
        """The step after which demand stays below twice the baseline."""
        if self._pulse_end is None:
            if self.forecast.pulse is None:
                self._pulse_end = 0
            else:
                rate = self.forecast.baseline.rate
                excess = self.forecast.mean(MAX_PULSE_HOURS) - rate
                hot = np.flatnonzero(excess > max(rate, 0.05))
                self._pulse_end = int(hot[-1]) + 1 if hot.size else 0
        return self._pulse_end

    def _path_sums(self) -> Series:
        """Cumulative sums of the forecast's simulated paths as far as the pulse reaches
        (one draw of paths per forecast, whatever windows are asked)."""
        if self._cumulative is None:
            paths = self.forecast.paths(self.pulse_end() + 24)
            self._cumulative = np.concatenate(
                [np.zeros((paths.shape[0], 1)), np.cumsum(paths, axis=1)], axis=1
            )
        return self._cumulative

    def window_quantiles(self, start: int, end: int, levels: Sequence[float]) -> Series:
        key = (start, end, tuple(levels))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        reach = self.pulse_end() + 24 if self.forecast.pulse is not None else 0
        if start >= reach:
            out = self._baseline(end - start, levels)
        else:  # the pulse's part from the paths, the baseline after it (comonotone sum)
            sums = self._path_sums()
            totals = sums[:, min(end, reach)] - sums[:, start]
            out = np.maximum.accumulate(np.maximum(np.quantile(totals, list(levels)), 0.0))
            if end > reach:
                out = out + self._baseline(end - reach, levels)
        self._cache[key] = out
        return out


def blind_forecast(history: Series, *, seed: int) -> DemandForecast:
    return forecast_history(list(history[-HISTORY_HOURS:]), horizon_hint=24, seed=seed)


@dataclass(frozen=True)
class HeatPulse:
    """A pulse's excess demand read off content heat: heat at hour t becomes orders at
    t + lead, times a conversion learnt from the orders so far. Beyond the heat seen, heat
    decays exponentially at the rate it has been decaying since its peak (a prior
    half-life while it is still rising). Satisfies forecast's `PulseComponent`."""

    excess_heat: Series  # observed heat above background, from the pulse's onset to now
    lead: int
    conversion: float
    conversion_log_sd: float
    decay_per_hour: float
    rising: bool

    @property
    def model(self) -> str:
        return "heat-pulse"

    def _heat_ahead(self, horizon: int, decay: Series) -> Series:
        """Projected heat for hours now+1-lead ... (rows: decay rates)."""
        seen = self.excess_heat
        last = float(seen[-3:].mean()) if seen.size else 0.0
        steps = np.arange(1, horizon + 1, dtype=np.float64)
        hold = float(len(seen)) if self.rising else 0.0  # a rising pulse keeps its level a while
        return last * np.exp(-decay[:, None] * np.maximum(steps[None, :] - hold, 0.0))

    def _path(self, horizon: int, decay: Series) -> Series:
        seen = self.excess_heat
        # Heat already seen whose orders are still to come (zeros before the onset).
        pad = max(self.lead - len(seen), 0)
        known = np.concatenate([np.zeros(pad), seen[len(seen) - (self.lead - pad) :]])[:horizon]
        ahead = self._heat_ahead(max(horizon - known.size, 0), decay)
        rows = np.concatenate([np.tile(known, (decay.size, 1)), ahead], axis=1)
        return rows[:, :horizon] * self.conversion

    def mean_path(self, horizon: int) -> Series:
        return np.asarray(self._path(horizon, np.array([self.decay_per_hour]))[0], dtype=np.float64)

    def sample_paths(self, horizon: int, draws: int, rng: np.random.Generator) -> Series:
        sd = self.conversion_log_sd + (0.3 if self.rising else 0.0)
        scale = np.exp(rng.normal(-sd * sd / 2, sd, draws))
        decay = self.decay_per_hour * np.exp(rng.normal(0.0, 0.3, draws))
        means = self._path(horizon, decay) * scale[:, None]
        return rng.poisson(np.maximum(means, 0.0)).astype(np.float64)


@dataclass(frozen=True)
class HeatReading:
    onset: int | None  # index of the hour the current pulse's heat began, None if none
    pulse_hours: NDArray[np.bool_]  # hours of the history inside detected pulses
    background: float


def read_heat(heat: Series, lead: int = PRIOR_LEAD_HOURS) -> HeatReading:
    """Background heat (a low quantile of the last four weeks), the hours a pulse's heat was
    above HEAT_TRIGGER x background (and the lead hours after, when its orders come), and
    the onset of a pulse still on (its heat or its orders)."""
    recent = heat[-HISTORY_HOURS:]
    background = float(np.quantile(recent, 0.25)) if recent.size else 0.0
    hot = heat > HEAT_TRIGGER * background + 1e-9
    pulse_hours = hot.copy()
    for shift in range(1, lead + 12):  # orders follow heat: mark the hours after as well
        pulse_hours[shift:] |= hot[:-shift]
    onset: int | None = None
    if pulse_hours.size and pulse_hours[-1]:
        idle = np.flatnonzero(~pulse_hours)
        onset = int(idle[-1]) + 1 if idle.size else 0
    return HeatReading(onset, pulse_hours, background)


def _lead_and_conversion(
    orders: Series, excess_heat: Series, onset: int, base_rate: float
) -> tuple[int, float, float]:
    excess_orders = np.maximum(orders[onset:] - base_rate, 0.0)
    lead = PRIOR_LEAD_HOURS
    if excess_orders.sum() > 30 and excess_orders.size > 6:
        # the lag (0-47 h) at which heat best lines up with the excess orders
        a = excess_orders - excess_orders.mean()
        b = excess_heat[: a.size] - excess_heat[: a.size].mean()
        full = np.correlate(a, b, mode="full")[a.size - 1 :]  # lags 0, 1, ...
        overlap = np.arange(a.size, 0, -1, dtype=np.float64)
        scores = full[: min(48, a.size - 3)] / overlap[: min(48, a.size - 3)]
        if scores.size and float(scores.max()) > 0:
            lead = int(np.argmax(scores))
    matched_heat = float(excess_heat[: max(excess_heat.size - lead, 0)].sum())
    matched_orders = float(excess_orders[lead:].sum())
    k = CONVERSION_PSEUDO_HEAT
    conversion = (matched_orders + k * PRIOR_CONVERSION) / (matched_heat + k)
    log_sd = 0.5 * math.sqrt(k / (k + matched_heat)) + 0.1
    return lead, conversion, log_sd


def _decay(excess_heat: Series) -> tuple[float, bool]:
    """Decay rate per hour since the heat's peak (clamped), and whether it is still rising."""
    prior = math.log(2) / 12
    if excess_heat.size < 2:
        return prior, True
    peak = int(np.argmax(excess_heat))
    since = excess_heat[peak:]
    if since.size < 4 or since[-1] > 0.8 * since[0]:
        return prior, since.size < 4
    positive = since > 0
    hours = np.arange(since.size, dtype=np.float64)[positive]
    if hours.size < 3:
        return prior, False
    slope = float(np.polyfit(hours, np.log(since[positive]), 1)[0])
    return float(np.clip(-slope, math.log(2) / 168, math.log(2))), False


def informed_forecast(
    history: Series,
    heat: Series,
    *,
    seed: int,
    baseline: BaselineForecast | None = None,
) -> tuple[DemandForecast, HeatReading]:
    """Baseline (fitted on hours outside detected pulses, or `baseline` if given) plus the
    heat-driven pulse while one is on."""
    reading = read_heat(heat)
    if INFORMED_SOURCE == "forecast":
        return forecast_history(
            list(history[-HISTORY_HOURS:]),
            heat=list(heat[-HISTORY_HOURS:]),
            horizon_hint=24,
            seed=seed,
        ), reading
    if baseline is None:
        calm = history[~reading.pulse_hours][-HISTORY_HOURS:]
        baseline = fit_demand(calm, horizon_hint=24, seed=seed).baseline
    if reading.onset is None:
        return DemandForecast(baseline, None, None, seed), reading
    excess_heat = np.maximum(heat[reading.onset :] - reading.background, 0.0)
    lead, conversion, log_sd = _lead_and_conversion(
        history, excess_heat, reading.onset, baseline.rate
    )
    decay, rising = _decay(excess_heat)
    pulse = HeatPulse(excess_heat, lead, conversion, log_sd, decay, rising)
    return DemandForecast(baseline, pulse, reading.onset, seed), reading
