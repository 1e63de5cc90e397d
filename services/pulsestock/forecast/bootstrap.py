"""Wiring of forecast: the input consumers and engine, the gRPC API, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc
from pulsestock.bus import (
    ConsumerSpec,
    DurableConsumer,
    ensure_consumer,
    ensure_stream,
    service_stream,
)
from pulsestock.bus.codec import partition_for
from pulsestock.config import Env
from pulsestock.eventstore import NewEvent
from pulsestock.eventstore.store import OutboxRoute
from pulsestock.forecast.application.engine import ForecastEngine, ForecastSettings
from pulsestock.forecast.domain.sku_forecast import PublishPolicy
from pulsestock.forecast.entrypoints.grpc_api import ForecastServiceServicer
from pulsestock.runtime import ServiceContext, ServiceDefinition, stream_entity
from pulsestock.v1 import forecast_pb2, forecast_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
ORDERS = ConsumerSpec(
    stream=service_stream("ingest").name,
    durable="forecast__orders",
    filter_subjects=[
        "ingest.order_placed.>",
        "ingest.order_cancelled.>",
        "ingest.order_changed.>",
        "ingest.live_sampled.>",
    ],
    max_deliver=8,
)
SIGNALS = ConsumerSpec(
    stream=service_stream("signal").name,
    durable="forecast__signals",
    filter_subjects=[
        "signal.heat_updated.>",
        "signal.pulse_detected.>",
        "signal.pulse_ended.>",
    ],
    max_deliver=8,
)


def settings_from_env(env: Env | None = None) -> ForecastSettings:
    env = env or Env()
    levels = tuple(
        float(part) for part in env.string("FORECAST_QUANTILES", "0.1,0.5,0.9").split(",")
    )
    if not levels or any(not 0 < level < 1 for level in levels):
        from pulsestock.config import ConfigError

        raise ConfigError("FORECAST_QUANTILES must be levels strictly between 0 and 1")
    max_horizon = env.integer("FORECAST_MAX_HORIZON_HOURS", 2160, minimum=1, maximum=8760)
    return ForecastSettings(
        horizon_hours=env.integer("FORECAST_HORIZON_HOURS", 72, minimum=1, maximum=max_horizon),
        max_horizon_hours=max_horizon,
        levels=levels,
        history_hours=env.integer("FORECAST_HISTORY_HOURS", 28 * 24, minimum=24, maximum=8760),
        policy=PublishPolicy(
            interval=timedelta(
                seconds=env.integer(
                    "FORECAST_PUBLISH_INTERVAL_SECONDS", 3600, minimum=0, maximum=7 * 86400
                )
            ),
            material_change=env.number("FORECAST_MATERIAL_CHANGE", 0.10, minimum=0.0, maximum=10.0),
        ),
    )


def outbox_route(partitions: int) -> OutboxRoute:
    """ForecastUpdated of stream `sku-<sku>` -> `forecast.updated.<partition of the SKU>`."""

    def route(stream_id: str, event: NewEvent) -> str:
        return f"forecast.updated.{partition_for(stream_entity(stream_id), partitions)}"

    return route


class Forecast:
    def __init__(self) -> None:
        self.settings = settings_from_env()

    async def prepare(self, context: ServiceContext) -> None:
        self.engine = ForecastEngine(context.store, self.settings)
        js = context.nc.jetstream()
        for producer in ("ingest", "signal"):
            await ensure_stream(js, service_stream(producer))
        await ensure_consumer(js, ORDERS)
        await ensure_consumer(js, SIGNALS)

    def register(self, server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
        servicer = ForecastServiceServicer(context.pool, self.engine)
        forecast_pb2_grpc.add_ForecastServiceServicer_to_server(servicer, server)
        return [forecast_pb2.DESCRIPTOR.services_by_name["ForecastService"].full_name]

    async def run_inputs(self, context: ServiceContext, stop: asyncio.Event) -> None:
        consumers = [
            DurableConsumer(context.nc, spec, batch_handler=self.engine.handle_batch, batch=500)
            for spec in (ORDERS, SIGNALS)
        ]
        async with asyncio.TaskGroup() as group:
            for consumer in consumers:
                group.create_task(consumer.run(stop))


def build() -> ServiceDefinition:
    service = Forecast()
    return ServiceDefinition(
        name="forecast",
        register=service.register,
        grpc_port=50053,
        migrations_dir=MIGRATIONS,
        prepare=service.prepare,
        roles=[service.run_inputs],
        outbox_route=outbox_route,
    )
