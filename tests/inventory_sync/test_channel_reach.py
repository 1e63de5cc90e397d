"""What a channel is shown follows which warehouses fulfil it, also when a warehouse's
channels change with no stock moving: fulfillment's WarehouseSet reaches inventory-sync,
which works the channel quantities of the SKUs stocked there out again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service

TIKTOK, SHOPIFY, AMAZON = (
    Channel.CHANNEL_TIKTOK_SHOP,
    Channel.CHANNEL_SHOPIFY,
    Channel.CHANNEL_AMAZON,
)


class Stubs(NamedTuple):
    fulfillment: FulfillmentServiceStub
    stock: InventorySyncServiceStub


@pytest.fixture
async def stack(infra: Infra, nats_url: str) -> AsyncIterator[Stubs]:
    schemas = [unique_name("inv"), unique_name("ful")]
    try:
        async with running_service(
            "inventory-sync",
            infra.database_url,
            nats_url,
            schemas[0],
            {"INVENTORY_SYNC_SITES_REFRESH_SECONDS": "0.2"},
        ) as inventory:
            env = {"INVENTORY_SYNC_ADDR": inventory.address}
            async with running_service(
                "fulfillment", infra.database_url, nats_url, schemas[1], env
            ) as fulfillment:
                yield Stubs(
                    FulfillmentServiceStub(fulfillment.channel),
                    InventorySyncServiceStub(inventory.channel),
                )
    finally:
        for schema in schemas:
            await drop_schema(infra.database_url, schema)


async def test_a_warehouse_becoming_amazon_only_leaves_the_other_channels_at_once(
    stack: Stubs,
) -> None:
    for warehouse, units in (("fba-east", 30), ("own-east", 10)):
        await stack.stock.Receive(
            inv.ReceiveRequest(sku="KETTLE", warehouse_id=warehouse, quantity=units), timeout=10
        )

    async def shown(expected: dict[int, int]) -> bool:
        reply = await stack.stock.GetChannelQuantities(
            inv.GetChannelQuantitiesRequest(sku="KETTLE"), timeout=10
        )
        return {q.channel: q.quantity for q in reply.quantities} == expected

    every = {TIKTOK: 40, SHOPIFY: 40, AMAZON: 40}
    await eventually(lambda: shown(every), what="every channel shown all 40")
    # The FBA warehouse is declared Amazon's alone; no stock moves.
    await stack.fulfillment.SetWarehouse(
        pb.SetWarehouseRequest(
            warehouse=ev.WarehouseProfile(
                warehouse_id="fba-east", region="us-east", kind="fba", channels=[AMAZON]
            )
        ),
        timeout=10,
    )
    restricted = {TIKTOK: 10, SHOPIFY: 10, AMAZON: 40}
    await eventually(
        lambda: shown(restricted), within=15, what="TikTok Shop and Shopify shown own-east only"
    )
