"""Backorders: a channel order line sold without stock (Oversold) owes less as the channel
cancels or ships it elsewhere, is closed by a cancellation, and is filled, oldest first, as
soon as the stock covers it, before any channel is told it can sell that stock. Pure domain
code, driven the way the writer drives it (decide, then fill, then channel quantities)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from pulsestock.inventory_sync.domain.commands import (
    CancelOrder,
    Command,
    ReceiveStock,
    SettleOrder,
    decide,
    fill_backorders,
)
from pulsestock.inventory_sync.domain.ledger import (
    LineTarget,
    OrderPolicy,
    OrderStatus,
    SkuLedger,
    channel_quantity_changes,
)
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
POLICY = OrderPolicy(timedelta(minutes=10), timedelta(days=7))
TIKTOK = Channel.CHANNEL_TIKTOK_SHOP
PAID = ev.ORDER_PAYMENT_PAID


def run(ledger: SkuLedger, command: Command) -> list[Message]:
    events, _ = decide(command, {ledger.sku: ledger}, NOW, POLICY.unpaid_hold)
    appended = list(events.get(ledger.sku, []))
    for event in appended:
        ledger.apply(event)
    if appended:
        appended += fill_backorders(ledger, {}, NOW)
    for event in channel_quantity_changes(ledger, NOW):
        ledger.apply(event)
    return appended


def settle(order: str, ordered: int, cancelled: int = 0, shipped: int = 0) -> SettleOrder:
    return SettleOrder(
        TIKTOK, order, (("MUG", LineTarget(ordered, cancelled, shipped)),), PAID, POLICY
    )


def test_a_backorder_shrinks_with_cancellations_and_is_filled_from_the_next_receipt() -> None:
    ledger = SkuLedger("MUG")
    run(ledger, ReceiveStock("MUG", "W1", 2, command_id="r1"))
    oversold = run(ledger, settle("A", 5))
    assert [type(e).__name__ for e in oversold] == ["Oversold"]
    assert ledger.orders[(TIKTOK, "A")].status is OrderStatus.OVERSOLD

    shrunk = run(ledger, settle("A", 5, cancelled=1))
    assert [(type(e).__name__, getattr(e, "owed", None)) for e in shrunk] == [
        ("BackorderChanged", 4)
    ]
    assert run(ledger, settle("A", 5)) == []  # older news changes nothing

    # 3 more arrive elsewhere: 5 available cover the 4 owed; held before any channel sees it.
    filled = run(ledger, ReceiveStock("MUG", "W2", 3, command_id="r2"))
    reserved = [e for e in filled if isinstance(e, ev.StockReserved)]
    assert [(e.warehouse_id, e.quantity, e.fills_backorder) for e in reserved] == [
        ("W2", 3, True),
        ("W1", 1, True),
    ]
    assert ledger.available == 1
    assert set(ledger.channel_quantities.values()) == {1}
    assert not ledger.backorders

    # The channel ships the 4: they leave, nothing is released twice for the cancelled unit.
    run(ledger, settle("A", 5, cancelled=1, shipped=4))
    assert ledger.on_hand == 1
    assert ledger.reserved == 0
    assert ledger.orders[(TIKTOK, "A")].status is OrderStatus.SHIPPED


def test_oldest_first_and_a_cancelled_backorder_is_never_filled() -> None:
    ledger = SkuLedger("MUG")
    run(ledger, settle("A", 3))
    run(ledger, settle("B", 2))
    run(ledger, settle("C", 1))
    assert list(ledger.backorders) == [(TIKTOK, "A"), (TIKTOK, "B"), (TIKTOK, "C")]
    run(ledger, CancelOrder(TIKTOK, "B", ("MUG",)))
    assert list(ledger.backorders) == [(TIKTOK, "A"), (TIKTOK, "C")]

    run(ledger, ReceiveStock("MUG", "W1", 2, command_id="r1"))  # A (3) does not fit, C does
    assert list(ledger.backorders) == [(TIKTOK, "A")]
    assert ledger.orders[(TIKTOK, "C")].status is OrderStatus.RESERVED
    run(ledger, ReceiveStock("MUG", "W1", 2, command_id="r2"))  # 1 + 2 = 3: A now
    assert not ledger.backorders
    assert ledger.orders[(TIKTOK, "B")].status is OrderStatus.RELEASED
    assert ledger.available == 0
