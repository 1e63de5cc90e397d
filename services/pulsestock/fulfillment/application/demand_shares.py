"""Where a SKU's demand comes from: recent orders by channel and buyer region, learnt from
ingest's OrderPlaced (`ingest.order_placed.>`), units decayed with a half-life of
`HALF_LIFE`. A day: a pulse moves the channel mix within hours (at 20x the baseline, its
first hours outweigh a day of baseline orders), while one day still spans a slow seller's
daily cycle. Pre-positioning transfers split the SKU's forecast between warehouses by these
weights (domain/transfers.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from pulsestock.bus import ConsumerSpec, Envelope, PermanentFailure, service_stream
from pulsestock.clock import Clock
from pulsestock.fulfillment.domain.transfers import DemandBucket
from pulsestock.routing import channel_key
from pulsestock.v1 import ingest_events_pb2
from pulsestock.v1.common_pb2 import Channel

HALF_LIFE = timedelta(hours=24)
# Beyond this many half-lives a weight is taken as gone (and float8 never underflows).
MAX_HALF_LIVES = 200.0
MAX_REGION = 64
ORDERS = ConsumerSpec(
    stream=service_stream("ingest").name,
    durable="fulfillment__order_shares",
    filter_subjects=["ingest.order_placed.>"],
    max_deliver=8,
)

# Both weights decayed to the later of the two times, then summed: commutative, so orders
# folded out of order give the same weight.
_FOLD = f"""
INSERT INTO demand_shares (sku, channel, buyer_region, weight, as_of)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (sku, channel, buyer_region) DO UPDATE SET
    weight = (CASE WHEN (extract(epoch FROM excluded.as_of - demand_shares.as_of) / $6)
                        > {MAX_HALF_LIVES} THEN 0
              ELSE demand_shares.weight * power(0.5, greatest(
                  extract(epoch FROM excluded.as_of - demand_shares.as_of) / $6, 0)) END)
           + (CASE WHEN (extract(epoch FROM demand_shares.as_of - excluded.as_of) / $6)
                        > {MAX_HALF_LIVES} THEN 0
              ELSE excluded.weight * power(0.5, greatest(
                  extract(epoch FROM demand_shares.as_of - excluded.as_of) / $6, 0)) END),
    as_of = greatest(demand_shares.as_of, excluded.as_of)
"""


class DemandShares:
    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self.pool, self.clock = pool, clock

    async def record(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        """An OrderPlaced: each line's units into its SKU's (channel, buyer region) weight
        (run once per event: the caller's `idempotent` wrapper)."""
        order = envelope.decode()
        if not isinstance(order, ingest_events_pb2.OrderPlaced):
            raise PermanentFailure(f"unexpected {envelope.type}")
        if order.channel == Channel.CHANNEL_UNSPECIFIED or order.channel not in Channel.values():
            raise PermanentFailure(f"order {order.channel_order_id}: unknown channel")
        placed_at = (
            order.placed_at.ToDatetime(tzinfo=UTC) if order.HasField("placed_at") else self.clock()
        )
        region = order.buyer_region[:MAX_REGION]
        units: dict[str, int] = {}
        for line in order.lines:
            if line.quantity > 0 and line.sku:  # a listing-only line names no stock item
                units[line.sku] = units.get(line.sku, 0) + int(line.quantity)
        for sku, quantity in sorted(units.items()):
            await conn.execute(
                _FOLD,
                sku,
                int(order.channel),
                region,
                float(quantity),
                placed_at,
                HALF_LIFE.total_seconds(),
            )

    async def buckets(self, sku: str) -> list[DemandBucket]:
        """The SKU's weights, each decayed to the latest order seen of it."""
        rows = await self.pool.fetch(
            "SELECT channel, buyer_region, weight, as_of FROM demand_shares WHERE sku = $1"
            " ORDER BY channel, buyer_region",
            sku,
        )
        if not rows:
            return []
        latest: datetime = max(row["as_of"] for row in rows)
        buckets = []
        for row in rows:
            half_lives = (latest - row["as_of"]) / HALF_LIFE
            weight = 0.0 if half_lives > MAX_HALF_LIVES else row["weight"] * 0.5**half_lives
            buckets.append(DemandBucket(channel_key(row["channel"]), row["buyer_region"], weight))
        return buckets
