"""RouteOrder through the real services: warehouses from fulfillment's master data, stock
from inventory-sync; FBT first for TikTok orders, the buyer's region otherwise, splits, one
answer per order however often asked, bad input refused with field details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

import asyncpg
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
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service

pytestmark = pytest.mark.slow


class Stubs(NamedTuple):
    api: FulfillmentServiceStub
    stock: InventorySyncServiceStub
    inventory_schema: str  # where inventory-sync keeps its tables


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
                yield Stubs(
                    FulfillmentServiceStub(fulfillment.channel),
                    InventorySyncServiceStub(inventory.channel),
                    schemas[0],
                )
    finally:
        for schema in schemas:
            await drop_schema(infra.database_url, schema)


WAREHOUSES = (
    ev.WarehouseProfile(warehouse_id="wh-east", region="us-east", kind="own"),
    ev.WarehouseProfile(warehouse_id="wh-west", region="us-west", kind="3pl"),
    ev.WarehouseProfile(
        warehouse_id="fbt-west",
        region="us-west",
        kind="fbt",
        channels=[Channel.CHANNEL_TIKTOK_SHOP],
    ),
)


async def set_warehouses(api: FulfillmentServiceStub) -> None:
    for profile in WAREHOUSES:
        await api.SetWarehouse(pb.SetWarehouseRequest(warehouse=profile))


def order(channel: int, order_id: str, region: str, **lines: int) -> pb.RouteOrderRequest:
    return pb.RouteOrderRequest(
        channel=channel,
        channel_order_id=order_id,
        buyer_region=region,
        lines=[OrderLine(sku=sku, quantity=qty) for sku, qty in lines.items()],
    )


async def test_orders_are_routed_by_channel_region_and_stock(stack: Stubs) -> None:
    api, stock, _ = stack
    await set_warehouses(api)
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
    api, stock, _ = stack
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.RouteOrder(
            pb.RouteOrderRequest(
                channel_order_id="has space", lines=[OrderLine(sku="MUG", quantity=0)]
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"channel", "channel_order_id", "lines[0].quantity"}
    with pytest.raises(grpc.aio.AioRpcError) as bad_holds:
        await stock.GetOrderHolds(inv.GetOrderHoldsRequest(channel_order_id=" padded "))
    assert bad_holds.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad_holds.value)) == {"channel", "channel_order_id"}


async def wait_for_sites(database_url: str, schema: str, count: int) -> None:
    """inventory-sync learns warehouses from fulfillment's WarehouseSet events."""
    connection = await asyncpg.connect(database_url)

    async def known() -> bool:
        seen = await connection.fetchval(f'SELECT count(*) FROM "{schema}".warehouse_sites')
        return bool(seen >= count)

    try:
        await eventually(known, 15, f"{count} warehouse sites in inventory-sync")
    finally:
        await connection.close()


async def test_reservations_hold_stock_where_routing_ships_it(stack: Stubs, infra: Infra) -> None:
    """The channel's order is reserved in the warehouse the routing rule picks: FBT for a
    TikTok Shop order, the buyer's region otherwise, never a warehouse that does not fulfil
    the order's channel; with no site known, the warehouse with the most to spare."""
    api, stock, inventory_schema = stack
    for warehouse, units in (("wh-east", 10), ("wh-west", 40), ("fbt-west", 20)):
        await stock.Receive(
            inv.ReceiveRequest(
                sku="MUG", warehouse_id=warehouse, quantity=units, command_id=warehouse
            )
        )
    before_sites = await stock.Reserve(reserve(Channel.CHANNEL_SHOPIFY, "s-0", "us-east"))
    assert held_in(before_sites) == [("wh-west", 3)]  # most to spare

    await set_warehouses(api)
    await wait_for_sites(infra.database_url, inventory_schema, 3)

    tiktok = await stock.Reserve(reserve(Channel.CHANNEL_TIKTOK_SHOP, "t-1", "us-east"))
    assert held_in(tiktok) == [("fbt-west", 3)]
    east = await stock.Reserve(reserve(Channel.CHANNEL_SHOPIFY, "s-1", "us-east"))
    assert held_in(east) == [("wh-east", 3)]
    # FBT now has the most to spare and is in the buyer's region, but it does not
    # fulfil Amazon: the Amazon order is held in the other west warehouse.
    await stock.Receive(
        inv.ReceiveRequest(sku="MUG", warehouse_id="fbt-west", quantity=50, command_id="more-fbt")
    )
    amazon = await stock.Reserve(reserve(Channel.CHANNEL_AMAZON, "a-1", "us-west"))
    assert held_in(amazon) == [("wh-west", 3)]
    # 40 on Amazon: no warehouse it may use has 40 (west 34, east 7): the line is
    # split, nearest first; what is left only FBT could cover: refused.
    split = await stock.Reserve(reserve(Channel.CHANNEL_AMAZON, "a-2", "us-west", 40))
    assert held_in(split) == [("wh-west", 34), ("wh-east", 6)]
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await stock.Reserve(reserve(Channel.CHANNEL_AMAZON, "a-3", "us-west", 2))
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    again = await stock.Reserve(reserve(Channel.CHANNEL_TIKTOK_SHOP, "t-1", "us-east"))
    assert held_in(again) == [("fbt-west", 3)]  # a repeat, not a new hold

    held = await stock.GetStock(
        inv.GetStockRequest(sku="MUG", min_stream_version=again.stream_versions["MUG"]),
        timeout=10,
    )
    assert {w.warehouse_id: w.reserved for w in held.warehouses} == {
        "wh-east": 9,
        "wh-west": 40,
        "fbt-west": 3,
    }

    # fulfillment records where inventory-sync holds each order, and RouteOrder
    # answers with it.
    async def routed_as_held() -> bool:
        answer = await api.RouteOrder(order(Channel.CHANNEL_AMAZON, "a-2", "us-west", MUG=40))
        return [(a.warehouse_id, a.quantity) for a in answer.allocations] == [
            ("wh-west", 34),
            ("wh-east", 6),
        ]

    await eventually(routed_as_held, 15, "RouteOrder to answer the held split")
    # The split line is one reservation to its caller: releasing it frees both.
    released = await stock.Release(
        inv.ReleaseRequest(
            sku="MUG",
            reservation_id=split.reservation_ids[0],
            reason=iev.RELEASE_REASON_CANCELLED,
        )
    )
    after = await stock.GetStock(
        inv.GetStockRequest(sku="MUG", min_stream_version=released.stream_version),
        timeout=10,
    )
    assert {w.warehouse_id: w.reserved for w in after.warehouses} == {
        "wh-east": 3,
        "wh-west": 6,
        "fbt-west": 3,
    }


def held_in(response: inv.ReserveResponse) -> list[tuple[str, int]]:
    return [(part.warehouse_id, part.quantity) for part in response.held]


def reserve(channel: int, order_id: str, region: str, quantity: int = 3) -> inv.ReserveRequest:
    return inv.ReserveRequest(
        channel=channel,
        channel_order_id=order_id,
        buyer_region=region,
        lines=[OrderLine(sku="MUG", quantity=quantity)],
        paid=True,
    )
