"""forecast's engine: folds orders, heat, pulses and live samples into each SKU's hourly
history, refits the SKU's forecast on every event for it, and appends a ForecastUpdated
(published through the outbox) when the publishing policy says so.

Each consumed event is applied once (applied_messages, in the same transaction as its
effect), so a redelivery changes nothing. The forecast itself is a pure function of the
stored history, so a restarted service computes identical numbers from the same tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
from google.protobuf.message import Message
from pulsestock.bus import Envelope
from pulsestock.bus.consumer import apply_once
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.forecast.domain.demand import DEFAULT_LEVELS, DemandForecast
from pulsestock.forecast.domain.pulse import (
    DEFAULT_CONVERSION,
    Conversion,
    fit_conversion_prior,
)
from pulsestock.forecast.domain.sku_forecast import (
    DAY_STEPS,
    HOUR,
    Published,
    PublishPolicy,
    SkuInputs,
    forecast_sku,
)
from pulsestock.metrics import FORECAST_REFITS
from pulsestock.telemetry import get_logger
from pulsestock.v1 import forecast_events_pb2 as fev
from pulsestock.v1 import ingest_events_pb2 as ingest
from pulsestock.v1 import signal_events_pb2 as sig
from pulsestock.v1.common_pb2 import Quantile

log = get_logger(__name__)
CONSUMER = "forecast__inputs"


@dataclass(frozen=True)
class ForecastSettings:
    horizon_hours: int = 72
    max_horizon_hours: int = 2160
    levels: tuple[float, ...] = DEFAULT_LEVELS
    history_hours: int = 28 * 24
    policy: PublishPolicy = field(default_factory=PublishPolicy)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def stream_of(sku: str) -> str:
    return f"sku-{sku}"


class ForecastEngine:
    def __init__(self, store: EventStore, settings: ForecastSettings | None = None) -> None:
        self.store = store
        self.settings = settings or ForecastSettings()
        self._turn = asyncio.Lock()  # consumers take turns: both refit the same SKUs
        # The global conversion prior, fitted over pulse_outcomes on first use and again
        # after each outcome this engine records (None: not fitted yet).
        self._conversion_prior: Conversion | None = None

    # --- consuming -----------------------------------------------------------------------

    async def handle_batch(self, envelopes: list[Envelope]) -> list[Exception | None]:
        seen: dict[str, datetime] = {}  # SKU -> latest input time in this batch
        async with self._turn, self.store.pool.acquire() as conn, conn.transaction():
            for envelope in envelopes:
                if not await apply_once(conn, CONSUMER, envelope.event_id):
                    continue
                for sku, at in await self._fold(conn, envelope.decode()):
                    seen[sku] = max(at, seen.get(sku, at))
            for sku in sorted(seen):
                await self._advance(conn, sku, seen[sku])
                await self.refit(conn, sku)
        return [None] * len(envelopes)

    async def _fold(self, conn: asyncpg.Connection, message: Message) -> list[tuple[str, datetime]]:
        if isinstance(message, ingest.OrderPlaced):
            at = message.placed_at.ToDatetime(tzinfo=UTC)
            lines = _summed((line.sku, float(line.quantity)) for line in message.lines if line.sku)
            return await self._count_order(
                conn, message.channel, message.channel_order_id, at, lines, 0
            )
        if isinstance(message, ingest.OrderChanged):
            at = (
                message.placed_at.ToDatetime(tzinfo=UTC)
                if message.HasField("placed_at")
                else (message.updated_at.ToDatetime(tzinfo=UTC))
            )
            lines = _summed(
                (line.sku, float(max(line.ordered - line.cancelled, 0)))
                for line in message.lines
                if line.sku  # a line only the catalogue can place (listing id alone)
            )
            return await self._count_order(
                conn, message.channel, message.channel_order_id, at, lines, message.revision
            )
        if isinstance(message, ingest.OrderCancelled):
            rows = await conn.fetch(
                "SELECT sku FROM order_lines WHERE channel = $1 AND channel_order_id = $2",
                message.channel,
                message.channel_order_id,
            )
            at = message.cancelled_at.ToDatetime(tzinfo=UTC)
            zero = {row["sku"]: 0.0 for row in rows}
            return await self._count_order(
                conn, message.channel, message.channel_order_id, at, zero, None
            )
        if isinstance(message, sig.HeatUpdated):
            at = message.as_of.ToDatetime(tzinfo=UTC)
            await conn.execute(
                "INSERT INTO heat_hours VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sku, hour) DO"
                " UPDATE SET as_of = excluded.as_of, heat = excluded.heat,"
                " view_velocity = excluded.view_velocity WHERE heat_hours.as_of < excluded.as_of",
                message.sku,
                hour_of(at),
                at,
                message.heat,
                message.view_velocity,
            )
            return [(message.sku, at)]
        if isinstance(message, sig.PulseDetected):
            at = message.detected_at.ToDatetime(tzinfo=UTC)
            await conn.execute(
                "INSERT INTO sku_pulses (pulse_id, sku, detected_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (pulse_id) DO NOTHING",
                message.pulse_id,
                message.sku,
                at,
            )
            return [(message.sku, at)]
        if isinstance(message, sig.PulseEnded):
            at = message.ended_at.ToDatetime(tzinfo=UTC)
            await conn.execute(
                "UPDATE sku_pulses SET ended_at = $2 WHERE pulse_id = $1 AND ended_at IS NULL",
                message.pulse_id,
                at,
            )
            await self._record_outcome(conn, message.pulse_id)
            return [(message.sku, at)]
        if isinstance(message, ingest.LiveSampled):
            await conn.execute(
                "INSERT INTO live_samples VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                message.live_id,
                message.observed_at.ToDatetime(tzinfo=UTC),
                float(message.concurrent_viewers),
                float(message.interactions),
                float(message.orders_so_far),
            )
            return []
        return []

    async def _count_order(
        self,
        conn: asyncpg.Connection,
        channel: int,
        order_id: str,
        at: datetime,
        lines: dict[str, float],
        revision: int | None,
    ) -> list[tuple[str, datetime]]:
        """Bring each line's count in demand_hours to `lines`; an older revision of an order
        than the one counted changes nothing."""
        touched = []
        for sku, quantity in sorted(lines.items()):
            row = await conn.fetchrow(
                "SELECT hour, counted, revision FROM order_lines WHERE channel = $1 AND"
                " channel_order_id = $2 AND sku = $3",
                channel,
                order_id,
                sku,
            )
            if row is not None and revision is not None and revision < row["revision"]:
                continue
            hour = row["hour"] if row is not None else hour_of(at)
            delta = quantity - (row["counted"] if row is not None else 0.0)
            await conn.execute(
                "INSERT INTO order_lines VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT"
                " (channel, channel_order_id, sku) DO UPDATE SET counted = excluded.counted,"
                " revision = greatest(order_lines.revision, excluded.revision)",
                channel,
                order_id,
                sku,
                hour,
                quantity,
                revision or 0,
            )
            if delta:
                await conn.execute(
                    "INSERT INTO demand_hours VALUES ($1, $2, $3) ON CONFLICT (sku, hour) DO"
                    " UPDATE SET quantity = demand_hours.quantity + excluded.quantity",
                    sku,
                    hour,
                    delta,
                )
            touched.append((sku, at))
        return touched

    async def _record_outcome(self, conn: asyncpg.Connection, pulse_id: str) -> None:
        """A finished pulse's excess orders and reach: one more data point for the priors."""
        pulse = await conn.fetchrow("SELECT * FROM sku_pulses WHERE pulse_id = $1", pulse_id)
        if pulse is None or pulse["ended_at"] is None:
            return
        start, end = hour_of(pulse["detected_at"]), hour_of(pulse["ended_at"]) + HOUR
        inputs = await self.load_inputs(conn, pulse["sku"], end - HOUR)
        if inputs is None:
            return
        first = max(0, int((start - inputs.start_hour) / HOUR))
        before = inputs.demand[:first]
        base = float(before.mean()) if before.size else 0.0
        window = inputs.demand[first:]
        orders = max(float(window.sum()) - base * window.size, 0.0)
        reach = float(inputs.reach[first:].sum())
        if reach > 0:
            await conn.execute(
                "INSERT INTO pulse_outcomes VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                pulse_id,
                pulse["sku"],
                orders,
                reach,
            )
            self._conversion_prior = None

    async def conversion_prior(
        self, conn: asyncpg.Connection | asyncpg.Pool, sku: str
    ) -> Conversion:
        """The SKU's Gamma prior on orders per unit of reach: the global prior fitted by
        empirical Bayes over every past pulse outcome (pulse.fit_conversion_prior; the
        documented default with fewer than three), updated with this SKU's own outcomes
        (its shrinkage towards the global rate weakens as its own evidence grows)."""
        if self._conversion_prior is None:
            rows = await conn.fetch("SELECT orders, reach FROM pulse_outcomes ORDER BY pulse_id")
            fitted = fit_conversion_prior(
                [row["orders"] for row in rows], [row["reach"] for row in rows]
            )
            self._conversion_prior = fitted or DEFAULT_CONVERSION
        own = await conn.fetchrow(
            "SELECT coalesce(sum(orders), 0) AS orders, coalesce(sum(reach), 0) AS reach"
            " FROM pulse_outcomes WHERE sku = $1",
            sku,
        )
        return self._conversion_prior.updated(float(own["orders"]), float(own["reach"]))

    async def _advance(self, conn: asyncpg.Connection, sku: str, at: datetime) -> None:
        await conn.execute(
            "INSERT INTO sku_forecasts (sku, as_of) VALUES ($1, $2) ON CONFLICT (sku) DO"
            " UPDATE SET as_of = greatest(sku_forecasts.as_of, excluded.as_of)",
            sku,
            at,
        )

    # --- forecasting ---------------------------------------------------------------------

    async def load_inputs(
        self, conn: asyncpg.Connection | asyncpg.Pool, sku: str, as_of: datetime | None = None
    ) -> SkuInputs | None:
        """The SKU's hourly history up to its origin; None for a SKU never seen."""
        state = await conn.fetchrow("SELECT as_of FROM sku_forecasts WHERE sku = $1", sku)
        if state is None:
            return None
        origin = hour_of(as_of or state["as_of"])
        earliest = origin - HOUR * (self.settings.history_hours - 1)
        demand_rows = await conn.fetch(
            "SELECT hour, quantity FROM demand_hours WHERE sku = $1 AND hour BETWEEN $2 AND $3",
            sku,
            earliest,
            origin,
        )
        heat_rows = await conn.fetch(
            "SELECT hour, heat, view_velocity FROM heat_hours WHERE sku = $1"
            " AND hour BETWEEN $2 AND $3",
            sku,
            earliest,
            origin,
        )
        firsts = [r["hour"] for r in demand_rows] + [r["hour"] for r in heat_rows] + [origin]
        start = max(earliest, min(firsts))
        size = int((origin - start) / HOUR) + 1
        demand = np.zeros(size)
        for row in demand_rows:
            demand[int((row["hour"] - start) / HOUR)] += max(row["quantity"], 0.0)
        reach = np.zeros(size)
        for row in heat_rows:
            velocity = row["view_velocity"]
            reach[int((row["hour"] - start) / HOUR)] = velocity if velocity > 0 else row["heat"]
        pulse = await conn.fetchrow(
            "SELECT pulse_id, detected_at FROM sku_pulses WHERE sku = $1 AND detected_at <= $2"
            " AND (ended_at IS NULL OR ended_at > $2) ORDER BY detected_at DESC LIMIT 1",
            sku,
            as_of or state["as_of"],
        )
        pulse_id, onset, conversion = "", None, None
        if pulse is not None:
            pulse_id = pulse["pulse_id"]
            onset = max(0, int((hour_of(pulse["detected_at"]) - start) / HOUR))
            conversion = await self.conversion_prior(conn, sku)
        return SkuInputs(
            sku,
            start,
            demand,
            reach,
            pulse_id,
            onset,
            conversion.shape if conversion else None,
            conversion.rate if conversion else None,
        )

    def forecast(self, inputs: SkuInputs) -> DemandForecast:
        return forecast_sku(inputs)

    async def refit(self, conn: asyncpg.Connection, sku: str) -> None:
        inputs = await self.load_inputs(conn, sku)
        if inputs is None:
            return
        forecast = self.forecast(inputs)
        FORECAST_REFITS.add(1)
        day_mean = forecast.window_mean(0, DAY_STEPS)
        (day_p90,) = forecast.window_quantiles(0, DAY_STEPS, [0.9])
        row = await conn.fetchrow("SELECT * FROM sku_forecasts WHERE sku = $1", sku)
        last = None
        if row["published_as_of"] is not None:
            last = Published(
                row["published_as_of"],
                row["published_day"],
                row["published_day_p90"],
                row["published_pulse"],
            )
        as_of = row["as_of"]
        reason = self.settings.policy.reason(
            last, as_of=as_of, day_mean=day_mean, day_p90=day_p90, pulse_id=inputs.pulse_id
        )
        if reason is None:
            return
        event = self.updated(
            inputs, forecast, as_of, self.settings.horizon_hours, self.settings.levels
        )
        event.reason = reason
        version = await self.store.append(
            stream_of(sku), row["version"], [NewEvent.of(event)], conn=conn
        )
        await conn.execute(
            "UPDATE sku_forecasts SET version = $2, published_as_of = $3, published_day = $4,"
            " published_day_p90 = $5, published_pulse = $6, model = $7, forecast = $8"
            " WHERE sku = $1",
            sku,
            version,
            as_of,
            day_mean,
            day_p90,
            inputs.pulse_id,
            forecast.model,
            event.SerializeToString(deterministic=True),
        )

    @staticmethod
    def updated(
        inputs: SkuInputs,
        forecast: DemandForecast,
        as_of: datetime,
        horizon: int,
        levels: Sequence[float],
    ) -> fev.ForecastUpdated:
        means = forecast.mean(horizon)
        quantiles = forecast.step_quantiles(horizon, levels)
        event = fev.ForecastUpdated(sku=inputs.sku, model=forecast.model, pulse_id=inputs.pulse_id)
        event.as_of.FromDatetime(as_of)
        first = inputs.first_forecast_hour
        for step in range(horizon):
            point = event.points.add(mean=float(means[step]))
            point.period_start.FromDatetime(first + timedelta(hours=step))
            point.quantiles.extend(
                Quantile(q=level, value=float(value))
                for level, value in zip(levels, quantiles[step], strict=True)
            )
        event.horizon_mean = float(means.sum())
        event.horizon_quantiles.extend(
            Quantile(q=level, value=value)
            for level, value in zip(
                levels, forecast.window_quantiles(0, horizon, levels), strict=True
            )
        )
        return event


def _summed(lines: Iterable[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for sku, quantity in lines:
        out[sku] = out.get(sku, 0.0) + quantity
    return out
