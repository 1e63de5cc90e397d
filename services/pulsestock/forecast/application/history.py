"""What forecast has folded, read back for people: a SKU's hourly orders and heat with its
pulses, and the live sessions it has samples of."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pulsestock.forecast.domain.sku_forecast import HOUR


@dataclass(frozen=True)
class HourFigures:
    hour: datetime
    orders: float
    heat: float | None  # None: no heat signal in the hour
    view_velocity: float


@dataclass(frozen=True)
class PulseWindow:
    pulse_id: str
    detected_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class LiveSession:
    live_id: str
    first_sample_at: datetime
    last_sample_at: datetime
    samples: int
    orders_so_far: float
    viewers: float


async def demand_history(
    pool: asyncpg.Pool, sku: str, start: datetime, end: datetime
) -> tuple[list[HourFigures], list[PulseWindow]]:
    """Every whole hour of [start, end) (start an hour boundary), oldest first, and the pulses
    overlapping it."""
    orders = {
        row["hour"]: row["quantity"]
        for row in await pool.fetch(
            "SELECT hour, quantity FROM demand_hours WHERE sku = $1 AND hour >= $2 AND hour < $3",
            sku,
            start,
            end,
        )
    }
    heat = {
        row["hour"]: (row["heat"], row["view_velocity"])
        for row in await pool.fetch(
            "SELECT hour, heat, view_velocity FROM heat_hours WHERE sku = $1"
            " AND hour >= $2 AND hour < $3",
            sku,
            start,
            end,
        )
    }
    hours = []
    hour = start
    while hour < end:
        seen = heat.get(hour)
        hours.append(
            HourFigures(
                hour,
                max(orders.get(hour, 0.0), 0.0),
                None if seen is None else seen[0],
                0.0 if seen is None else seen[1],
            )
        )
        hour += HOUR
    pulses = [
        PulseWindow(row["pulse_id"], row["detected_at"], row["ended_at"])
        for row in await pool.fetch(
            "SELECT pulse_id, detected_at, ended_at FROM sku_pulses WHERE sku = $1"
            " AND detected_at < $3 AND (ended_at IS NULL OR ended_at >= $2)"
            " ORDER BY detected_at, pulse_id",
            sku,
            start,
            end,
        )
    ]
    return hours, pulses


async def live_sessions(pool: asyncpg.Pool, limit: int) -> list[LiveSession]:
    """The most recently sampled sessions first."""
    rows = await pool.fetch(
        "SELECT live_id, min(observed_at) AS first_at, max(observed_at) AS last_at,"
        " count(*) AS samples, max(orders_so_far) AS orders,"
        " (array_agg(viewers ORDER BY observed_at DESC))[1] AS viewers"
        " FROM live_samples GROUP BY live_id ORDER BY last_at DESC, live_id LIMIT $1",
        limit,
    )
    return [
        LiveSession(
            r["live_id"], r["first_at"], r["last_at"], r["samples"], r["orders"], r["viewers"]
        )
        for r in rows
    ]
