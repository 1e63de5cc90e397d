"""The services fulfillment works with, started for a test: inventory-sync and forecast, then
fulfillment pointed at them, each in its own schema, on the test's own NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus import ensure_stream, service_stream
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import running_service

Chain = tuple[FulfillmentServiceStub, InventorySyncServiceStub, ForecastServiceStub]


@pytest.fixture
async def chain(infra: Infra, nats_url: str, bus: NATS) -> AsyncIterator[Chain]:
    js = bus.jetstream()
    for producer in ("ingest", "signal", "forecast", "inventory-sync", "fulfillment"):
        await ensure_stream(js, service_stream(producer))
    schemas = [unique_name("inv"), unique_name("fc"), unique_name("ful")]
    common = {"PULSESTOCK_PARTITIONS": "4"}
    try:
        async with (
            running_service(
                "inventory-sync", infra.database_url, nats_url, schemas[0], common
            ) as inventory,
            running_service(
                "forecast", infra.database_url, nats_url, schemas[1], common
            ) as forecast,
        ):
            peers = {
                **common,
                "INVENTORY_SYNC_ADDR": inventory.address,
                "FORECAST_ADDR": forecast.address,
            }
            async with running_service(
                "fulfillment", infra.database_url, nats_url, schemas[2], peers
            ) as fulfillment:
                yield (
                    FulfillmentServiceStub(fulfillment.channel),
                    InventorySyncServiceStub(inventory.channel),
                    ForecastServiceStub(forecast.channel),
                )
    finally:
        for schema in schemas:
            await drop_schema(infra.database_url, schema)
