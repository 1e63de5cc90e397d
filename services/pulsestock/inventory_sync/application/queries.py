"""Read-side use cases of inventory-sync (answered from the read model and the log)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pulsestock.errors import PreconditionFailed, Unavailable
from pulsestock.eventstore import EventStore, RecordedEvent
from pulsestock.inventory_sync.domain.commands import HeldPart
from pulsestock.inventory_sync.domain.sku import ledger_stream


@dataclass(frozen=True)
class StockRow:
    warehouse_id: str
    on_hand: int
    reserved: int
    safety_hold: int
    version: int

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.reserved - self.safety_hold)


FIRST_POLL_S = 0.002
LONGEST_POLL_S = 0.025


async def projected_version(pool: asyncpg.Pool, sku: str) -> int:
    version = await pool.fetchval("SELECT version FROM projected_versions WHERE sku = $1", sku)
    return int(version or 0)


async def wait_for_version(
    pool: asyncpg.Pool, store: EventStore, sku: str, min_version: int, within: float
) -> int:
    """Read your writes: wait until the read model has folded the SKU's ledger up to
    `min_version` (a command's answer), polling with a growing pause, at most `within`
    seconds. Returns the projected version. A version the ledger itself has not reached is
    a precondition failure, not a wait; a read model that stays behind is Unavailable."""
    version = await projected_version(pool, sku)
    if version >= min_version:
        return version
    written = await store.stream_version(ledger_stream(sku))
    if written < min_version:
        raise PreconditionFailed(
            f"the ledger of SKU {sku} is at version {written}, below min_stream_version"
            f" {min_version}"
        )
    deadline = time.monotonic() + within
    pause = FIRST_POLL_S
    while version < min_version:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unavailable(
                f"the read model of SKU {sku} is at version {version}, not yet {min_version}; retry"
            )
        await asyncio.sleep(min(pause, remaining))  # polling the read model, not a sync
        pause = min(pause * 2, LONGEST_POLL_S)
        version = await projected_version(pool, sku)
    return version


async def stock_of(pool: asyncpg.Pool, sku: str) -> list[StockRow]:
    rows = await pool.fetch(
        "SELECT warehouse_id, on_hand, reserved, safety_hold, version FROM stock_levels"
        " WHERE sku = $1 ORDER BY warehouse_id",
        sku,
    )
    return [StockRow(**dict(r)) for r in rows]


async def channel_quantities_of(pool: asyncpg.Pool, sku: str) -> dict[int, int]:
    rows = await pool.fetch(
        "SELECT channel, quantity FROM channel_quantities WHERE sku = $1 ORDER BY channel", sku
    )
    return {r["channel"]: r["quantity"] for r in rows}


async def history_of(
    store: EventStore, sku: str, from_version: int, limit: int
) -> list[RecordedEvent]:
    return await store.read_stream(ledger_stream(sku), max(1, from_version), limit)


@dataclass(frozen=True)
class SyncState:
    channel: int
    listing: str  # a catalogue listing's key, or the SKU under the naming convention
    catalogued: bool
    skus: list[str]
    desired_quantity: int
    last_sent_quantity: int | None
    last_confirmed_quantity: int | None
    consecutive_failures: int
    last_error: str
    dead_lettered: bool
    last_confirmed_at: datetime | None
    last_reconciled_at: datetime | None


async def sync_states(pool: asyncpg.Pool, channel: int, sku: str) -> list[SyncState]:
    """The channel listings drawing on `sku` ('' : all), per channel (0: all)."""
    rows = await pool.fetch(
        "SELECT channel, listing, ids IS NOT NULL AS catalogued, skus, desired_quantity,"
        " last_sent_quantity, last_confirmed_quantity, consecutive_failures, last_error,"
        " dead_lettered, last_confirmed_at, last_reconciled_at"
        " FROM channel_sync_state WHERE ($1 = 0 OR channel = $1)"
        " AND ($2 = '' OR skus @> ARRAY[$2::text])"
        " ORDER BY channel, listing LIMIT 1000",
        channel,
        sku,
    )
    return [SyncState(**{**dict(r), "skus": list(r["skus"])}) for r in rows]


async def holds_of_order(pool: asyncpg.Pool, channel: int, channel_order_id: str) -> list[HeldPart]:
    rows = await pool.fetch(
        "SELECT sku, reservation_id, warehouse_id, quantity FROM active_reservations"
        " WHERE channel = $1 AND channel_order_id = $2 AND quantity > 0"
        " ORDER BY sku, length(reservation_id), reservation_id",
        channel,
        channel_order_id,
    )
    return [HeldPart(r["sku"], r["reservation_id"], r["warehouse_id"], r["quantity"]) for r in rows]


async def backordered(pool: asyncpg.Pool, sku: str) -> int:
    """Units the SKU's open backorders still owe."""
    owed = await pool.fetchval("SELECT coalesce(sum(owed), 0) FROM backorders WHERE sku = $1", sku)
    return int(owed)


@dataclass(frozen=True)
class ListingCounts:
    listings: int
    in_sync: int
    pending: int
    failing: int
    dead_lettered: int


async def listing_counts(pool: asyncpg.Pool) -> dict[int, ListingCounts]:
    """Per channel: its listings by sync state (in sync: confirmed at the desired quantity;
    pending: not yet, no failure; failing: retrying after failures; dead-lettered)."""
    rows = await pool.fetch(
        "SELECT channel, count(*) AS listings,"
        " count(*) FILTER (WHERE NOT dead_lettered"
        "   AND last_confirmed_quantity IS NOT DISTINCT FROM desired_quantity) AS in_sync,"
        " count(*) FILTER (WHERE NOT dead_lettered AND consecutive_failures = 0"
        "   AND last_confirmed_quantity IS DISTINCT FROM desired_quantity) AS pending,"
        " count(*) FILTER (WHERE NOT dead_lettered AND consecutive_failures > 0"
        "   AND last_confirmed_quantity IS DISTINCT FROM desired_quantity) AS failing,"
        " count(*) FILTER (WHERE dead_lettered) AS dead_lettered"
        " FROM channel_sync_state GROUP BY channel"
    )
    return {
        row["channel"]: ListingCounts(
            row["listings"], row["in_sync"], row["pending"], row["failing"], row["dead_lettered"]
        )
        for row in rows
    }


async def recent_errors(pool: asyncpg.Pool, channel: int, limit: int) -> list[SyncState]:
    """The channel's listings whose last attempt failed, the latest attempt first."""
    rows = await pool.fetch(
        "SELECT channel, listing, ids IS NOT NULL AS catalogued, skus, desired_quantity,"
        " last_sent_quantity, last_confirmed_quantity, consecutive_failures, last_error,"
        " dead_lettered, last_confirmed_at, last_reconciled_at"
        " FROM channel_sync_state WHERE channel = $1 AND last_error <> ''"
        " ORDER BY dead_lettered, next_attempt_at DESC, listing LIMIT $2",
        channel,
        limit,
    )
    return [SyncState(**{**dict(r), "skus": list(r["skus"])}) for r in rows]
