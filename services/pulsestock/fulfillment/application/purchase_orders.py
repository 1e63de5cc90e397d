"""Purchase-order commands: load the order's stream, let the domain decide, append what it
decided with the version it was decided on (optimistic concurrency), and write the order's
read-model row in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg
from google.protobuf.message import Message
from pulsestock.errors import InvalidArgument, NotFound
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.eventstore.events import WrongExpectedVersion
from pulsestock.fulfillment.domain import purchase_orders as po_domain
from pulsestock.fulfillment.domain.purchase_orders import PurchaseOrder
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1.common_pb2 import OrderLine

Decision = Callable[[PurchaseOrder], list[Message]]
# Namespace of purchase-order ids derived from a caller's request id (uuid5): the same
# request id is the same purchase order, whichever replica answers.
PO_ID_NAMESPACE = uuid.UUID("6f1d0f3e-0c53-4a4e-9a55-2b0f3c1e7d11")
CONFLICT_RETRIES = 5


def purchase_order_id_for(request_id: str) -> str:
    return str(uuid.uuid5(PO_ID_NAMESPACE, request_id)) if request_id else str(uuid.uuid4())


def to_message(po: PurchaseOrder) -> pb.PurchaseOrder:
    message = pb.PurchaseOrder(
        purchase_order_id=po.purchase_order_id,
        supplier_id=po.supplier_id,
        warehouse_id=po.warehouse_id,
        status=pb.PurchaseOrderStatus.ValueType(po.status.value),
        version=po.version,
        lines=[
            pb.PurchaseOrderLine(
                sku=sku,
                ordered=ordered,
                received=po.received.get(sku, 0),
                open=po.open_quantity(sku),
            )
            for sku, ordered in sorted(po.ordered.items())
        ],
    )
    for field_name, moment in (
        ("expected_at", po.expected_at),
        ("created_at", po.created_at),
        ("updated_at", po.updated_at),
    ):
        if moment is not None:
            getattr(message, field_name).FromDatetime(moment)
    return message


_UPSERT = (
    "INSERT INTO purchase_orders (purchase_order_id, supplier_id, warehouse_id, status, skus,"
    " version, updated_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (purchase_order_id) DO UPDATE SET status = excluded.status,"
    " version = excluded.version, updated_at = excluded.updated_at, state = excluded.state"
    " WHERE purchase_orders.version < excluded.version"
)


async def _write_row(conn: asyncpg.Connection, po: PurchaseOrder) -> None:
    await conn.execute(
        _UPSERT,
        po.purchase_order_id,
        po.supplier_id,
        po.warehouse_id,
        po.status.value,
        sorted(po.ordered),
        po.version,
        po.updated_at,
        to_message(po).SerializeToString(deterministic=True),
    )


def _check_id(purchase_order_id: str) -> None:
    if not valid_id(purchase_order_id):
        raise InvalidArgument.single("purchase_order_id", ID_RULE)


class PurchaseOrders:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def load(
        self, purchase_order_id: str, conn: asyncpg.Connection | None = None
    ) -> PurchaseOrder:
        events = await self.store.read_stream(po_domain.stream_of(purchase_order_id), conn=conn)
        return po_domain.fold(purchase_order_id, (event.decode() for event in events))

    async def execute(
        self, purchase_order_id: str, decide: Decision, *, must_exist: bool = True
    ) -> PurchaseOrder:
        """Decide on the current state and append; a concurrent writer that won is retried
        on the state it left (the decision is made again, so rules hold on the new state)."""
        if must_exist:
            _check_id(purchase_order_id)
        for attempt in range(CONFLICT_RETRIES):
            async with self.store.pool.acquire() as conn, conn.transaction():
                po = await self.load(purchase_order_id, conn)
                if must_exist and not po.exists:
                    raise NotFound(f"purchase order {purchase_order_id} does not exist")
                events = decide(po)
                if not events:
                    return po
                try:
                    await self.store.append(
                        po_domain.stream_of(purchase_order_id),
                        po.version,
                        [NewEvent.of(event) for event in events],
                        conn=conn,
                    )
                except WrongExpectedVersion:
                    if attempt == CONFLICT_RETRIES - 1:
                        raise
                    continue
                for event in events:
                    po = po.apply(event)
                await _write_row(conn, po)
                return po
        raise AssertionError("unreachable")

    async def create(
        self,
        request_id: str,
        supplier_id: str,
        warehouse_id: str,
        lines: Sequence[OrderLine],
        expected_at: datetime | None,
        now: datetime,
    ) -> PurchaseOrder:
        if request_id and not valid_id(request_id):
            raise InvalidArgument.single("request_id", ID_RULE)
        purchase_order_id = purchase_order_id_for(request_id)
        created = po_domain.create(
            purchase_order_id, supplier_id, warehouse_id, lines, expected_at, now
        )

        def decide(po: PurchaseOrder) -> list[Message]:
            return [] if po.exists else [created]  # a repeated request answers the first

        return await self.execute(purchase_order_id, decide, must_exist=False)

    async def with_history(
        self, purchase_order_id: str
    ) -> tuple[PurchaseOrder, list[pb.PurchaseOrderHistoryEntry]]:
        """The order and its audit trail, from one read of its stream."""
        from google.protobuf import json_format

        _check_id(purchase_order_id)
        events = await self.store.read_stream(po_domain.stream_of(purchase_order_id))
        if not events:
            raise NotFound(f"purchase order {purchase_order_id} does not exist")
        decoded = [event.decode() for event in events]
        entries = []
        for event, message in zip(events, decoded, strict=True):
            entry = pb.PurchaseOrderHistoryEntry(
                version=event.stream_version,
                type=event.type,
                data_json=json_format.MessageToJson(message, indent=None),
            )
            entry.recorded_at.FromDatetime(event.recorded_at)
            entries.append(entry)
        return po_domain.fold(purchase_order_id, decoded), entries

    async def list(
        self, sku: str, statuses: Sequence[int], page_size: int, after: str
    ) -> tuple[list[pb.PurchaseOrder], str]:
        rows = await self.store.pool.fetch(
            "SELECT purchase_order_id, state FROM purchase_orders"
            " WHERE ($1 = '' OR skus @> ARRAY[$1]) AND (cardinality($2::int[]) = 0"
            " OR status = ANY($2)) AND purchase_order_id > $3"
            " ORDER BY purchase_order_id LIMIT $4",
            sku,
            list(statuses),
            after,
            page_size + 1,
        )
        orders = [pb.PurchaseOrder.FromString(row["state"]) for row in rows[:page_size]]
        more = len(rows) > page_size
        return orders, (orders[-1].purchase_order_id if more and orders else "")

    async def rebuild_read_model(self) -> int:
        """Fold every purchase-order stream again into `purchase_orders` (one transaction)."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM purchase_orders")
            ids = await conn.fetch(
                "SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE 'po-%'"
            )
            for row in ids:
                po = await self.load(row["stream_id"].removeprefix("po-"), conn)
                await _write_row(conn, po)
        return len(ids)
