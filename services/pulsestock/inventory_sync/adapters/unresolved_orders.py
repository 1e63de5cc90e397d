"""Channel orders the catalogue could not resolve: recorded with their latest message, so
nothing is dropped and nothing is guessed; listed for people to map the listing; resolved
again once it is mapped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class UnresolvedLine:
    sku: str  # the seller SKU the channel reported
    listing_id: str  # the channel's listing id


@dataclass(frozen=True)
class UnresolvedOrder:
    channel: int
    channel_order_id: str
    marketplace_id: str
    lines: list[UnresolvedLine]
    message_type: str
    message: bytes
    revision: int
    first_seen: datetime
    last_seen: datetime
    cancelled: bool
    resolved_at: datetime | None


class UnresolvedOrders:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(
        self,
        channel: int,
        channel_order_id: str,
        marketplace_id: str,
        lines: list[UnresolvedLine],
        message_type: str,
        message: bytes,
        revision: int,
        now: datetime,
    ) -> None:
        """Keep the order's newest message (a later revision of OrderChanged is the whole
        truth; an OrderPlaced never replaces an OrderChanged)."""
        await self.pool.execute(
            "INSERT INTO unresolved_orders AS u (channel, channel_order_id, marketplace_id,"
            " lines, message_type, message, revision, first_seen, last_seen)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
            " ON CONFLICT (channel, channel_order_id) DO UPDATE SET"
            " last_seen = excluded.last_seen, resolved_at = NULL,"
            " lines = CASE WHEN u.revision <= excluded.revision"
            "   THEN excluded.lines ELSE u.lines END,"
            " message_type = CASE WHEN u.revision <= excluded.revision"
            "   THEN excluded.message_type ELSE u.message_type END,"
            " message = CASE WHEN u.revision <= excluded.revision"
            "   THEN excluded.message ELSE u.message END,"
            " revision = greatest(u.revision, excluded.revision)",
            channel,
            channel_order_id,
            marketplace_id,
            [{"sku": line.sku, "listing_id": line.listing_id} for line in lines],
            message_type,
            message,
            revision,
            now,
        )

    async def cancel(self, channel: int, channel_order_id: str, now: datetime) -> bool:
        """The channel cancelled an order it could not resolve: nothing was held, note it.
        False when no such order is unresolved (one resolved since is cancelled in the
        ledger, once its reservation is there)."""
        status: str = await self.pool.execute(
            "UPDATE unresolved_orders SET cancelled = true, last_seen = $3"
            " WHERE channel = $1 AND channel_order_id = $2 AND resolved_at IS NULL",
            channel,
            channel_order_id,
            now,
        )
        return status != "UPDATE 0"

    async def claim(self, order: UnresolvedOrder, now: datetime) -> bool:
        """Mark it resolved before submitting it, if it is still the same open order."""
        status: str = await self.pool.execute(
            "UPDATE unresolved_orders SET resolved_at = $3 WHERE channel = $1"
            " AND channel_order_id = $2 AND resolved_at IS NULL AND NOT cancelled"
            " AND revision = $4 AND message = $5",
            order.channel,
            order.channel_order_id,
            now,
            order.revision,
            order.message,
        )
        return status != "UPDATE 0"

    async def release(self, order: UnresolvedOrder) -> None:
        """A claim whose submission failed: open again for the next pass."""
        await self.pool.execute(
            "UPDATE unresolved_orders SET resolved_at = NULL"
            " WHERE channel = $1 AND channel_order_id = $2",
            order.channel,
            order.channel_order_id,
        )

    async def open_orders(self, page: int) -> AsyncIterator[UnresolvedOrder]:
        """Unresolved orders not cancelled, oldest first, a page at a time."""
        after: tuple[datetime, int, str] | None = None
        while True:
            rows = await self.pool.fetch(
                f"SELECT {_COLUMNS} FROM unresolved_orders"
                " WHERE resolved_at IS NULL AND NOT cancelled"
                " AND ($1::timestamptz IS NULL"
                "   OR (first_seen, channel, channel_order_id) > ($1, $2, $3))"
                " ORDER BY first_seen, channel, channel_order_id LIMIT $4",
                after[0] if after else None,
                after[1] if after else 0,
                after[2] if after else "",
                page,
            )
            for row in rows:
                yield _order(row)
            if len(rows) < page:
                return
            last = rows[-1]
            after = (last["first_seen"], last["channel"], last["channel_order_id"])

    async def list(self, channel: int, limit: int, include_resolved: bool) -> list[UnresolvedOrder]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM unresolved_orders"
            " WHERE ($1 = 0 OR channel = $1) AND ($3 OR resolved_at IS NULL)"
            " ORDER BY last_seen DESC, channel, channel_order_id LIMIT $2",
            channel,
            limit,
            include_resolved,
        )
        return [_order(row) for row in rows]


_COLUMNS = (
    "channel, channel_order_id, marketplace_id, lines, message_type, message, revision,"
    " first_seen, last_seen, cancelled, resolved_at"
)


def _order(row: asyncpg.Record) -> UnresolvedOrder:
    return UnresolvedOrder(
        **{
            **dict(row),
            "message": bytes(row["message"]),
            "lines": [UnresolvedLine(**line) for line in row["lines"]],
        }
    )
