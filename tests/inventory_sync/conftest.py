from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop
from pulsestock.v1 import inventory_sync_pb2_grpc

from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import RunningService, running_service

Fakes = tuple[FakeTikTokShop, FakeShopify, FakeAmazon]


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    """The three channel APIs' fakes, listening on loopback for this test."""
    servers = (FakeTikTokShop(), FakeShopify(), FakeAmazon())
    for server in servers:
        await server.start()
    yield servers
    for server in servers:
        await server.stop()


@pytest.fixture
def service_env() -> dict[str, str]:
    """Tests override to set service settings (e.g. a short hold)."""
    return {}


@pytest.fixture
async def inventory(
    infra: Infra, nats_url: str, service_env: dict[str, str]
) -> AsyncIterator[RunningService]:
    schema = unique_name("inv")
    async with running_service(
        "inventory-sync", infra.database_url, nats_url, schema, service_env
    ) as service:
        yield service
    await drop_schema(infra.database_url, schema)


@pytest.fixture
def stub(inventory: RunningService) -> inventory_sync_pb2_grpc.InventorySyncServiceStub:
    return inventory_sync_pb2_grpc.InventorySyncServiceStub(inventory.channel)
