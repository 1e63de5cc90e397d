"""One SKU's forecast from what the service knows of it, and when to publish a new one.

Pure: the application loads the SKU's hourly demand and reach, its active pulse and the
conversion prior, and this module turns them into a DemandForecast and a publishing decision.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain.baseline import BaselineForecast
from pulsestock.forecast.domain.demand import (
    DemandForecast,
    baseline_before,
    fit_pulse_at,
    validated,
)
from pulsestock.forecast.domain.pulse import Conversion

Series = NDArray[np.float64]
HOUR = timedelta(hours=1)
DAY_STEPS = 24  # the window whose change makes a forecast "material"


@dataclass(frozen=True)
class SkuInputs:
    sku: str
    start_hour: datetime  # the hour of demand[0]
    demand: Series  # net orders per hour, up to and including the origin hour
    reach: Series  # views (or live viewers) per hour, aligned with demand
    pulse_id: str = ""  # the active pulse, "" when none
    pulse_onset: int | None = None  # index of the pulse's first hour in demand
    conversion_shape: float | None = None  # Gamma prior on orders per unit of reach
    conversion_rate: float | None = None

    @property
    def origin_hour(self) -> datetime:
        return self.start_hour + HOUR * (len(self.demand) - 1)

    @property
    def first_forecast_hour(self) -> datetime:
        return self.origin_hour + HOUR


def seed_of(sku: str) -> int:
    """The same SKU always draws the same simulated paths (stable across processes)."""
    return sum((i + 1) * b for i, b in enumerate(sku.encode())) % (2**31)


# Baselines by the digest of the demand they were fitted on: a heat update or a pulse refit
# leaves the demand before the onset unchanged, so its baseline (the costly part of a refit,
# four methods scored on rolling origins) is reused. Memoisation only: same numbers.
_BASELINE_CACHE: OrderedDict[bytes, BaselineForecast] = OrderedDict()
BASELINE_CACHE_SIZE = 20_000


def cached_baseline(demand: Series, onset: int | None, horizon_hint: int) -> BaselineForecast:
    cut = demand if onset is None else demand[: max(onset, 0)]
    key = hashlib.blake2b(
        np.ascontiguousarray(cut, dtype=np.float64).tobytes(),
        digest_size=16,
        person=horizon_hint.to_bytes(8, "little"),
    ).digest()
    hit = _BASELINE_CACHE.get(key)
    if hit is not None:
        _BASELINE_CACHE.move_to_end(key)
        return hit
    fitted = baseline_before(demand, onset, horizon_hint)
    _BASELINE_CACHE[key] = fitted
    if len(_BASELINE_CACHE) > BASELINE_CACHE_SIZE:
        _BASELINE_CACHE.popitem(last=False)
    return fitted


def forecast_sku(inputs: SkuInputs, *, horizon_hint: int = DAY_STEPS) -> DemandForecast:
    """The baseline of the hours before the active pulse's onset plus, while a pulse is on
    (`pulse_id`), the pulse since onset: reach x conversion when the SKU has reach since
    onset (its conversion prior from `conversion_shape/rate`, the default otherwise), the
    excess orders' own shape when it has none."""
    demand = validated(inputs.demand)
    seed = seed_of(inputs.sku)
    onset = inputs.pulse_onset if inputs.pulse_id else None
    if onset is None or onset >= demand.size:
        return DemandForecast(cached_baseline(demand, None, horizon_hint), None, None, seed)
    base = cached_baseline(demand, onset, horizon_hint)
    prior = None
    if inputs.conversion_shape and inputs.conversion_rate:
        prior = Conversion(inputs.conversion_shape, inputs.conversion_rate)
    reach = np.asarray(inputs.reach, dtype=np.float64) if len(inputs.reach) else None
    pulse = fit_pulse_at(demand, onset, base, reach=reach, conversion=prior)
    return DemandForecast(base, pulse, onset, seed)


@dataclass(frozen=True)
class Published:
    as_of: datetime
    day_mean: float
    day_p90: float
    pulse_id: str


@dataclass(frozen=True)
class PublishPolicy:
    """At most one ForecastUpdated per SKU per `interval` of content time, unless the next
    day's expected demand or its p90 moved by more than `material_change` (relative) and by
    at least `min_units`, or a pulse began or ended: those go out at once."""

    interval: timedelta = timedelta(hours=1)
    material_change: float = 0.10
    min_units: float = 1.0

    def reason(
        self,
        last: Published | None,
        *,
        as_of: datetime,
        day_mean: float,
        day_p90: float,
        pulse_id: str,
    ) -> str | None:
        if last is None:
            return "first"
        if pulse_id != last.pulse_id:
            return "pulse_started" if pulse_id else "pulse_ended"
        for new, old in ((day_mean, last.day_mean), (day_p90, last.day_p90)):
            moved = abs(new - old)
            if moved >= self.min_units and moved > self.material_change * max(old, 1e-9):
                return "material"
        if as_of - last.as_of >= self.interval:
            return "interval"
        return None
