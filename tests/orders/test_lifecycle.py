"""A channel order's notifications, in any order and any number of times, end in one order
state (ingest's join) and one ledger state (inventory-sync's settle) — for all three channels.
Pure domain code on both sides: no database, no clock.

Each generated case is a true history of one order (placed, paid, part cancelled, part
shipped, part returned); every notification is a snapshot of that history at some step, in
the channel's own shape, mapped by the channel's parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.ingest.domain import orders
from pulsestock.ingest.domain.orders import LineFacts, OrderFacts, Payment
from pulsestock.inventory_sync.domain.commands import SettleOrder, decide
from pulsestock.inventory_sync.domain.ledger import LineTarget, OrderPolicy, SkuLedger
from pulsestock.v1 import inventory_sync_events_pb2 as iev
from pulsestock.v1.common_pb2 import Channel

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
POLICY = OrderPolicy(timedelta(minutes=10), timedelta(days=7), restock_returns=True)
SKUS = ("MUG", "CAP")
ORDER = "4001"


@dataclass
class Truth:
    """The order as it really is after some steps."""

    lines: dict[str, LineFacts]
    payment: Payment
    cancelled_whole: bool = False
    steps: int = 0
    topic: str = "orders/create"
    history: list[Truth] = field(default_factory=list)

    def snapshot(self) -> Truth:
        return replace(self, lines=dict(self.lines), history=[])


@st.composite
def histories(draw: st.DrawFn, channel: int) -> list[Truth]:
    """Snapshots of one true history, oldest first."""
    skus = draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=2, unique=True))
    truth = Truth(
        lines={sku: LineFacts(ordered=draw(st.integers(1, 4))) for sku in skus},
        payment=draw(
            st.sampled_from(
                [Payment.UNPAID, Payment.AUTHORIZED, Payment.PAID]
                if channel == Channel.CHANNEL_SHOPIFY
                else [Payment.UNPAID, Payment.PAID]
            )
        ),
    )
    snapshots = [truth.snapshot()]
    for _ in range(draw(st.integers(0, 5))):
        step = draw(st.sampled_from(["pay", "cancel", "ship", "return", "cancel_all"]))
        sku = draw(st.sampled_from(skus))
        line = truth.lines[sku]
        open_units = line.ordered - line.cancelled - line.shipped
        if truth.cancelled_whole:
            break
        if step == "pay":
            truth.payment = Payment.PAID
            truth.topic = "orders/paid"
        elif step == "cancel" and open_units and channel == Channel.CHANNEL_SHOPIFY:
            n = draw(st.integers(1, open_units))  # only Shopify tells part cancellations
            truth.lines[sku] = replace(line, cancelled=line.cancelled + n)
            truth.topic = "orders/updated"
        elif step == "ship" and open_units and truth.payment == Payment.PAID:
            n = (
                draw(st.integers(1, open_units))
                if channel != Channel.CHANNEL_TIKTOK_SHOP
                else open_units
            )
            if channel == Channel.CHANNEL_TIKTOK_SHOP:  # TikTok ships the whole order
                for other, other_line in truth.lines.items():
                    rest = other_line.ordered - other_line.cancelled - other_line.shipped
                    truth.lines[other] = replace(other_line, shipped=other_line.shipped + rest)
            else:
                truth.lines[sku] = replace(line, shipped=line.shipped + n)
            truth.topic = "orders/updated"
        elif (
            step == "return" and line.shipped > line.returned and channel == Channel.CHANNEL_SHOPIFY
        ):
            truth.lines[sku] = replace(line, returned=line.returned + 1)
            truth.topic = "orders/updated"
        elif step == "cancel_all" and not any(ln.shipped for ln in truth.lines.values()):
            truth.cancelled_whole = True
            for other, other_line in truth.lines.items():
                truth.lines[other] = replace(other_line, cancelled=other_line.ordered)
            truth.topic = "orders/cancelled"
        else:
            continue
        truth.steps += 1
        snapshots.append(truth.snapshot())
    return snapshots


def as_notification(channel: int, truth: Truth) -> OrderFacts:
    """The snapshot in the channel's own shape, through the channel's parser."""
    at = T0 + timedelta(minutes=truth.steps)
    if channel == Channel.CHANNEL_SHOPIFY:
        body: dict[str, Any] = {
            "id": int(ORDER),
            "created_at": T0.isoformat(),
            "updated_at": at.isoformat(),
            "financial_status": {
                Payment.UNPAID: "pending",
                Payment.AUTHORIZED: "authorized",
                Payment.PAID: "paid",
            }[truth.payment],
            "cancelled_at": at.isoformat() if truth.cancelled_whole else None,
            "line_items": [
                {
                    "sku": sku,
                    "quantity": line.ordered,
                    "current_quantity": line.ordered - line.cancelled,
                }
                for sku, line in truth.lines.items()
            ],
            "fulfillments": [
                {"status": "success", "line_items": [{"sku": sku, "quantity": line.shipped}]}
                for sku, line in truth.lines.items()
                if line.shipped
            ],
            "refunds": [
                {
                    "refund_line_items": [
                        {
                            "quantity": line.returned,
                            "restock_type": "return",
                            "line_item": {"sku": sku},
                        }
                    ]
                }
                for sku, line in truth.lines.items()
                if line.returned
            ],
        }
        return orders.shopify_order(truth.topic, body, at)
    if channel == Channel.CHANNEL_AMAZON:
        shipped_all = all(ln.shipped == ln.ordered for ln in truth.lines.values())
        status = (
            "Canceled"
            if truth.cancelled_whole
            else "Pending"
            if truth.payment != Payment.PAID
            else "Shipped"
            if shipped_all
            else "PartiallyShipped"
            if any(ln.shipped for ln in truth.lines.values())
            else "Unshipped"
        )
        change = {
            "AmazonOrderId": ORDER,
            "OrderChangeTrigger": {"TimeOfOrderChange": at.isoformat().replace("+00:00", "Z")},
            "Summary": {
                "OrderStatus": status,
                "PurchaseDate": T0.isoformat().replace("+00:00", "Z"),
                "OrderItems": [
                    {"SellerSKU": sku, "Quantity": line.ordered, "QuantityShipped": line.shipped}
                    for sku, line in truth.lines.items()
                ],
            },
        }
        return orders.amazon_order_change(change, at)
    shipped = any(ln.shipped for ln in truth.lines.values())
    status = (
        "CANCELLED"
        if truth.cancelled_whole
        else "IN_TRANSIT"
        if shipped
        else "AWAITING_SHIPMENT"
        if truth.payment == Payment.PAID
        else "UNPAID"
    )
    detail = {
        "line_items": [
            {"seller_sku": sku, **({"display_status": "CANCELLED"} if i < line.cancelled else {})}
            for sku, line in truth.lines.items()
            for i in range(line.ordered)
        ]
    }
    return orders.tiktok_status(status, at, orders.tiktok_lines(detail))


def settle(ledgers: dict[str, SkuLedger], channel: int, facts: OrderFacts) -> None:
    command = SettleOrder(
        channel,
        ORDER,
        tuple(
            (sku, LineTarget(line.ordered, line.cancelled, line.shipped, line.returned))
            for sku, line in facts.lines.items()
        ),
        int(facts.payment),
        POLICY,
    )
    events, _ = decide(command, ledgers, T0, POLICY.unpaid_hold)
    for sku, batch in events.items():
        for event in batch:
            ledgers[sku].apply(event)


def stocked(layout: dict[str, int] | None = None) -> dict[str, SkuLedger]:
    ledgers = {sku: SkuLedger(sku) for sku in SKUS}
    for ledger in ledgers.values():
        for warehouse, units in (layout or {"W1": 20}).items():
            ledger.apply(iev.StockReceived(sku=ledger.sku, warehouse_id=warehouse, quantity=units))
    return ledgers


def ledger_state(ledgers: dict[str, SkuLedger]) -> dict[str, object]:
    return {
        sku: (
            {w: (level.on_hand, level.reserved) for w, level in ledger.warehouses.items()},
            {
                r.reservation_id: (r.quantity, r.expires_at is None)
                for r in ledger.reservations.values()
            },
            {  # an order cancelled before the ledger took it leaves no record: same stock
                key: (
                    rec.status,
                    rec.shipped,
                    rec.returned,
                    rec.payment if rec.reservation_id in ledger.reservations else None,
                )
                for key, rec in ledger.orders.items()
                if rec.reservation_id in ledger.reservations or rec.shipped
            },
        )
        for sku, ledger in ledgers.items()
    }


CHANNELS = [Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), channel=st.sampled_from(CHANNELS))
def test_any_order_and_duplication_of_notifications_ends_in_the_same_order_and_ledger(
    data: st.DataObject, channel: int
) -> None:
    snapshots = data.draw(histories(channel))
    notifications = [as_notification(channel, truth) for truth in snapshots]
    # Delivered in any order, some more than once (every one at least once).
    delivered = data.draw(
        st.permutations(
            notifications + data.draw(st.lists(st.sampled_from(notifications), max_size=4))
        )
    )

    in_order = OrderFacts()
    for seen in notifications:
        in_order = in_order.join(seen)
    final = snapshots[-1]
    assert in_order.lines == {sku: line for sku, line in final.lines.items()}
    assert in_order.payment == final.payment

    # ingest publishes the join after each arrival; inventory-sync settles each as it comes
    # (and JetStream may deliver those again, out of order)
    joined, published = OrderFacts(), []
    for seen in delivered:
        joined = joined.join(seen)
        published.append(joined)
    assert joined.lines == in_order.lines
    assert joined.payment == in_order.payment
    redelivered = data.draw(
        st.permutations(published + data.draw(st.lists(st.sampled_from(published), max_size=3)))
    )

    live, reference = stocked(), stocked()
    for facts in redelivered:
        settle(live, channel, facts)
    settle(reference, channel, in_order)  # the whole story in one notification
    assert ledger_state(live) == ledger_state(reference)
    for sku, line in in_order.lines.items():  # and that state is the right one
        level = live[sku].warehouses["W1"]
        assert level.reserved == line.ordered - line.cancelled - line.shipped
        assert level.on_hand == 20 - line.shipped + line.returned


@settings(max_examples=200, deadline=None)
@given(data=st.data(), channel=st.sampled_from(CHANNELS))
def test_a_line_split_across_warehouses_settles_to_the_right_totals_in_any_order(
    data: st.DataObject, channel: int
) -> None:
    """Two units in each of two warehouses: a line of three or four is held in both. Its
    notifications, in any order and repeated, leave every warehouse within its stock and
    the line's held, shipped and returned units where the channel says they are."""
    snapshots = data.draw(histories(channel))
    notifications = [as_notification(channel, truth) for truth in snapshots]
    delivered = data.draw(
        st.permutations(
            notifications + data.draw(st.lists(st.sampled_from(notifications), max_size=4))
        )
    )
    final = OrderFacts()
    for seen in notifications:
        final = final.join(seen)
    live = stocked({"W1": 2, "W2": 2})
    joined = OrderFacts()
    for seen in delivered:
        joined = joined.join(seen)
        settle(live, channel, joined)
    for sku, line in final.lines.items():
        levels = live[sku].warehouses.values()
        assert all(0 <= level.reserved <= level.on_hand for level in levels)
        assert (
            sum(level.reserved for level in levels) == line.ordered - line.cancelled - line.shipped
        )
        assert sum(level.on_hand for level in levels) == 4 - line.shipped + line.returned
        held = sum(r.quantity for r in live[sku].reservations.values())
        assert held == line.ordered - line.cancelled - line.shipped
