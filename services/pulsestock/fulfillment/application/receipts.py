"""Receipts into stock: the process manager that turns every recorded PurchaseOrderReceived
into inventory-sync `Receive` calls, exactly once in effect.

It follows fulfillment's own log like a projection: the calls for a batch of events are made
inside the transaction that advances its checkpoint, so a crash anywhere (before the call,
after it, before the commit) leaves the checkpoint where it was and the next runner makes the
same calls again, with the same command ids (po + receipt + SKU), which inventory-sync
applies once. The checkpoint row lock also keeps a second replica from running it at once.
Holding a transaction across gRPC calls is fine here: receipts are few (a warehouse's goods
received notes), not the order path.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from pulsestock.eventstore import EventStore
from pulsestock.eventstore.events import RecordedEvent
from pulsestock.eventstore.projection import ProjectionRunner
from pulsestock.eventstore.store import CONNECTION_LOST, Wakeup, notify_channel
from pulsestock.fulfillment.adapters.inventory_sync_client import (
    InventorySyncClient,
    StockRefused,
    StockUnavailable,
)
from pulsestock.fulfillment.domain.purchase_orders import receive_command_id
from pulsestock.telemetry import get_logger
from pulsestock.v1 import fulfillment_events_pb2 as ev

log = get_logger(__name__)
RECEIVED_TYPE = ev.PurchaseOrderReceived.DESCRIPTOR.full_name
MAX_BACKOFF_S = 30.0


class ReceiptsToStock:
    name = "receipts_to_stock"

    def __init__(self, inventory: InventorySyncClient) -> None:
        self.inventory = inventory

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        if event.type != RECEIVED_TYPE:
            return
        receipt = ev.PurchaseOrderReceived.FromString(event.data)
        for line in receipt.lines:
            command_id = receive_command_id(receipt.purchase_order_id, receipt.receipt_id, line.sku)
            try:
                await self.inventory.receive(
                    line.sku,
                    receipt.warehouse_id,
                    line.quantity,
                    f"purchase_order:{receipt.purchase_order_id}",
                    command_id,
                )
            except StockRefused as refused:
                # Refused for good (e.g. a SKU inventory-sync rejects): kept for an operator;
                # retrying the same command would be refused the same way.
                log.error(
                    "receipt refused by inventory-sync", command_id=command_id, error=str(refused)
                )
                await conn.execute(
                    "INSERT INTO stock_receipt_failures (command_id, purchase_order_id,"
                    " receipt_id, sku, quantity, status_code, message)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    command_id,
                    receipt.purchase_order_id,
                    receipt.receipt_id,
                    line.sku,
                    line.quantity,
                    refused.code.name,
                    refused.message,
                )

    async def clear(self, conn: asyncpg.Connection) -> None:
        """Nothing to drop: a replay from zero re-sends every receipt with its command id,
        which inventory-sync has already applied."""


async def run_receipts(
    store: EventStore,
    inventory: InventorySyncClient,
    stop: asyncio.Event,
    *,
    dsn: str | None,
    poll_interval: float = 1.0,
) -> None:
    """Follow the log until `stop`; while inventory-sync is unreachable, back off and retry
    the same batch (nothing is skipped, nothing advances)."""
    runner = ProjectionRunner(store, ReceiptsToStock(inventory), batch_size=20)
    backoff = 0.2
    async with Wakeup(dsn, notify_channel(store.schema, "events")) as wakeup:
        while not stop.is_set():
            try:
                async with store.pool.acquire() as conn:
                    while not stop.is_set():
                        if await runner.run_batch(conn):
                            backoff = 0.2
                            continue
                        await wakeup.wait(poll_interval)
            except (StockUnavailable, *CONNECTION_LOST) as error:
                log.warning(
                    "receipts waiting for inventory-sync", error=str(error), retry_in_s=backoff
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
