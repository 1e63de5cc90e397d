"""The forecast service's speed.

- forecast.quantiles_10k_skus: hourly 72 h quantile forecasts (p10/p50/p90 per hour and the
  next day's p90) for 10,000 SKUs with four weeks of intermittent hourly history each, our
  full fit (four methods scored on 30 rolling origins, NB quantiles, conformal shift)
  against a plain numpy SES over the same arrays (one vectorised pass, a point forecast and
  nothing else) in the same run; also the median per-SKU refit time and the memory a fit
  holds per SKU.
- forecast.heat_to_forecast_p99_ms: from publishing a `signal.heat_updated` for a SKU with a
  pulse on to the matching `forecast.updated` arriving on NATS, with the service as a real
  process, against the transport floor (the same publish to JetStream and a subscriber of
  that stream's subject receiving it).
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import nats
import numpy as np
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.bus import cloudevent_headers, ensure_stream, service_stream
from pulsestock.bus.codec import subject_for
from pulsestock.bus.provision import StreamSpec
from pulsestock.devstack.servers import free_port
from pulsestock.forecast.domain.demand import fit_demand
from pulsestock.messages import event_type_of
from pulsestock.v1 import forecast_events_pb2 as fev
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import signal_events_pb2 as sev
from pulsestock.v1.common_pb2 import Channel, OrderLine

from tests.bench.bench_inventory import fresh_nats
from tests.bench.report import emit
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

SKUS = 10_000
HOURS = 28 * 24
HORIZON = 72
LEVELS = (0.1, 0.5, 0.9)
PULSE_SKUS = 40
HEAT_ROUNDS = 6
PARTITIONS = 4


def histories(count: int, hours: int, seed: int = 72) -> np.ndarray:
    """Intermittent hourly demand: per-SKU rate (log-uniform 0.01-3 an hour), dispersion
    and share of hours that can sell."""
    rng = np.random.default_rng(seed)
    rate = np.exp(rng.uniform(np.log(0.01), np.log(3.0), count))[:, None]
    size = rng.uniform(0.5, 5.0, count)[:, None]
    counts = rng.negative_binomial(size, size / (size + rate), (count, hours))
    return (counts * (rng.random((count, hours)) < rng.uniform(0.3, 1.0, (count, 1)))).astype(float)


def numpy_ses(demand: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    level = demand[:, 0].copy()
    for t in range(1, demand.shape[1]):
        level += alpha * (demand[:, t] - level)
    return level


def bench_quantiles() -> None:
    demand = histories(SKUS, HOURS)
    started = time.perf_counter()
    numpy_ses(demand)
    baseline_s = time.perf_counter() - started
    per_sku = []
    started = time.perf_counter()
    for row in demand:
        one = time.perf_counter()
        forecast = fit_demand(row, horizon_hint=24)
        forecast.step_quantiles(HORIZON, LEVELS)
        forecast.window_quantiles(0, 24, [0.9])
        per_sku.append(time.perf_counter() - one)
    ours_s = time.perf_counter() - started
    tracemalloc.start()
    kept = [fit_demand(row, horizon_hint=24) for row in demand[:500]]
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    emit(
        "forecast.quantiles_10k_skus",
        SKUS / ours_s,
        "SKUs/s",
        baseline=SKUS / baseline_s,
        baseline_is="plain numpy SES over the same (10,000 x 672) array: one vectorised pass,"
        " a point forecast per SKU, no method choice, no quantiles",
        seconds=round(ours_s, 2),
        baseline_seconds=round(baseline_s, 3),
        refit_ms_median=round(statistics.median(per_sku) * 1000, 3),
        refit_ms_p99=round(float(np.percentile(per_sku, 99)) * 1000, 3),
        fitted_bytes_per_sku=round(held / len(kept)),
        history_bytes_per_sku=HOURS * 8,
        hours_of_history=HOURS,
        horizon_hours=HORIZON,
    )


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


async def publish(js: nats.js.JetStreamContext, producer: str, key: str, message: Message) -> None:
    event_type = event_type_of(message)
    headers = cloudevent_headers(
        event_id=str(uuid.uuid4()), event_type=event_type, source="/bench", subject=key
    )
    await js.publish(
        subject_for(producer, event_type, key, PARTITIONS),
        message.SerializeToString(),
        headers=headers,
    )


async def bench_heat_to_forecast(infra: Infra) -> None:
    schema = unique_name("b_fc")
    port = free_port()
    onset = datetime(2026, 11, 20, tzinfo=UTC)
    async with fresh_nats() as nats_url:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for producer in ("ingest", "signal", "forecast"):
            await ensure_stream(js, service_stream(producer))
        await migrate(infra.database_url, "forecast", schema)
        process = start_service_process(
            "forecast",
            infra.database_url,
            nats_url,
            schema,
            port,
            {"LOG_LEVEL": "error", "PULSESTOCK_PARTITIONS": str(PARTITIONS)},
        )
        try:
            await eventually(lambda: serving(port), within=30, what="forecast up")
            arrivals: dict[tuple[str, datetime], float] = {}
            waiters: dict[tuple[str, datetime], asyncio.Future[float]] = {}

            async def on_forecast(message: nats.aio.msg.Msg) -> None:
                event = fev.ForecastUpdated.FromString(message.data)
                key = (event.sku, event.as_of.ToDatetime(tzinfo=UTC))
                now = time.perf_counter()
                arrivals.setdefault(key, now)
                waiter = waiters.get(key)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)

            await nc.subscribe("forecast.updated.>", cb=on_forecast)
            rng = np.random.default_rng(5)
            skus = [f"PULSE-{i}" for i in range(PULSE_SKUS)]
            for sku in skus:  # a week of slow sales, then a pulse
                for hour in range(0, 7 * 24, 3):
                    if rng.random() < 0.5:
                        at = onset - timedelta(hours=7 * 24 - hour)
                        await publish(js, "ingest", sku, _order(f"{sku}-{hour}", sku, at))
                await publish(
                    js,
                    "signal",
                    sku,
                    sev.PulseDetected(pulse_id=f"p-{sku}", sku=sku, detected_at=stamp(onset)),
                )
            await eventually(
                lambda: _all_seen(arrivals, skus, onset), within=60, what="pulses folded"
            )
            latencies: list[float] = []
            missing = 0
            for heat_round in range(HEAT_ROUNDS):
                for sku in skus:
                    at = onset + timedelta(hours=heat_round, minutes=30)
                    velocity = 5000.0 * (heat_round + 1) ** 2
                    for n in range(3 * (heat_round + 1)):
                        await publish(js, "ingest", sku, _order(f"{sku}-{heat_round}-{n}", sku, at))
                    waiter = waiters[(sku, at)] = asyncio.get_running_loop().create_future()
                    sent = time.perf_counter()
                    heat = sev.HeatUpdated(
                        sku=sku, heat=velocity / 100, view_velocity=velocity, as_of=stamp(at)
                    )
                    await publish(js, "signal", sku, heat)
                    try:
                        latencies.append((await asyncio.wait_for(waiter, 10) - sent) * 1000)
                    except TimeoutError:
                        missing += 1
            floor = await _transport_floor(nc, len(latencies) or 1)
            size = await _schema_bytes(infra.database_url, schema)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            await nc.close()
            await drop_schema(infra.database_url, schema)
    emit(
        "forecast.heat_to_forecast_p99_ms",
        float(np.percentile(latencies, 99)) if latencies else float("inf"),
        "ms",
        baseline=float(np.percentile(floor, 99)),
        lower_is_better=True,
        baseline_is="JetStream publish of the same message and a core subscriber of the"
        " stream's subject receiving it (no consumer, no database)",
        p50_ms=round(statistics.median(latencies), 2) if latencies else None,
        baseline_p50_ms=round(statistics.median(floor), 2),
        heat_updates=len(latencies),
        without_a_forecast_within_10s=missing,
        database_bytes_per_sku=round(size / PULSE_SKUS),
        measured="heat updates of SKUs with a pulse on whose forecast moves materially, one"
        " at a time (the next sent when its forecast arrived); the orders of the same hour"
        " sent just before",
    )
    if missing:
        raise AssertionError(f"{missing} heat updates produced no forecast.updated")


def _order(order_id: str, sku: str, at: datetime) -> iev.OrderPlaced:
    return iev.OrderPlaced(
        channel=Channel.CHANNEL_TIKTOK_SHOP,
        channel_order_id=order_id,
        lines=[OrderLine(sku=sku, quantity=1)],
        placed_at=stamp(at),
    )


async def _all_seen(
    arrivals: dict[tuple[str, datetime], float], skus: list[str], at: datetime
) -> bool:
    return {sku for sku, as_of in arrivals if as_of >= at} >= set(skus)


async def _transport_floor(nc: nats.NATS, count: int) -> list[float]:
    js = nc.jetstream()
    token = f"floor_{uuid.uuid4().hex[:8]}"
    await ensure_stream(js, StreamSpec(name=token.upper(), subjects=[f"{token}.>"]))
    received: asyncio.Queue[float] = asyncio.Queue()

    async def on_message(_message: nats.aio.msg.Msg) -> None:
        received.put_nowait(time.perf_counter())

    await nc.subscribe(f"{token}.>", cb=on_message)
    out = []
    payload = fev.ForecastUpdated(sku="X").SerializeToString()
    for _ in range(count):
        sent = time.perf_counter()
        await js.publish(f"{token}.heat", payload)
        out.append((await asyncio.wait_for(received.get(), 10) - sent) * 1000)
    await js.delete_stream(token.upper())
    return out


async def _schema_bytes(database_url: str, schema: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = $1 AND c.relkind = 'r'",
                schema,
            )
        )
    finally:
        await conn.close()


async def run(infra: Infra) -> None:
    bench_quantiles()
    await bench_heat_to_forecast(infra)
