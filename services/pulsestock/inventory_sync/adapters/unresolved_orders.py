"""Channel orders the catalogue could not resolve: recorded with their latest message, so
nothing is dropped and nothing is guessed; listed for people to map the listing; resolved
again once it is mapped."""

from __future__ import annotations

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
        False when no such unresolved order exists."""
        status: str = await self.pool.execute(
            "UPDATE unresolved_orders SET cancelled = true, last_seen = $3"
            " WHERE channel = $1 AND channel_order_id = $2",
            channel,
            channel_order_id,
            now,
        )
        return status != "UPDATE 0"

    async def resolved(self, channel: int, channel_order_id: str, now: datetime) -> None:
        await self.pool.execute(
            "UPDATE unresolved_orders SET resolved_at = $3"
            " WHERE channel = $1 AND channel_order_id = $2 AND resolved_at IS NULL",
            channel,
            channel_order_id,
            now,
        )

    async def open_orders(self, limit: int) -> list[tuple[str, bytes]]:
        """(message type, message) of unresolved orders not cancelled, oldest first."""
        rows = await self.pool.fetch(
            "SELECT message_type, message FROM unresolved_orders"
            " WHERE resolved_at IS NULL AND NOT cancelled ORDER BY first_seen LIMIT $1",
            limit,
        )
        return [(row["message_type"], bytes(row["message"])) for row in rows]

    async def list(self, channel: int, limit: int, include_resolved: bool) -> list[UnresolvedOrder]:
        rows = await self.pool.fetch(
            "SELECT channel, channel_order_id, marketplace_id, lines, message_type, message,"
            " first_seen, last_seen, cancelled, resolved_at FROM unresolved_orders"
            " WHERE ($1 = 0 OR channel = $1) AND ($3 OR resolved_at IS NULL)"
            " ORDER BY last_seen DESC, channel, channel_order_id LIMIT $2",
            channel,
            limit,
            include_resolved,
        )
        return [
            UnresolvedOrder(
                **{
                    **dict(row),
                    "lines": [UnresolvedLine(**line) for line in row["lines"]],
                }
            )
            for row in rows
        ]
