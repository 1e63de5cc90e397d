"""Loading SKU ledgers from the event store and committing a batch of decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pulsestock.bus.codec import subject_for
from pulsestock.eventstore import EventStore, NewEvent, OutboxRoute, StreamAppend
from pulsestock.inventory_sync.domain.ledger import SkuLedger
from pulsestock.inventory_sync.domain.sku import ledger_stream
from pulsestock.v1 import inventory_sync_events_pb2 as ev

SERVICE = "inventory-sync"


@dataclass(frozen=True)
class OrderIndexRow:
    channel: int
    channel_order_id: str
    sku: str


class LedgerRepository:
    def __init__(self, store: EventStore, partitions: int) -> None:
        self.store = store
        self.partitions = partitions

    async def load(self, sku: str) -> SkuLedger:
        ledger = SkuLedger(sku)
        for recorded in await self.store.read_stream(ledger_stream(sku)):
            ledger.apply(recorded.decode())
        return ledger

    async def commit(
        self,
        appends: Sequence[StreamAppend],
        stock_changes: Sequence[ev.StockChanged],
        orders: Sequence[OrderIndexRow],
    ) -> None:
        """The batch's events, its published stock levels and its order index rows, in one
        transaction: all of them or none."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            await self.store.append_many(appends, conn=conn)
            if stock_changes:
                await self.store.enqueue_messages(
                    [
                        (
                            subject_for(SERVICE, "StockChanged", change.sku, self.partitions),
                            NewEvent.of(change),
                            ledger_stream(change.sku),
                        )
                        for change in stock_changes
                    ],
                    conn=conn,
                )
            if orders:
                await conn.executemany(
                    "INSERT INTO order_index (channel, channel_order_id, sku) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING",
                    [(o.channel, o.channel_order_id, o.sku) for o in orders],
                )

    async def skus_of_order(self, channel: int, channel_order_id: str) -> tuple[str, ...]:
        rows = await self.store.pool.fetch(
            "SELECT sku FROM order_index WHERE channel = $1 AND channel_order_id = $2 ORDER BY sku",
            channel,
            channel_order_id,
        )
        return tuple(r["sku"] for r in rows)


def outbox_route(partitions: int) -> OutboxRoute:
    """Which ledger events leave the service: channel quantities and oversells (the rest of
    the ledger is private; consumers get the derived StockChanged)."""

    published = {
        "pulsestock.v1.ChannelQuantityChanged",
        "pulsestock.v1.Oversold",
    }

    def route(stream_id: str, event: NewEvent) -> str | None:
        if event.type not in published:
            return None
        sku = stream_id.split("-", 1)[1]
        return subject_for(SERVICE, event.type, sku, partitions)

    return route
