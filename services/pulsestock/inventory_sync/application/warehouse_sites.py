"""What inventory-sync knows of each warehouse, kept from fulfillment's master data.

fulfillment owns warehouses (SetWarehouse); each change goes out as `WarehouseSet`. This
projection keeps the latest of each in `warehouse_sites` and in memory, where the writer
reads it for every batch without I/O. The durable consumer hands each event to one replica,
so every replica also reloads the table on a short period.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
from pulsestock.bus import Envelope, PermanentFailure
from pulsestock.bus.consumer import apply_once
from pulsestock.inventory_sync.domain.placement import NO_SITES, Site, Sites
from pulsestock.routing import channel_key
from pulsestock.v1 import fulfillment_events_pb2 as fev


class WarehouseSites:
    def __init__(self, pool: asyncpg.Pool, consumer: str) -> None:
        self.pool = pool
        self.consumer = consumer
        self._sites: Sites = NO_SITES

    def current(self) -> Sites:
        return self._sites

    async def load(self) -> None:
        rows = await self.pool.fetch(
            "SELECT warehouse_id, region, kind, channels FROM warehouse_sites"
        )
        self._sites = {
            row["warehouse_id"]: Site(row["region"], row["kind"], tuple(row["channels"]))
            for row in rows
        }

    async def handle(self, envelope: Envelope) -> None:
        message = envelope.decode()
        if not isinstance(message, fev.WarehouseSet):
            raise PermanentFailure(f"unexpected {envelope.type}")
        profile = message.warehouse
        if not profile.warehouse_id:
            raise PermanentFailure("a WarehouseSet without a warehouse id")
        set_at = _event_time(envelope)
        async with self.pool.acquire() as conn, conn.transaction():
            if await apply_once(conn, self.consumer, envelope.event_id):
                # The latest setting wins, whatever order redeliveries come in.
                site = Site(
                    profile.region,
                    profile.kind or "own",
                    tuple(channel_key(c) for c in profile.channels),
                )
                newest = await conn.fetchval(
                    "INSERT INTO warehouse_sites (warehouse_id, region, kind, channels, set_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (warehouse_id) DO UPDATE SET"
                    " region = EXCLUDED.region, kind = EXCLUDED.kind,"
                    " channels = EXCLUDED.channels, set_at = EXCLUDED.set_at"
                    " WHERE warehouse_sites.set_at <= EXCLUDED.set_at RETURNING true",
                    profile.warehouse_id,
                    site.region,
                    site.kind,
                    list(site.channels),
                    set_at,
                )
                if newest:
                    # In memory before the commit, so whoever sees the row sees it placing.
                    self._sites = {**self._sites, profile.warehouse_id: site}

    async def refresh(self, stop: asyncio.Event, every_seconds: float) -> None:
        """Reload the table on a period: another replica may have applied a change."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_seconds)
            except TimeoutError:
                await self.load()


def _event_time(envelope: Envelope) -> datetime:
    try:
        moment = datetime.fromisoformat(envelope.time)
    except ValueError:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
