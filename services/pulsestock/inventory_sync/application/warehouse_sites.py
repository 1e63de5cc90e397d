"""What inventory-sync knows of each warehouse, kept from fulfillment's master data.

fulfillment owns warehouses (SetWarehouse); each change goes out as `WarehouseSet`. This
projection keeps the latest of each in `warehouse_sites` and in memory, where the writer
reads it for every batch without I/O. The durable consumer hands each event to one replica,
so every replica also reloads the table on a short period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from pulsestock.bus import Envelope, PermanentFailure
from pulsestock.bus.consumer import apply_once
from pulsestock.inventory_sync.application.writer import LedgerWriter
from pulsestock.inventory_sync.domain.commands import RefreshChannelQuantities
from pulsestock.inventory_sync.domain.placement import NO_SITES, UNKNOWN_SITE, Site, Sites
from pulsestock.routing import channel_key
from pulsestock.telemetry import get_logger
from pulsestock.v1 import fulfillment_events_pb2 as fev

log = get_logger(__name__)


class WarehouseSites:
    def __init__(self, pool: asyncpg.Pool, consumer: str) -> None:
        self.pool = pool
        self.consumer = consumer
        self._sites: Sites = NO_SITES
        # The sites channel quantities were last worked out with: none at start, so the
        # first round also corrects quantities a restriction arrived for while we were down.
        self._quantities_by: Sites = NO_SITES

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

    async def refresh(
        self,
        stop: asyncio.Event,
        every_seconds: float,
        channels_changed: Callable[[set[str]], Awaitable[None]] | None = None,
    ) -> None:
        """Reload the table on a period: another replica may have applied a change. Hands
        the warehouses whose channels changed since the last round to `channels_changed`
        (what a channel may be shown depends on them)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_seconds)
            except TimeoutError:
                try:
                    await self.load()
                    if channels_changed is not None:
                        await self._channels_changed(channels_changed)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    log.warning("warehouse sites not refreshed", error=repr(error))

    async def _channels_changed(self, handler: Callable[[set[str]], Awaitable[None]]) -> None:
        sites, before = self._sites, self._quantities_by
        changed = {
            warehouse_id
            for warehouse_id in sites.keys() | before.keys()
            if sites.get(warehouse_id, UNKNOWN_SITE).channels
            != before.get(warehouse_id, UNKNOWN_SITE).channels
        }
        if changed:
            await handler(changed)
        self._quantities_by = sites


async def refresh_channel_quantities(
    pool: asyncpg.Pool, writer: LedgerWriter, owns: Callable[[str], bool], warehouses: set[str]
) -> None:
    """Work out again the channel quantities of the SKUs this replica owns that are stocked
    in these warehouses (their channels changed, and with them what each channel may be
    shown); each replica does its own."""
    rows = await pool.fetch(
        "SELECT DISTINCT sku FROM stock_levels WHERE warehouse_id = ANY($1::text[])",
        sorted(warehouses),
    )
    skus = [row["sku"] for row in rows if owns(row["sku"])]
    results = await asyncio.gather(
        *(writer.submit(RefreshChannelQuantities(sku)) for sku in skus), return_exceptions=True
    )
    failed = [
        sku for sku, result in zip(skus, results, strict=True) if isinstance(result, Exception)
    ]
    log.info(
        "channel quantities worked out again",
        warehouses=sorted(warehouses),
        skus=len(skus),
        failed=failed[:20],
    )


def _event_time(envelope: Envelope) -> datetime:
    try:
        moment = datetime.fromisoformat(envelope.time)
    except ValueError:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
