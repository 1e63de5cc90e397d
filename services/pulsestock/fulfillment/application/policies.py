"""Replenishment policies the simulator compares, all facing the same observations.

Ours (`pulsestock`, `pulsestock-blind`) run domain/replenishment.review on every lead-time
option, with the forecast service's code (forecasting.py); they review hourly while a pulse
is on and daily otherwise. The baselines are FULFILLMENT.md's, on the cheapest option (the
one a seller uses routinely; expediting is a manual decision they do not model), counting
everything on order as the field's tools do:

- weekly-rop: weekly review; ADU and sigma of daily demand over 28 days; ROP = ADU*LT +
  1.65*sigma*√LT; below it, order up to ADU*(LT + 7 + 30) + safety stock.
- min-max: daily review (ERPNext's reorder job); ADU and sigma over 90 days (Linnworks);
  min = ADU*LT + 1.65*sigma*√LT, max = min + 30*ADU.
- ddmrp: buffers from ADU over 120 days, recomputed and reviewed every 8 h: red = ADU*DLT*
  0.5*(1 + 0.5), yellow = ADU*DLT, green = max(ADU*7, ADU*DLT*0.5, MOQ); net flow = on hand
  + on order - qualified demand, where qualified demand is the last day's hours whose orders
  exceed 0.5 x red (spikes; ordinary orders ship at once under lost sales); order up to the
  top of green when net flow <= top of yellow.
- base-stock: daily review; S = ADU*(LT + 1) + 1.65*sigma*√(LT + 1) over 28 days; order
  S - position, capped at 14 days of ADU per order.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain.baseline import BaselineForecast
from pulsestock.forecast.domain.demand import DemandForecast
from pulsestock.fulfillment.application.forecasting import (
    HEAT_TRIGGER,
    HISTORY_HOURS,
    ForecastOutlook,
    blind_forecast,
    informed_forecast,
)
from pulsestock.fulfillment.domain.master_data import LeadTimeOption, SkuEconomics
from pulsestock.fulfillment.domain.replenishment import (
    Recommendation,
    ReviewSettings,
    StockPosition,
    review,
)
from scipy import stats

Series = NDArray[np.float64]
Z95 = 1.65
POLICY_NAMES = (
    "pulsestock",
    "pulsestock-blind",
    "weekly-rop",
    "min-max",
    "ddmrp",
    "base-stock",
    "oracle",
)


@dataclass(frozen=True)
class Observation:
    """What a policy sees at the end of simulated hour `hour`."""

    hour: int
    demand: Series  # every hour so far, warm-up included (the last is this hour)
    heat: Series  # aligned with demand
    on_hand: float
    on_order: Sequence[tuple[int, float]]  # (absolute arrival hour, units)

    def position(self) -> float:
        return self.on_hand + sum(units for _, units in self.on_order)


class Policy(Protocol):
    name: str

    def act(self, seen: Observation) -> list[tuple[int, int]]:
        """Orders to place now: (option index, units)."""
        ...


def _round_order(quantity: float, option: LeadTimeOption) -> int:
    if quantity <= 0:
        return 0
    units = max(quantity, option.moq)
    return int(math.ceil(units / option.case_pack) * option.case_pack)


def _daily(demand: Series, days: int) -> Series:
    span = min(days, demand.size // 24)
    if span == 0:
        return np.zeros(1)
    return np.asarray(
        demand[demand.size - span * 24 :].reshape(span, 24).sum(axis=1), dtype=np.float64
    )


def cheapest(options: Sequence[LeadTimeOption]) -> int:
    return min(range(len(options)), key=lambda i: (options[i].unit_cost, options[i].arrival_hours))


@dataclass
class WeeklyReorderPoint:
    options: Sequence[LeadTimeOption]
    name: str = "weekly-rop"

    def act(self, seen: Observation) -> list[tuple[int, int]]:
        if seen.hour % 168 != 167:
            return []
        index = cheapest(self.options)
        option = self.options[index]
        days = _daily(seen.demand, 28)
        adu, sigma = float(days.mean()), float(days.std(ddof=1)) if days.size > 1 else 0.0
        lead = option.lead_time_mean_hours / 24
        safety = Z95 * sigma * math.sqrt(lead)
        position = seen.position()
        if position > adu * lead + safety:
            return []
        quantity = _round_order(adu * (lead + 7 + 30) + safety - position, option)
        return [(index, quantity)] if quantity else []


@dataclass
class MinMax:
    options: Sequence[LeadTimeOption]
    name: str = "min-max"

    def act(self, seen: Observation) -> list[tuple[int, int]]:
        if seen.hour % 24 != 23:
            return []
        index = cheapest(self.options)
        option = self.options[index]
        days = _daily(seen.demand, 90)
        adu, sigma = float(days.mean()), float(days.std(ddof=1)) if days.size > 1 else 0.0
        lead = option.lead_time_mean_hours / 24
        low = adu * lead + Z95 * sigma * math.sqrt(lead)
        position = seen.position()
        if position >= low:
            return []
        quantity = _round_order(low + 30 * adu - position, option)
        return [(index, quantity)] if quantity else []


@dataclass
class DDMRP:
    options: Sequence[LeadTimeOption]
    name: str = "ddmrp"
    lead_time_factor: float = 0.5
    variability_factor: float = 0.5
    order_cycle_days: float = 7.0

    def act(self, seen: Observation) -> list[tuple[int, int]]:
        if seen.hour % 8 != 7:
            return []
        index = cheapest(self.options)
        option = self.options[index]
        adu = float(_daily(seen.demand, 120).mean())
        lead = option.lead_time_mean_hours / 24
        red_base = adu * lead * self.lead_time_factor
        red = red_base * (1 + self.variability_factor)
        yellow = adu * lead
        green = max(adu * self.order_cycle_days, red_base, float(option.moq))
        last_day = seen.demand[-24:]
        qualified = float(last_day[last_day > 0.5 * red].sum()) if red > 0 else 0.0
        net_flow = seen.position() - qualified
        if net_flow > red + yellow:
            return []
        quantity = _round_order(red + yellow + green - net_flow, option)
        return [(index, quantity)] if quantity else []


@dataclass
class CappedBaseStock:
    options: Sequence[LeadTimeOption]
    name: str = "base-stock"
    cap_days: float = 14.0

    def act(self, seen: Observation) -> list[tuple[int, int]]:
        if seen.hour % 24 != 23:
            return []
        index = cheapest(self.options)
        option = self.options[index]
        days = _daily(seen.demand, 28)
        adu, sigma = float(days.mean()), float(days.std(ddof=1)) if days.size > 1 else 0.0
        cover = option.lead_time_mean_hours / 24 + 1
        level = adu * cover + Z95 * sigma * math.sqrt(cover)
        quantity = min(level - seen.position(), self.cap_days * adu)
        units = _round_order(quantity, option)
        return [(index, units)] if units else []


@functools.lru_cache(maxsize=4096)
def _spike_threshold(rate: float) -> float:
    """Orders in 3 h beyond the baseline's 99.9 % (cached: the informed policy keeps its
    baseline between daily refits, and scipy's ppf is ~0.2 ms a call)."""
    return float(stats.poisson.ppf(0.999, max(3 * rate, 0.01))) + 2


