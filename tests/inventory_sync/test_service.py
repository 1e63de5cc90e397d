"""inventory-sync over real gRPC, PostgreSQL and NATS JetStream."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from pulsestock.bus import cloudevent_headers, subject_for
from pulsestock.eventstore import NewEvent
from pulsestock.v1 import ingest_events_pb2, signal_events_pb2
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import Infra, eventually
from tests.helpers.service import RunningService

TIKTOK, SHOPIFY, AMAZON = (
    Channel.CHANNEL_TIKTOK_SHOP,
    Channel.CHANNEL_SHOPIFY,
    Channel.CHANNEL_AMAZON,
)


async def receive(stub: Stub, sku: str, quantity: int, warehouse: str = "W1") -> int:
    reply = await stub.Receive(
        pb.ReceiveRequest(sku=sku, warehouse_id=warehouse, quantity=quantity), timeout=10
    )
    return reply.stream_version


async def reserve(
    stub: Stub, sku: str, quantity: int, order: str, *, channel: int = TIKTOK, **flags: bool
) -> pb.ReserveResponse:
    return await stub.Reserve(
        pb.ReserveRequest(
            channel=channel,  # type: ignore[arg-type]
            channel_order_id=order,
            lines=[OrderLine(sku=sku, quantity=quantity)],
            **flags,
        ),
        timeout=10,
    )


async def stock(stub: Stub, sku: str) -> pb.GetStockResponse:
    return await stub.GetStock(pb.GetStockRequest(sku=sku), timeout=10)


async def wait_for_stock(stub: Stub, sku: str, **expected: int) -> pb.GetStockResponse:
    """The read model follows the log: wait until it shows the expected totals."""
    latest = pb.GetStockResponse()

    async def matches() -> bool:
        nonlocal latest
        latest = await stock(stub, sku)
        totals = {
            "on_hand": sum(w.on_hand for w in latest.warehouses),
            "reserved": sum(w.reserved for w in latest.warehouses),
            "available": latest.available,
        }
        return all(totals[k] == v for k, v in expected.items())

    await eventually(matches, within=10, what=f"stock of {sku} to be {expected}")
    return latest


async def channel_quantities(stub: Stub, sku: str) -> dict[int, int]:
    reply = await stub.GetChannelQuantities(pb.GetChannelQuantitiesRequest(sku=sku), timeout=10)
    return {q.channel: q.quantity for q in reply.quantities}


async def history(stub: Stub, sku: str) -> list[pb.HistoryEntry]:
    reply = await stub.GetHistory(pb.GetHistoryRequest(sku=sku, limit=1000), timeout=10)
    return list(reply.entries)


async def test_received_stock_shows_in_stock_history_and_every_channel(stub: Stub) -> None:
    assert await receive(stub, "MUG", 60, "W1") >= 1
    await receive(stub, "MUG", 40, "W2")
    reply = await wait_for_stock(stub, "MUG", on_hand=100, available=100)
    assert [w.warehouse_id for w in reply.warehouses] == ["W1", "W2"]

    async def listed() -> bool:
        return await channel_quantities(stub, "MUG") == {TIKTOK: 100, SHOPIFY: 100, AMAZON: 100}

    await eventually(listed, what="channel quantities")
    types = [entry.type for entry in await history(stub, "MUG")]
    assert types.count("pulsestock.v1.StockReceived") == 2
    assert "pulsestock.v1.ChannelQuantityChanged" in types


async def test_repeated_commands_append_nothing_and_answer_the_same(stub: Stub) -> None:
    first = await stub.Receive(
        pb.ReceiveRequest(sku="CAP", warehouse_id="W1", quantity=10, command_id="po-1"), timeout=10
    )
    again = await stub.Receive(
        pb.ReceiveRequest(sku="CAP", warehouse_id="W1", quantity=10, command_id="po-1"), timeout=10
    )
    assert again.stream_version == first.stream_version
    reserved = await reserve(stub, "CAP", 3, "order-1", paid=True)
    length = len(await history(stub, "CAP"))
    repeated = await reserve(stub, "CAP", 3, "order-1", paid=True)
    assert repeated == reserved
    assert reserved.reserved
    assert reserved.reservation_ids == ["tiktok_shop:order-1:CAP"]
    assert len(await history(stub, "CAP")) == length
    await wait_for_stock(stub, "CAP", on_hand=10, reserved=3, available=7)


async def test_short_stock_refuses_or_records_a_backorder(stub: Stub, bus: NATS) -> None:
    await receive(stub, "TEE", 2)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(stub, "TEE", 3, "o-refused")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "TEE has 2 available, 3 requested" in (refused.value.details() or "")

    oversold_events = await bus.jetstream().subscribe("inventory_sync.oversold.>")
    backorder = await reserve(stub, "TEE", 3, "o-sold", channel=SHOPIFY, already_sold=True)
    assert (backorder.reserved, backorder.oversold) == (False, True)
    message = await oversold_events.next_msg(timeout=10)
    assert message.headers is not None
    assert message.headers["ce-type"] == "pulsestock.v1.Oversold"
    oversold = ev.Oversold.FromString(message.data)
    assert (oversold.sku, oversold.channel_order_id, oversold.quantity) == ("TEE", "o-sold", 3)
    await wait_for_stock(stub, "TEE", on_hand=2, reserved=0, available=2)


async def test_multi_sku_order_reserves_all_lines_or_none(stub: Stub) -> None:
    await receive(stub, "A1", 5)
    await receive(stub, "B1", 1)
    request = pb.ReserveRequest(
        channel=AMAZON,
        channel_order_id="multi-1",
        lines=[OrderLine(sku="A1", quantity=2), OrderLine(sku="B1", quantity=2)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Reserve(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    request.lines[1].quantity = 1
    reply = await stub.Reserve(request, timeout=10)
    assert sorted(reply.reservation_ids) == ["amazon:multi-1:A1", "amazon:multi-1:B1"]
    await wait_for_stock(stub, "A1", reserved=2, available=3)
    await wait_for_stock(stub, "B1", reserved=1, available=0)


async def test_bad_request_names_every_bad_field_and_changes_nothing(stub: Stub) -> None:
    request = pb.ReserveRequest(
        channel=Channel.CHANNEL_UNSPECIFIED,
        channel_order_id="",
        lines=[OrderLine(sku="bad sku", quantity=0)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Reserve(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    assert [v.field for v in details.field_violations] == [
        "channel",
        "channel_order_id",
        "lines[0].sku",
        "lines[0].quantity",
    ]
    assert await history(stub, "bad-sku") == []


async def test_business_rules_refuse_with_failed_precondition(stub: Stub) -> None:
    await receive(stub, "JAR", 4)
    await reserve(stub, "JAR", 3, "o1", paid=True)
    cases = [
        stub.Adjust(
            pb.AdjustRequest(
                sku="JAR", warehouse_id="W1", delta=-2, reason=ev.ADJUSTMENT_REASON_DAMAGE
            ),
            timeout=10,
        ),
        stub.Transfer(
            pb.TransferRequest(sku="JAR", from_warehouse_id="W1", to_warehouse_id="W2", quantity=2),
            timeout=10,
        ),
    ]
    for call in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.Ship(pb.ShipRequest(sku="JAR", reservation_id="nope"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.Ship(pb.ShipRequest(sku="JAR", reservation_id="tiktok_shop:o1:JAR"), timeout=10)
    await wait_for_stock(stub, "JAR", on_hand=1, reserved=0, available=1)


@pytest.mark.parametrize(
    "service_env",
    [{"INVENTORY_SYNC_HOLD_SECONDS": "1", "INVENTORY_SYNC_EXPIRY_SWEEP_SECONDS": "0.1"}],
)
async def test_unpaid_holds_expire_and_paid_ones_stay(stub: Stub) -> None:
    await receive(stub, "HAT", 10)
    unpaid = await reserve(stub, "HAT", 4, "unpaid", paid=False)
    assert unpaid.HasField("expires_at")
    await reserve(stub, "HAT", 2, "paid", paid=True)
    await wait_for_stock(stub, "HAT", reserved=2, available=8)  # within ~1 s + a sweep
    released = [
        json.loads(e.data_json)
        for e in await history(stub, "HAT")
        if e.type == "pulsestock.v1.ReservationReleased"
    ]
    assert released == [
        {
            "sku": "HAT",
            "reservationId": "tiktok_shop:unpaid:HAT",
            "reason": "RELEASE_REASON_EXPIRED",
            "at": released[0]["at"],
        }
    ]


async def publish_order(
    bus: NATS, message: ingest_events_pb2.OrderPlaced | ingest_events_pb2.OrderCancelled, key: str
) -> None:
    event = NewEvent.of(message)
    headers = cloudevent_headers(
        event_id=str(uuid.uuid4()), event_type=event.type, source="/pulsestock/ingest", subject=key
    )
    await bus.jetstream().publish(
        subject_for("ingest", event.type, key, 16), event.data, headers=headers
    )


async def test_channel_orders_from_ingest_reserve_once_and_cancel(stub: Stub, bus: NATS) -> None:
    await receive(stub, "SOCK", 5)
    placed = ingest_events_pb2.OrderPlaced(
        channel=SHOPIFY, channel_order_id="shop-77", lines=[OrderLine(sku="SOCK", quantity=2)]
    )
    await publish_order(bus, placed, "shop-77")
    await publish_order(bus, placed, "shop-77")  # delivered twice by the channel
    await wait_for_stock(stub, "SOCK", reserved=2, available=3)
    reservations = [
        e for e in await history(stub, "SOCK") if e.type == "pulsestock.v1.StockReserved"
    ]
    assert len(reservations) == 1
    await publish_order(
        bus,
        ingest_events_pb2.OrderCancelled(channel=SHOPIFY, channel_order_id="shop-77"),
        "shop-77",
    )
    await wait_for_stock(stub, "SOCK", reserved=0, available=5)


async def test_pulse_gives_the_hot_channel_the_pool_and_caps_the_others(
    stub: Stub, bus: NATS
) -> None:
    await receive(stub, "LAMP", 50)
    policy = ev.AllocationPolicyChanged(
        sku="LAMP",
        kind=ev.ALLOCATION_POLICY_KIND_PULSE_PRIORITY,
        channel_buffers={"CHANNEL_AMAZON": 10},
        slow_channel_cap=5,
    )
    await stub.SetAllocationPolicy(pb.SetAllocationPolicyRequest(policy=policy), timeout=10)

    async def quantities_are(expected: dict[int, int]) -> None:
        async def check() -> bool:
            return await channel_quantities(stub, "LAMP") == expected

        await eventually(check, within=10, what=f"channel quantities {expected}")

    await quantities_are({TIKTOK: 50, SHOPIFY: 50, AMAZON: 40})
    detected = signal_events_pb2.PulseDetected(
        pulse_id="p1", sku="LAMP", hot_channel="CHANNEL_TIKTOK_SHOP"
    )
    for message in (detected,):
        event = NewEvent.of(message)
        headers = cloudevent_headers(
            event_id=str(uuid.uuid4()), event_type=event.type, source="/s", subject="LAMP"
        )
        await bus.jetstream().publish("signal.pulse_detected.0", event.data, headers=headers)
    await quantities_are({TIKTOK: 50, SHOPIFY: 5, AMAZON: 5})
    ended = NewEvent.of(signal_events_pb2.PulseEnded(pulse_id="p1", sku="LAMP"))
    headers = cloudevent_headers(
        event_id=str(uuid.uuid4()), event_type=ended.type, source="/s", subject="LAMP"
    )
    await bus.jetstream().publish("signal.pulse_ended.0", ended.data, headers=headers)
    await quantities_are({TIKTOK: 50, SHOPIFY: 50, AMAZON: 40})


async def read_model(pool: asyncpg.Pool, schema: str) -> dict[str, list[tuple[object, ...]]]:
    tables = {
        "stock_levels": "sku, warehouse_id",
        "active_reservations": "reservation_id",
        "channel_quantities": "sku, channel",
        "projected_versions": "sku",
        "backorders": "sku, channel, channel_order_id",
    }
    return {
        table: [
            tuple(r) for r in await pool.fetch(f"SELECT * FROM {schema}.{table} ORDER BY {key}")
        ]
        for table, key in tables.items()
    }


async def test_rebuilt_read_model_equals_the_live_one(
    stub: Stub, inventory: RunningService, infra: Infra
) -> None:
    for sku in ("R1", "R2"):
        await receive(stub, sku, 20)
    await reserve(stub, "R1", 5, "a", paid=True)
    await reserve(stub, "R2", 5, "b", paid=False)
    await stub.Transfer(
        pb.TransferRequest(sku="R1", from_warehouse_id="W1", to_warehouse_id="W9", quantity=4),
        timeout=10,
    )
    await stub.Ship(pb.ShipRequest(sku="R1", reservation_id="tiktok_shop:a:R1"), timeout=10)
    await wait_for_stock(stub, "R1", on_hand=15, reserved=0)
    # Backorders: sold without stock, one cancelled, one filled by the next receipt, one open.
    for order, units in (("c", 20), ("d", 30), ("e", 40)):
        sold = await reserve(stub, "R1", units, order, already_sold=True)
        assert sold.oversold
    await stub.Release(
        pb.ReleaseRequest(sku="R1", reservation_id="tiktok_shop:d:R1", reason=1), timeout=10
    )
    await receive(stub, "R1", 10)  # 25 available: c (20) is filled, e (40) still owed
    await wait_for_stock(stub, "R1", on_hand=25, reserved=20)
    assert (await stock(stub, "R1")).backordered == 40
    pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
    try:
        schema = inventory.settings.schema
        live = await read_model(pool, schema)
        reply = await stub.Rebuild(pb.RebuildRequest(), timeout=30)
        assert reply.events_applied == await pool.fetchval(f"SELECT count(*) FROM {schema}.events")
        assert await read_model(pool, schema) == live
    finally:
        await pool.close()


async def test_a_query_with_min_stream_version_reads_the_callers_own_write(stub: Stub) -> None:
    """Without the option the read model may lag; with the version a command answered, the
    query waits until its figures include that command, every time."""
    version = await receive(stub, "RYW", 1000)
    assert (
        await stub.GetStock(pb.GetStockRequest(sku="RYW", min_stream_version=version), timeout=10)
    ).available == 1000
    for n in range(1, 31):
        reply = await reserve(stub, "RYW", 1, f"ryw-{n}", paid=True)
        written = reply.stream_versions["RYW"]
        assert written > version  # the reservation and the channel quantities it moved
        version = written
        figures = await stub.GetStock(
            pb.GetStockRequest(sku="RYW", min_stream_version=written), timeout=10
        )
        assert (figures.available, figures.warehouses[0].reserved) == (1000 - n, n)
        assert figures.stream_version >= written
        listed = await stub.GetChannelQuantities(
            pb.GetChannelQuantitiesRequest(sku="RYW", min_stream_version=written), timeout=10
        )
        assert {q.channel: q.quantity for q in listed.quantities} == {
            TIKTOK: 1000 - n,
            SHOPIFY: 1000 - n,
            AMAZON: 1000 - n,
        }


async def test_min_stream_version_beyond_the_ledger_or_negative_is_refused(stub: Stub) -> None:
    version = await receive(stub, "RYW-BAD", 5)
    with pytest.raises(grpc.aio.AioRpcError) as ahead:
        await stub.GetStock(
            pb.GetStockRequest(sku="RYW-BAD", min_stream_version=version + 10), timeout=10
        )
    assert ahead.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"at version {version}" in (ahead.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await stub.GetChannelQuantities(
            pb.GetChannelQuantitiesRequest(sku="RYW-BAD", min_stream_version=-1), timeout=10
        )
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "min_stream_version" in (negative.value.details() or "") + str(
        rpc_status.from_call(negative.value)
    )


async def test_six_hundred_concurrent_orders_for_a_hundred_units(stub: Stub) -> None:
    """Three channels race for one SKU: exactly 100 units are reserved, the rest are refused
    or recorded oversold, and the ledger and its read model agree."""
    await receive(stub, "VIRAL", 100)
    channels = [TIKTOK, SHOPIFY, AMAZON]

    async def order(index: int) -> str:
        try:
            reply = await reserve(
                stub,
                "VIRAL",
                1,
                f"o-{index}",
                channel=channels[index % 3],
                paid=True,
                already_sold=index % 2 == 0,
            )
        except grpc.aio.AioRpcError as error:
            return "refused" if error.code() == grpc.StatusCode.FAILED_PRECONDITION else "error"
        return "reserved" if reply.reserved else "oversold"

    outcomes = await asyncio.gather(*(order(i) for i in range(600)))
    assert outcomes.count("reserved") == 100
    assert outcomes.count("refused") + outcomes.count("oversold") == 500
    await wait_for_stock(stub, "VIRAL", on_hand=100, reserved=100, available=0)
    entries = await history(stub, "VIRAL")
    assert sum(e.type == "pulsestock.v1.StockReserved" for e in entries) == 100
    assert sum(e.type == "pulsestock.v1.Oversold" for e in entries) == outcomes.count("oversold")

    async def sold_out() -> bool:
        return await channel_quantities(stub, "VIRAL") == {TIKTOK: 0, SHOPIFY: 0, AMAZON: 0}

    await eventually(sold_out, what="every channel at zero")


async def test_stock_changes_are_published_with_the_levels_after_them(
    stub: Stub, bus: NATS
) -> None:
    changes = await bus.jetstream().subscribe("inventory_sync.stock_changed.>")
    await receive(stub, "BOX", 9, "W7")
    await reserve(stub, "BOX", 4, "b1", paid=True)
    seen: list[ev.StockChanged] = []

    async def reserved_seen() -> bool:
        message = await changes.next_msg(timeout=5)
        assert message.headers is not None
        assert message.headers["ce-type"] == "pulsestock.v1.StockChanged"
        seen.append(ev.StockChanged.FromString(message.data))
        return seen[-1].reserved == 4

    await eventually(reserved_seen, within=10, what="a StockChanged with the reservation")
    last = seen[-1]
    assert (last.sku, last.warehouse_id, last.on_hand, last.available) == ("BOX", "W7", 9, 5)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    stock=st.integers(0, 40),
    orders=st.lists(st.integers(1, 5), min_size=1, max_size=60),
    already_sold=st.booleans(),
)
async def test_successful_reservations_never_exceed_stock(
    stub: Stub, stock: int, orders: list[int], already_sold: bool
) -> None:
    """Property, over real gRPC and PostgreSQL: whatever the stock and the concurrent orders,
    what is reserved fits in the stock, no order that fits is turned away, and the ledger
    agrees with the answers."""
    sku = f"P-{uuid.uuid4().hex[:8]}"
    if stock:
        await receive(stub, sku, stock)

    async def order(index: int, quantity: int) -> bool:
        """True when reserved; False when turned away the documented way for the flags."""
        try:
            reply = await reserve(
                stub, sku, quantity, f"o{index}", paid=True, already_sold=already_sold
            )
        except grpc.aio.AioRpcError as error:
            if already_sold or error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise  # an order already sold is recorded as oversold, never refused
            return False
        assert reply.reserved != reply.oversold, reply
        assert already_sold or not reply.oversold
        return reply.reserved

    answers = await asyncio.gather(*(order(i, q) for i, q in enumerate(orders)))
    reserved = sum(q for q, ok in zip(orders, answers, strict=True) if ok)
    assert reserved <= stock
    # Reservations only grow, so an order turned away at any moment would not fit in what is
    # left at the end either; one that would fit must have been reserved, whatever the order
    # in which the concurrent calls were decided.
    left = stock - reserved
    turned_away = [q for q, ok in zip(orders, answers, strict=True) if not ok]
    assert all(q > left for q in turned_away), (stock, reserved, turned_away)
    await wait_for_stock(stub, sku, on_hand=stock, reserved=reserved, available=left)
