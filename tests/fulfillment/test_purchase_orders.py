"""Purchase orders: the lifecycle rules in the pure domain (with Hypothesis over receipt and
cancel sequences), then through the real stack — fulfillment and inventory-sync running on
PostgreSQL and NATS, receipts reaching stock exactly once, bad input refused with field
details, the read model equal to a rebuild from the log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.errors import InvalidArgument, PreconditionFailed
from pulsestock.eventstore import EventStore
from pulsestock.eventstore.store import connect_pool
from pulsestock.fulfillment.application.purchase_orders import PurchaseOrders
from pulsestock.fulfillment.domain import purchase_orders as po_domain
from pulsestock.fulfillment.domain.purchase_orders import PoStatus, PurchaseOrder
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1.common_pb2 import OrderLine
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import RunningService, running_service

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)


def created(lines: dict[str, int]) -> PurchaseOrder:
    event = po_domain.create(
        "po1",
        "acme",
        "wh-east",
        [OrderLine(sku=s, quantity=q) for s, q in lines.items()],
        NOW + timedelta(days=3),
        NOW,
    )
    return PurchaseOrder("po1").apply(event)


def run(po: PurchaseOrder, events: list[Message]) -> PurchaseOrder:
    for event in events:
        po = po.apply(event)
    return po


def lines(**quantities: int) -> list[OrderLine]:
    return [OrderLine(sku=sku.replace("_", "-"), quantity=q) for sku, q in quantities.items()]


# -- domain ----------------------------------------------------------------------------------


def test_lifecycle_partial_receipt_then_cancel_remaining() -> None:
    po = created({"MUG-1": 10, "CUP-2": 4})
    assert po.status is PoStatus.DRAFT
    with pytest.raises(PreconditionFailed, match="draft: cannot receive"):
        po_domain.receive(po, "grn-1", lines(MUG_1=1), NOW)
    po = run(po, po_domain.submit(po, NOW))
    assert po_domain.submit(po, NOW) == []  # idempotent
    po = run(po, po_domain.confirm(po, NOW))
    po = run(po, po_domain.receive(po, "grn-1", lines(MUG_1=6), NOW))
    assert po.status is PoStatus.PARTIALLY_RECEIVED
    assert po.open_lines == {"MUG-1": 4, "CUP-2": 4}
    assert po_domain.receive(po, "grn-1", lines(MUG_1=6), NOW) == []  # same receipt again
    with pytest.raises(PreconditionFailed, match="over-receipt of MUG-1: 5 received, 4 open"):
        po_domain.receive(po, "grn-2", lines(MUG_1=5), NOW)
    with pytest.raises(PreconditionFailed, match="no line for BOWL-3"):
        po_domain.receive(po, "grn-2", lines(BOWL_3=1), NOW)
    (cancelled,) = po_domain.cancel(po, "supplier out of stock", NOW)
    assert {line.sku: line.quantity for line in cancelled.cancelled_lines} == {
        "MUG-1": 4,
        "CUP-2": 4,
    }
    po = run(po, [cancelled])
    assert po.status is PoStatus.CANCELLED
    assert po.received == {"MUG-1": 6}
    assert po.open_lines == {}
    with pytest.raises(PreconditionFailed, match="cancelled: cannot receive"):
        po_domain.receive(po, "grn-3", lines(MUG_1=1), NOW)
    assert po_domain.cancel(po, "", NOW) == []


def test_full_receipt_is_received_and_cannot_be_cancelled() -> None:
    po = created({"MUG-1": 3})
    po = run(po, po_domain.submit(po, NOW))
    po = run(po, po_domain.receive(po, "grn-1", lines(MUG_1=3), NOW))
    assert po.status is PoStatus.RECEIVED
    with pytest.raises(PreconditionFailed, match="received: cannot cancel"):
        po_domain.cancel(po, "", NOW)


def test_bad_values_name_their_fields() -> None:
    with pytest.raises(InvalidArgument) as caught:
        po_domain.create(
            "po1", "", "wh east", [OrderLine(sku="", quantity=0)], NOW - timedelta(1), NOW
        )
    assert {v.field for v in caught.value.violations} == {
        "supplier_id",
        "warehouse_id",
        "lines[0].sku",
        "lines[0].quantity",
        "expected_at",
    }
    with pytest.raises(InvalidArgument) as caught:
        po_domain.check_receipt("", [])
    assert {v.field for v in caught.value.violations} == {"receipt_id", "lines"}


@settings(max_examples=200, deadline=None)
@given(
    ordered=st.dictionaries(st.sampled_from(["A", "B", "C"]), st.integers(1, 20), min_size=1),
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("receive"),
                st.sampled_from(["A", "B", "C", "D"]),
                st.integers(1, 25),
                st.integers(0, 6),
            ),
            st.tuples(st.just("cancel"), st.just(""), st.just(0), st.just(0)),
        ),
        max_size=12,
    ),
)
def test_received_never_exceeds_ordered_and_quantities_add_up(
    ordered: dict[str, int], steps: list[tuple[str, str, int, int]]
) -> None:
    po = created(ordered)
    po = run(po, po_domain.submit(po, NOW))
    for action, sku, quantity, receipt in steps:
        try:
            if action == "receive":
                events = po_domain.receive(po, f"grn-{receipt}", lines(**{sku: quantity}), NOW)
            else:
                events = po_domain.cancel(po, "", NOW)
        except PreconditionFailed:
            continue  # refused: nothing to apply
        po = run(po, events)
    for sku, quantity in ordered.items():
        received, cancelled = po.received.get(sku, 0), po.cancelled.get(sku, 0)
        assert 0 <= received <= quantity
        assert received + cancelled + po.open_quantity(sku) == quantity
        assert po.open_quantity(sku) >= 0
    assert set(po.received) <= set(ordered)
    if po.status is PoStatus.RECEIVED:
        assert po.received == ordered


# -- through the stack ----------------------------------------------------------------------


@pytest.fixture
async def inventory(infra: Infra, nats_url: str) -> AsyncIterator[RunningService]:
    schema = unique_name("inv")
    async with running_service("inventory-sync", infra.database_url, nats_url, schema) as svc:
        yield svc
    await drop_schema(infra.database_url, schema)


@pytest.fixture
async def fulfillment(
    infra: Infra, nats_url: str, inventory: RunningService
) -> AsyncIterator[RunningService]:
    schema = unique_name("ful")
    env = {"INVENTORY_SYNC_ADDR": inventory.address}
    async with running_service("fulfillment", infra.database_url, nats_url, schema, env) as svc:
        yield svc
    await drop_schema(infra.database_url, schema)


async def on_hand(stock: InventorySyncServiceStub, sku: str, warehouse: str) -> int:
    reply = await stock.GetStock(inv.GetStockRequest(sku=sku))
    return sum(w.on_hand for w in reply.warehouses if w.warehouse_id == warehouse)


@pytest.mark.slow
async def test_purchase_order_through_the_stack(
    infra: Infra, fulfillment: RunningService, inventory: RunningService
) -> None:
    api = FulfillmentServiceStub(fulfillment.channel)
    stock = InventorySyncServiceStub(inventory.channel)
    request = pb.CreatePurchaseOrderRequest(
        supplier_id="acme",
        warehouse_id="wh-east",
        request_id="req-1",
        lines=[OrderLine(sku="MUG-1", quantity=10), OrderLine(sku="CUP-2", quantity=4)],
    )
    first = await api.CreatePurchaseOrder(request)
    again = await api.CreatePurchaseOrder(request)  # a double click: the same order
    assert again.purchase_order_id == first.purchase_order_id
    po_id = first.purchase_order_id
    assert first.purchase_order.status == pb.PURCHASE_ORDER_STATUS_DRAFT

    await api.SubmitPurchaseOrder(pb.PurchaseOrderCommand(purchase_order_id=po_id))
    await api.ConfirmPurchaseOrder(pb.PurchaseOrderCommand(purchase_order_id=po_id))
    receipt = pb.ReceivePurchaseOrderRequest(
        purchase_order_id=po_id, receipt_id="grn-1", lines=[OrderLine(sku="MUG-1", quantity=6)]
    )
    reply = await api.ReceivePurchaseOrder(receipt)
    assert reply.purchase_order.status == pb.PURCHASE_ORDER_STATUS_PARTIALLY_RECEIVED
    await api.ReceivePurchaseOrder(receipt)  # the same note again: recorded once

    async def stocked() -> bool:
        return await on_hand(stock, "MUG-1", "wh-east") == 6

    await eventually(stocked, within=20, what="the receipt in inventory-sync")

    with pytest.raises(grpc.aio.AioRpcError) as over:
        await api.ReceivePurchaseOrder(
            pb.ReceivePurchaseOrderRequest(
                purchase_order_id=po_id,
                receipt_id="grn-2",
                lines=[OrderLine(sku="MUG-1", quantity=5)],
            )
        )
    assert over.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "over-receipt" in (over.value.details() or "")

    cancelled = await api.CancelPurchaseOrder(
        pb.PurchaseOrderCommand(purchase_order_id=po_id, reason="supplier short")
    )
    assert cancelled.purchase_order.status == pb.PURCHASE_ORDER_STATUS_CANCELLED
    assert {(line.sku, line.received, line.open) for line in cancelled.purchase_order.lines} == {
        ("MUG-1", 6, 0),
        ("CUP-2", 0, 0),
    }
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await api.ReceivePurchaseOrder(
            pb.ReceivePurchaseOrderRequest(
                purchase_order_id=po_id,
                receipt_id="grn-3",
                lines=[OrderLine(sku="MUG-1", quantity=1)],
            )
        )
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    got = await api.GetPurchaseOrder(pb.GetPurchaseOrderRequest(purchase_order_id=po_id))
    assert [entry.type.rsplit(".", 1)[1] for entry in got.history] == [
        "PurchaseOrderCreated",
        "PurchaseOrderSubmitted",
        "PurchaseOrderConfirmed",
        "PurchaseOrderReceived",
        "PurchaseOrderCancelled",
    ]
    listed = await api.ListPurchaseOrders(
        pb.ListPurchaseOrdersRequest(sku="CUP-2", statuses=[pb.PURCHASE_ORDER_STATUS_CANCELLED])
    )
    assert [po.purchase_order_id for po in listed.purchase_orders] == [po_id]
    none = await api.ListPurchaseOrders(
        pb.ListPurchaseOrdersRequest(statuses=[pb.PURCHASE_ORDER_STATUS_DRAFT])
    )
    assert list(none.purchase_orders) == []
    # Still exactly the one receipt's stock after everything else.
    assert await on_hand(stock, "MUG-1", "wh-east") == 6

    # The read model is a fold of the log: a rebuild gives the very same rows.
    pool = await connect_pool(infra.database_url, fulfillment.settings.schema, max_size=2)
    try:
        query = "SELECT purchase_order_id, status, version, state FROM purchase_orders"
        live = sorted(tuple(row) for row in await pool.fetch(query))
        await PurchaseOrders(EventStore(pool, fulfillment.settings.schema)).rebuild_read_model()
        assert sorted(tuple(row) for row in await pool.fetch(query)) == live
    finally:
        await pool.close()


@pytest.mark.slow
async def test_bad_input_is_refused_with_field_details_and_writes_nothing(
    fulfillment: RunningService,
) -> None:
    api = FulfillmentServiceStub(fulfillment.channel)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.CreatePurchaseOrder(
            pb.CreatePurchaseOrderRequest(
                supplier_id="",
                warehouse_id="wh-east",
                lines=[OrderLine(sku="MUG-1", quantity=-2)],
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"supplier_id", "lines[0].quantity"}
    with pytest.raises(grpc.aio.AioRpcError) as bad_receipt:
        await api.ReceivePurchaseOrder(
            pb.ReceivePurchaseOrderRequest(purchase_order_id="nope", receipt_id="")
        )
    assert bad_receipt.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad_receipt.value)) == {"receipt_id", "lines"}
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.SubmitPurchaseOrder(pb.PurchaseOrderCommand(purchase_order_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await api.ListPurchaseOrders(pb.ListPurchaseOrdersRequest())
    assert list(listed.purchase_orders) == []
