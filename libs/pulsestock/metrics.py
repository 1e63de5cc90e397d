"""Metrics every service exports: OpenTelemetry instruments, read by Prometheus on an HTTP
`/metrics` endpoint (`<SERVICE>_METRICS_PORT`; the OTLP exporter stays available beside it).

The names below are the contract with deploy/grafana-dashboard.json and any alert: change
one, change both. Prometheus sees them with dots as underscores and the unit appended
(`pulsestock.grpc.server.duration` in seconds -> `pulsestock_grpc_server_duration_seconds_*`,
counters with `_total`).

Instruments are created through the API's global meter, so code may record before the
provider is installed (and records nothing when it never is). Gauges of infrastructure
(outbox depth and age, consumer lag, redeliveries, dead letters) are read every few seconds
by `InfrastructureGauges.run` and served from that cache: a scrape never waits on PostgreSQL
or NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from opentelemetry import metrics
from opentelemetry.metrics import Observation
from pulsestock.telemetry import get_logger

log = get_logger(__name__)
meter = metrics.get_meter("pulsestock")

# --- the contract (see the module docstring) -------------------------------------------------
GRPC_SERVER_DURATION = meter.create_histogram(
    "pulsestock.grpc.server.duration",
    unit="s",
    description="gRPC calls served, by rpc_method and rpc_code (count, sum and buckets)",
    explicit_bucket_boundaries_advisory=[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
)  # fmt: skip
EVENTS_APPENDED = meter.create_counter(
    "pulsestock.events.appended", description="events appended to the event log, by stream category"
)
RELAY_PUBLISHED = meter.create_counter(
    "pulsestock.outbox.published", description="outbox rows the relay published to NATS"
)
CHANNEL_CALLS = meter.create_counter(
    "pulsestock.channel.calls",
    description="quantity pushes to a sales channel, by channel and outcome (ok, retry, refused)",
)
CHANNEL_DRIFT = meter.create_counter(
    "pulsestock.channel.drift", description="quantities reconciliation found off, by channel"
)
CHANNEL_RETRIES = meter.create_counter(
    "pulsestock.channel.retries", description="channel calls retried, by channel"
)
RESERVATIONS = meter.create_counter(
    "pulsestock.reservations", description="reservation decisions, by outcome"
)
PULSES_DETECTED = meter.create_counter(
    "pulsestock.pulses.detected", description="pulses signal detected"
)
FORECAST_REFITS = meter.create_counter(
    "pulsestock.forecasts.fitted", description="forecasts fitted again for a SKU"
)
SAMPLES_COLLECTED = meter.create_counter(
    "pulsestock.samples.collected", description="video samples the collector pushed into ingest"
)


@dataclass
class _Readings:
    outbox_depth: int | None = None
    outbox_oldest_age_s: float | None = None
    consumer_pending: dict[str, int] = field(default_factory=dict)
    consumer_redelivered: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    channel_backoff_s: dict[str, float] = field(default_factory=dict)


_readings = _Readings()


def set_channel_backoff(channel: str, seconds: float) -> None:
    """The backoff a channel's pusher waits now (0 when it is healthy)."""
    _readings.channel_backoff_s[channel] = seconds


def _gauge(
    name: str, description: str, read: Callable[[], Iterable[Observation]], unit: str = ""
) -> None:
    meter.create_observable_gauge(
        name, callbacks=[lambda _options: list(read())], unit=unit, description=description
    )


def _one(value: float | None) -> list[Observation]:
    return [] if value is None else [Observation(value)]


def _each(values: dict[str, int] | dict[str, float], label: str) -> list[Observation]:
    return [Observation(v, {label: k}) for k, v in values.items()]


_gauge(
    "pulsestock.outbox.depth",
    "outbox rows not yet published",
    lambda: _one(_readings.outbox_depth),
)
_gauge(
    "pulsestock.outbox.oldest_age",
    "age of the oldest unpublished outbox row",
    lambda: _one(_readings.outbox_oldest_age_s),
    unit="s",
)
_gauge(
    "pulsestock.consumer.pending",
    "messages a durable consumer has not received yet (lag)",
    lambda: _each(_readings.consumer_pending, "consumer"),
)
_gauge(
    "pulsestock.consumer.redelivered",
    "messages a durable consumer is redelivering",
    lambda: _each(_readings.consumer_redelivered, "consumer"),
)
_gauge(
    "pulsestock.dead_letters",
    "messages dead-lettered by a consumer (in DEAD_LETTERS)",
    lambda: _each(_readings.dead_letters, "consumer"),
)
_gauge(
    "pulsestock.channel.backoff",
    "current backoff of a channel's pusher",
    lambda: _each(_readings.channel_backoff_s, "channel"),
    unit="s",
)


@dataclass
class InfrastructureGauges:
    """Reads the gauges above every `interval_s`: this service's outbox (its schema), and its
    durable consumers on NATS (named `<service>__<purpose>`, on any stream) with their dead
    letters."""

    pool: asyncpg.Pool
    nc: NATS
    consumer_prefix: str  # e.g. "inventory_sync__"
    interval_s: float = 5.0

    async def read_once(self) -> None:
        row = await self.pool.fetchrow(
            "SELECT count(*) AS depth, extract(epoch FROM now() - min(created_at)) AS age"
            " FROM outbox"
        )
        if row is not None:
            _readings.outbox_depth = int(row["depth"])
            _readings.outbox_oldest_age_s = float(row["age"] or 0.0)
        js = self.nc.jetstream()
        durables: set[str] = set()
        for stream in await js.streams_info():
            name = stream.config.name
            if name is None or name == "DEAD_LETTERS":
                continue
            for info in await js.consumers_info(name):
                durable = info.config.durable_name or info.name or ""
                if not durable.startswith(self.consumer_prefix):
                    continue
                durables.add(durable)
                _readings.consumer_pending[durable] = int(info.num_pending or 0)
                _readings.consumer_redelivered[durable] = int(info.num_redelivered or 0)
        with contextlib.suppress(NotFoundError):
            letters = await js.stream_info("DEAD_LETTERS", subjects_filter="dead_letters.>")
            counts = letters.state.subjects or {}
            for durable in durables:
                _readings.dead_letters[durable] = int(counts.get(f"dead_letters.{durable}", 0))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.read_once()
            except Exception as error:  # PostgreSQL or NATS away: the gauges keep their values
                log.warning("metrics read failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)


async def serve_metrics(host: str, port: int, stop: asyncio.Event) -> None:
    """`GET /metrics` in Prometheus' text format, until `stop`."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    async def scrape(_request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics", address=f"http://{host}:{port}/metrics")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
