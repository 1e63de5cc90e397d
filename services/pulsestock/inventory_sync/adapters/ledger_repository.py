"""Loading SKU ledgers from the event store and committing a batch of decisions."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import asyncpg
from pulsestock.bus.codec import subject_for
from pulsestock.eventstore import EventStore, NewEvent, OutboxRoute, StreamAppend
from pulsestock.eventstore.store import CONNECTION_LOST
from pulsestock.inventory_sync.domain.ledger import SkuLedger
from pulsestock.inventory_sync.domain.sku import ledger_stream

SERVICE = "inventory-sync"


class LedgerRepository:
    def __init__(self, store: EventStore, partitions: int) -> None:
        self.store = store
        self.partitions = partitions
        self._conn: asyncpg.Connection | None = None

    async def load(self, sku: str) -> SkuLedger:
        ledger = SkuLedger(sku)
        for recorded in await self.store.read_stream(ledger_stream(sku)):
            ledger.apply(recorded.decode())
        return ledger

    async def commit(self, appends: Sequence[StreamAppend]) -> None:
        """Append a batch's events in one statement (one round trip, its own transaction), on
        a connection the single writer keeps."""
        if self._conn is None:
            self._conn = await self.store.pool.acquire()
        try:
            await self.store.append_many(appends, conn=self._conn)
        except CONNECTION_LOST:
            await self._drop_connection()
            raise

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await self.store.pool.release(conn)

    async def close(self) -> None:
        await self._drop_connection()

    async def skus_of_order(self, channel: int, channel_order_id: str) -> tuple[str, ...]:
        rows = await self.store.pool.fetch(
            "SELECT sku FROM order_index WHERE channel = $1 AND channel_order_id = $2 ORDER BY sku",
            channel,
            channel_order_id,
        )
        return tuple(r["sku"] for r in rows)


def outbox_route(partitions: int) -> OutboxRoute:
    """Which ledger events leave the service: channel quantities, oversells and how their
    backorders shrink (the rest of the ledger is private; consumers get the derived
    StockChanged)."""

    published = {
        "pulsestock.v1.ChannelQuantityChanged",
        "pulsestock.v1.Oversold",
        "pulsestock.v1.BackorderChanged",
    }

    def route(stream_id: str, event: NewEvent) -> str | None:
        if event.type not in published:
            return None
        sku = stream_id.split("-", 1)[1]
        return subject_for(SERVICE, event.type, sku, partitions)

    return route