@dataclass
class Pulsestock:
    """Our policy: replenishment.review on every option with a forecast from the forecast
    service's code; `informed` adds the content heat (pulsestock vs pulsestock-blind)."""

    economics: SkuEconomics
    options: Sequence[LeadTimeOption]
    informed: bool
    seed: int = 0
    name: str = ""
    recommendations: list[tuple[int, Recommendation]] = field(default_factory=list)
    keep_recommendations: bool = False
    _baseline: BaselineForecast | None = None
    _spike_level: float = math.inf
    _heat_level: float = math.inf
    _hot_until: int = -1
    _baseline_windows: dict[tuple[int, tuple[float, ...]], Series] = field(default_factory=dict)
    _windows_of: BaselineForecast | None = None

    def __post_init__(self) -> None:
        if not self.name:
            self.name = "pulsestock" if self.informed else "pulsestock-blind"

    def _pulse_signal(self, seen: Observation) -> bool:
        """Cheap hourly check: orders of the last 3 h beyond the baseline's 99.9 % (what a
        detector sees in orders), or, informed, heat over its trigger."""
        spike = float(seen.demand[-3:].sum()) > self._spike_level
        hot = self.informed and float(seen.heat[-1]) > self._heat_level
        if spike or hot:
            self._hot_until = seen.hour + 6
        return seen.hour <= self._hot_until

    def _forecast(self, seen: Observation, daily: bool) -> DemandForecast:
        history = seen.demand
        if not self.informed:
            forecast = blind_forecast(history, seed=self.seed)
            self._baseline = forecast.baseline
        else:
            refit = daily or self._baseline is None
            forecast, reading = informed_forecast(
                history[-2 * HISTORY_HOURS :],
                seen.heat[-2 * HISTORY_HOURS :],
                seed=self.seed,
                baseline=None if refit else self._baseline,
            )
            self._baseline = forecast.baseline
            if refit:
                self._heat_level = HEAT_TRIGGER * reading.background + 1e-9
        self._spike_level = _spike_threshold(float(self._baseline.rate))
        return forecast

    def act(self, seen: Observation) -> list[tuple[int, int]]:
        daily = seen.hour % 24 == 23
        pulse = self._pulse_signal(seen)
        if not (daily or pulse):
            return []
        forecast = self._forecast(seen, daily)
        if forecast.pulse is not None:
            self._hot_until = max(self._hot_until, seen.hour + 1)
        if forecast.baseline is not self._windows_of:  # a refit: its own windows
            self._windows_of, self._baseline_windows = forecast.baseline, {}
        outlook = ForecastOutlook(forecast, baseline_windows=self._baseline_windows)
        position = StockPosition(
            seen.on_hand, 0.0, tuple((at - seen.hour, units) for at, units in seen.on_order)
        )
        settings = ReviewSettings(review_hours=1 if pulse else 24)
        recommendation = review(
            self.economics, self.options, outlook, position, seen.hour, settings
        )
        if self.keep_recommendations:
            self.recommendations.append((seen.hour, recommendation))
        index_of = {id(option): i for i, option in enumerate(self.options)}
        return [(index_of[id(option)], units) for option, units in recommendation.orders]


def make_policy(
    name: str, economics: SkuEconomics, options: Sequence[LeadTimeOption], seed: int
) -> Policy:
    if name == "pulsestock":
        return Pulsestock(economics, options, informed=True, seed=seed)
    if name == "pulsestock-blind":
        return Pulsestock(economics, options, informed=False, seed=seed)
    if name == "weekly-rop":
        return WeeklyReorderPoint(options)
    if name == "min-max":
        return MinMax(options)
    if name == "ddmrp":
        return DDMRP(options)
    if name == "base-stock":
        return CappedBaseStock(options)
    raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICY_NAMES)})")


__all__ = ["POLICY_NAMES", "Observation", "Policy", "make_policy"]
