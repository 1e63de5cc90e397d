"""A purchase order: its state folded from its own event stream, and the pure decisions that
turn commands into events. No I/O and no clock: `now` comes with every command.

Lifecycle: draft -> submitted -> confirmed -> partially received -> received, or cancelled.
Receipts are accepted once the order is submitted (suppliers ship before confirming more
often than sellers would like); a cancellation cancels what is still open and keeps what was
received. Every receipt names itself (`receipt_id`), so the same goods-received note recorded
twice changes nothing, and what it puts into stock is keyed by it (`receive_command_id`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.clock import timestamp as _stamp
from pulsestock.errors import FieldViolation, InvalidArgument, PreconditionFailed
from pulsestock.fulfillment.domain.order_lines import check_lines, summed
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1.common_pb2 import OrderLine


class PoStatus(enum.Enum):
    DRAFT = 1
    SUBMITTED = 2
    CONFIRMED = 3
    PARTIALLY_RECEIVED = 4
    RECEIVED = 5
    CANCELLED = 6

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


def stream_of(purchase_order_id: str) -> str:
    return f"po-{purchase_order_id}"


def receive_command_id(purchase_order_id: str, receipt_id: str, sku: str) -> str:
    """The idempotency key of inventory-sync's Receive for one line of one receipt: a retry,
    a redelivery or a restart between recording the receipt and the call all send the same
    key, so the stock goes up once."""
    return f"po:{purchase_order_id}:receipt:{receipt_id}:{sku}"


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class PurchaseOrder:
    purchase_order_id: str
    supplier_id: str = ""
    warehouse_id: str = ""
    ordered: Mapping[str, int] = field(default_factory=dict)
    received: Mapping[str, int] = field(default_factory=dict)
    cancelled: Mapping[str, int] = field(default_factory=dict)
    status: PoStatus = PoStatus.DRAFT
    receipts: frozenset[str] = frozenset()
    expected_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0

    @property
    def exists(self) -> bool:
        return self.version > 0

    def open_quantity(self, sku: str) -> int:
        return self.ordered.get(sku, 0) - self.received.get(sku, 0) - self.cancelled.get(sku, 0)

    @property
    def open_lines(self) -> dict[str, int]:
        return {sku: self.open_quantity(sku) for sku in self.ordered if self.open_quantity(sku)}

    # -- folding -------------------------------------------------------------------------

    def apply(self, event: Message) -> PurchaseOrder:
        version = self.version + 1
        if isinstance(event, ev.PurchaseOrderCreated):
            return replace(
                self,
                supplier_id=event.supplier_id,
                warehouse_id=event.warehouse_id,
                ordered=summed(event.lines),
                expected_at=_time(event.expected_at) if event.HasField("expected_at") else None,
                created_at=_time(event.created_at),
                updated_at=_time(event.created_at),
                version=version,
            )
        if isinstance(event, ev.PurchaseOrderSubmitted):
            return replace(
                self, status=PoStatus.SUBMITTED, updated_at=_time(event.at), version=version
            )
        if isinstance(event, ev.PurchaseOrderConfirmed):
            return replace(
                self, status=PoStatus.CONFIRMED, updated_at=_time(event.at), version=version
            )
        if isinstance(event, ev.PurchaseOrderReceived):
            received = dict(self.received)
            for sku, quantity in summed(event.lines).items():
                received[sku] = received.get(sku, 0) + quantity
            moved = replace(self, received=received)
            complete = not moved.open_lines
            return replace(
                moved,
                status=PoStatus.RECEIVED if complete else PoStatus.PARTIALLY_RECEIVED,
                receipts=self.receipts | {event.receipt_id},
                updated_at=_time(event.received_at),
                version=version,
            )
        if isinstance(event, ev.PurchaseOrderCancelled):
            cancelled = dict(self.cancelled)
            for sku, quantity in summed(event.cancelled_lines).items():
                cancelled[sku] = cancelled.get(sku, 0) + quantity
            return replace(
                self,
                cancelled=cancelled,
                status=PoStatus.CANCELLED,
                updated_at=_time(event.at),
                version=version,
            )
        return replace(self, version=version)  # an event this version does not know


def fold(purchase_order_id: str, events: Iterable[Message]) -> PurchaseOrder:
    state = PurchaseOrder(purchase_order_id)
    for event in events:
        state = state.apply(event)
    return state


# -- decisions -------------------------------------------------------------------------------


def create(
    purchase_order_id: str,
    supplier_id: str,
    warehouse_id: str,
    lines: Iterable[OrderLine],
    expected_at: datetime | None,
    now: datetime,
) -> ev.PurchaseOrderCreated:
    items = list(lines)
    violations = check_lines(items, "lines")
    if not valid_id(supplier_id):
        violations.append(FieldViolation("supplier_id", ID_RULE))
    if not valid_id(warehouse_id):
        violations.append(FieldViolation("warehouse_id", ID_RULE))
    if expected_at is not None and expected_at < now:
        violations.append(FieldViolation("expected_at", "must not be in the past"))
    if violations:
        raise InvalidArgument(violations)
    event = ev.PurchaseOrderCreated(
        purchase_order_id=purchase_order_id,
        supplier_id=supplier_id,
        warehouse_id=warehouse_id,
        lines=[OrderLine(sku=sku, quantity=qty) for sku, qty in summed(items).items()],
        created_at=_stamp(now),
    )
    if expected_at is not None:
        event.expected_at.CopyFrom(_stamp(expected_at))
    return event


def _refuse(po: PurchaseOrder, action: str) -> PreconditionFailed:
    return PreconditionFailed(
        f"purchase order {po.purchase_order_id} is {po.status.label}: cannot {action}"
    )


def submit(po: PurchaseOrder, now: datetime) -> list[Message]:
    """Idempotent: submitting a submitted order appends nothing."""
    if po.status is PoStatus.SUBMITTED:
        return []
    if po.status is not PoStatus.DRAFT:
        raise _refuse(po, "submit")
    return [ev.PurchaseOrderSubmitted(purchase_order_id=po.purchase_order_id, at=_stamp(now))]


def confirm(po: PurchaseOrder, now: datetime) -> list[Message]:
    if po.status is PoStatus.CONFIRMED:
        return []
    if po.status is not PoStatus.SUBMITTED:
        raise _refuse(po, "confirm")
    return [ev.PurchaseOrderConfirmed(purchase_order_id=po.purchase_order_id, at=_stamp(now))]


def cancel(po: PurchaseOrder, reason: str, now: datetime) -> list[Message]:
    """Cancels what is still open. A received order cannot be cancelled; cancelling a
    cancelled one appends nothing."""
    if po.status is PoStatus.CANCELLED:
        return []
    if po.status is PoStatus.RECEIVED:
        raise _refuse(po, "cancel")
    return [
        ev.PurchaseOrderCancelled(
            purchase_order_id=po.purchase_order_id,
            at=_stamp(now),
            reason=reason,
            cancelled_lines=[OrderLine(sku=s, quantity=q) for s, q in po.open_lines.items()],
        )
    ]


def check_receipt(receipt_id: str, lines: Iterable[OrderLine]) -> None:
    violations = check_lines(lines, "lines")
    if not valid_id(receipt_id):
        violations.append(FieldViolation("receipt_id", ID_RULE))
    if violations:
        raise InvalidArgument(violations)


RECEIVABLE = (PoStatus.SUBMITTED, PoStatus.CONFIRMED, PoStatus.PARTIALLY_RECEIVED)


def receive(
    po: PurchaseOrder, receipt_id: str, lines: Iterable[OrderLine], now: datetime
) -> list[Message]:
    """A receipt of some or all open quantities. The same receipt_id again appends nothing
    (checked before anything else, so a retry after success never fails); more than is
    open, a SKU the order does not have, or a cancelled/draft order is refused."""
    items = list(lines)
    check_receipt(receipt_id, items)
    if receipt_id in po.receipts:
        return []
    if po.status not in RECEIVABLE:
        raise _refuse(po, "receive")
    for sku, quantity in summed(items).items():
        if sku not in po.ordered:
            raise PreconditionFailed(f"purchase order {po.purchase_order_id} has no line for {sku}")
        if quantity > po.open_quantity(sku):
            raise PreconditionFailed(
                f"over-receipt of {sku}: {quantity} received, {po.open_quantity(sku)} open"
                f" on purchase order {po.purchase_order_id}"
            )
    return [
        ev.PurchaseOrderReceived(
            purchase_order_id=po.purchase_order_id,
            lines=[OrderLine(sku=sku, quantity=qty) for sku, qty in summed(items).items()],
            received_at=_stamp(now),
            receipt_id=receipt_id,
            warehouse_id=po.warehouse_id,
        )
    ]
