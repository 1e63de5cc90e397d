"""JetStream redelivers an order message inventory-sync has already applied (its ack was
lost, or the message was stored twice): the ledger changes once only, and the copy is
acknowledged quietly (not dead-lettered)."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pulsestock.bus import cloudevent_headers, service_stream, subject_for
from pulsestock.eventstore import NewEvent
from pulsestock.inventory_sync.entrypoints.consumers import ORDERS
from pulsestock.v1 import ingest_events_pb2
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import eventually
from tests.inventory_sync.test_service import history, receive, wait_for_stock

INGEST = service_stream("ingest").name


async def publish(
    bus: NATS,
    message: ingest_events_pb2.OrderPlaced | ingest_events_pb2.OrderCancelled,
    event_id: str,
    msg_id: str,
) -> int:
    """Publish as ingest does, with the given CloudEvents id and JetStream message id; returns
    the stream sequence JetStream stored it at."""
    event = NewEvent.of(message)
    headers = cloudevent_headers(
        event_id=event_id, event_type=event.type, source="/pulsestock/ingest", subject="order"
    )
    headers["Nats-Msg-Id"] = msg_id
    subject = subject_for("ingest", event.type, message.channel_order_id, 16)
    ack = await bus.jetstream().publish(subject, event.data, headers=headers)
    assert not ack.duplicate  # stored: a copy JetStream's own dedup dropped would prove nothing
    return ack.seq


async def settled(bus: NATS, sequence: int) -> None:
    """Wait until the service's order consumer has acknowledged everything up to `sequence`
    (acked, or termed after dead-lettering), so its effect, if any, is in the ledger."""

    async def acknowledged() -> bool:
        info = await bus.jetstream().consumer_info(INGEST, ORDERS.durable)
        return info.ack_floor.stream_seq >= sequence and info.num_ack_pending == 0

    await eventually(acknowledged, within=15, what=f"the order consumer to ack #{sequence}")


async def ledger_of(stub: Stub, sku: str) -> list[tuple[int, str, str]]:
    return [(e.stream_version, e.type, e.data_json) for e in await history(stub, sku)]


async def test_a_redelivered_order_changes_the_ledger_once(stub: Stub, bus: NATS) -> None:
    dead_letters: list[Msg] = []

    async def collect(message: Msg) -> None:
        dead_letters.append(message)

    watching = await bus.subscribe("dead_letters.>", cb=collect)
    await receive(stub, "SOCK", 5)
    placed = ingest_events_pb2.OrderPlaced(
        channel=Channel.CHANNEL_SHOPIFY,
        channel_order_id="shop-1",
        lines=[OrderLine(sku="SOCK", quantity=2)],
    )
    placed_id = str(uuid.uuid4())
    await settled(bus, await publish(bus, placed, placed_id, placed_id))
    await wait_for_stock(stub, "SOCK", reserved=2, available=3)
    reserved = await ledger_of(stub, "SOCK")
    assert [t for _, t, _ in reserved].count("pulsestock.v1.StockReserved") == 1

    # The same event again (same ce-id and payload) while its reservation stands.
    await settled(bus, await publish(bus, placed, placed_id, f"{placed_id}/redelivery-1"))
    assert await ledger_of(stub, "SOCK") == reserved

    cancelled = ingest_events_pb2.OrderCancelled(
        channel=Channel.CHANNEL_SHOPIFY, channel_order_id="shop-1"
    )
    cancelled_id = str(uuid.uuid4())
    await settled(bus, await publish(bus, cancelled, cancelled_id, cancelled_id))
    await wait_for_stock(stub, "SOCK", reserved=0, available=5)
    released = await ledger_of(stub, "SOCK")

    # A late copy of the order after its cancellation must not reserve it again, and a copy
    # of the cancellation releases nothing more.
    await settled(bus, await publish(bus, placed, placed_id, f"{placed_id}/redelivery-2"))
    await settled(bus, await publish(bus, cancelled, cancelled_id, f"{cancelled_id}/again"))
    assert await ledger_of(stub, "SOCK") == released
    await wait_for_stock(stub, "SOCK", on_hand=5, reserved=0, available=5)

    await bus.flush()
    await watching.unsubscribe()
    assert [m.headers for m in dead_letters] == []
