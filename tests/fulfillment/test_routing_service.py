"""RouteOrder through the real services: warehouses from fulfillment's master data, stock
from inventory-sync; FBT first for TikTok orders, the buyer's region otherwise, splits, one
answer per order however often asked, bad input refused with field details."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import inventory_sync_events_pb2 as iev
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import running_service

pytestmark = pytest.mark.slow
Stubs = tuple[FulfillmentServiceStub, InventorySyncServiceStub]


@pytest.fixture
async def stack(infra: Infra, nats_url: str) -> AsyncIterator[Stubs]:
    schemas = [unique_name("inv"), unique_name("ful")]
    try:
        async with running_service(
            "inventory-sync", infra.database_url, nats_url, schemas[0]
        ) as inventory:
            env = {"INVENTORY_SYNC_ADDR": inventory.address}
            async with running_service(
                "fulfillment", infra.database_url, nats_url, schemas[1], env
            ) as fulfillment:
                yield (
                    FulfillmentServiceStub(fulfillment.channel),
                    InventorySyncServiceStub(inventory.channel),
                )
    finally:
        for schema in schemas:
            await drop_schema(infra.database_url, schema)


def order(channel: int, order_id: str, region: str, **lines: int) -> pb.RouteOrderRequest:
    return pb.RouteOrderRequest(
        channel=channel,
        channel_order_id=order_id,
        buyer_region=region,
        lines=[OrderLine(sku=sku, quantity=qty) for sku, qty in lines.items()],
    )


async def test_orders_are_routed_by_channel_region_and_stock(stack: Stubs) -> None:
    api, stock = stack
    for warehouse in (
        ev.WarehouseProfile(warehouse_id="wh-east", region="us-east", kind="own"),
        ev.WarehouseProfile(warehouse_id="wh-west", region="us-west", kind="3pl"),
        ev.WarehouseProfile(
            warehouse_id="fbt-west",
            region="us-west",
            kind="fbt",
            channels=[Channel.CHANNEL_TIKTOK_SHOP],
        ),
    ):
        await api.SetWarehouse(pb.SetWarehouseRequest(warehouse=warehouse))
    version = 0
    for warehouse, units in (("wh-east", 10), ("wh-west", 40), ("fbt-west", 20)):
        received = await stock.Receive(
            inv.ReceiveRequest(
                sku="MUG", warehouse_id=warehouse, quantity=units, command_id=f"seed-{warehouse}"
            )
        )
        version = received.stream_version
    # Routing reads inventory-sync's read model: let it include the receipts first.
    await stock.GetStock(inv.GetStockRequest(sku="MUG", min_stream_version=version), timeout=10)

    tiktok = await api.RouteOrder(order(Channel.CHANNEL_TIKTOK_SHOP, "t-1", "us-east", MUG=3))
    assert tiktok.warehouse_id == "fbt-west"
    shopify = await api.RouteOrder(order(Channel.CHANNEL_SHOPIFY, "s-1", "us-east", MUG=3))
    assert shopify.warehouse_id == "wh-east"
    # 65 mugs on Amazon: FBT does not fulfil Amazon; east's 10 and west's 40, 15 backordered.
    big = await api.RouteOrder(order(Channel.CHANNEL_AMAZON, "a-1", "us-east", MUG=65))
    assert [(a.warehouse_id, a.quantity) for a in big.allocations] == [
        ("wh-east", 10),
        ("wh-west", 40),
    ]
    assert [(line.sku, line.quantity) for line in big.unallocated] == [("MUG", 15)]

    # Asked again after east's stock is gone: the order keeps the answer it was given.
    shrunk = await stock.Adjust(
        inv.AdjustRequest(
            sku="MUG",
            warehouse_id="wh-east",
            delta=-10,
            reason=iev.ADJUSTMENT_REASON_DAMAGE,
            command_id="shrink",
        )
    )
    await stock.GetStock(
        inv.GetStockRequest(sku="MUG", min_stream_version=shrunk.stream_version), timeout=10
    )
    again = await api.RouteOrder(order(Channel.CHANNEL_SHOPIFY, "s-1", "us-east", MUG=3))
    assert again == shopify
    later = await api.RouteOrder(order(Channel.CHANNEL_SHOPIFY, "s-2", "us-east", MUG=3))
    assert later.warehouse_id == "wh-west"


async def test_bad_route_requests_name_their_fields(stack: Stubs) -> None:
    api, _ = stack
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.RouteOrder(
            pb.RouteOrderRequest(
                channel_order_id="has space", lines=[OrderLine(sku="MUG", quantity=0)]
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"channel", "channel_order_id", "lines[0].quantity"}
