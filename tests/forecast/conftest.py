"""The forecast service on the real stack, for the tests that go through it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus import ensure_stream, service_stream
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub

from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import running_service


@pytest.fixture
async def forecast(infra: Infra, nats_url: str, bus: NATS) -> AsyncIterator[ForecastServiceStub]:
    """forecast in this event loop, on the test's own NATS, with its producers' streams."""
    js = bus.jetstream()
    for producer in ("ingest", "signal", "forecast"):
        await ensure_stream(js, service_stream(producer))
    schema = unique_name("fc")
    try:
        async with running_service(
            "forecast", infra.database_url, nats_url, schema, {"PULSESTOCK_PARTITIONS": "4"}
        ) as service:
            yield ForecastServiceStub(service.channel)
    finally:
        await drop_schema(infra.database_url, schema)
