"""Channel order notifications into one order state: join, remember, publish the change.

A notification is joined into the order's facts under a row lock, in the transaction that
also records its delivery id, so a redelivery and a concurrent delivery of the same order
cannot lose or double a change. When the join moves what the ledger acts on, one
`OrderChanged` carrying the whole new state goes out through the outbox (its id derives from
the order and revision, so a retried commit publishes it once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pulsestock.bus.codec import subject_for
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.ingest.application.ingestion import SERVICE, event_id, order_partition_key
from pulsestock.ingest.domain.orders import OrderFacts, facts_from_json, facts_to_json
from pulsestock.v1 import ingest_events_pb2 as ev


@dataclass(frozen=True)
class Delivery:
    source: str  # "tiktok_shop", "shopify", "amazon"
    delivery_id: str


def order_changed(channel: int, order_id: str, facts: OrderFacts, revision: int) -> ev.OrderChanged:
    message = ev.OrderChanged(
        channel=channel,  # type: ignore[arg-type]
        channel_order_id=order_id,
        revision=revision,
        lines=[
            ev.OrderLineState(
                sku=facts.sku_of(key),
                ordered=line.ordered,
                cancelled=line.cancelled,
                shipped=line.shipped,
                returned=line.returned,
                listing_id=facts.listing_ids.get(key, ""),
            )
            for key, line in facts.lines.items()
        ],
        payment=int(facts.payment),  # type: ignore[arg-type]  # same numbering as Payment
        cancel_requested=facts.cancel_requested,
        channel_status=facts.status.value if facts.status else "",
        marketplace_id=facts.marketplace_id,
    )
    if facts.updated_at is not None:
        message.updated_at.FromDatetime(facts.updated_at)
    if facts.placed_at is not None:
        message.placed_at.FromDatetime(facts.placed_at)
    return message


def _what_the_ledger_sees(channel: int, order_id: str, facts: OrderFacts) -> bytes:
    return order_changed(channel, order_id, facts, 0).SerializeToString(deterministic=True)


class ChannelOrders:
    def __init__(self, store: EventStore, partitions: int) -> None:
        self.store = store
        self.partitions = partitions

    async def ignore(self, delivery: Delivery, reason: str) -> str:
        """A notification we do not act on is still answered 2xx and remembered."""
        await self.store.pool.execute(
            "INSERT INTO webhook_deliveries (source, delivery_id, outcome) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            delivery.source,
            delivery.delivery_id,
            f"ignored: {reason}",
        )
        return "ignored"

    async def observe(
        self, channel: int, order_id: str, seen: OrderFacts, delivery: Delivery
    ) -> str:
        """'duplicate' (delivery seen before), 'changed' (an OrderChanged went out),
        'unchanged' (nothing new for the ledger), or 'waiting for lines'."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "INSERT INTO webhook_deliveries (source, delivery_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                delivery.source,
                delivery.delivery_id,
            ):
                return "duplicate"
            await conn.execute(
                "INSERT INTO channel_orders (channel, channel_order_id, facts) VALUES"
                " ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING",
                channel,
                order_id,
                json.dumps(facts_to_json(OrderFacts())),
            )
            row = await conn.fetchrow(
                "SELECT facts, revision FROM channel_orders"
                " WHERE channel = $1 AND channel_order_id = $2 FOR UPDATE",
                channel,
                order_id,
            )
            assert row is not None
            before = facts_from_json(json.loads(row["facts"]))
            after = before.join(seen)
            if not after.actionable:
                outcome = "waiting for lines"
            elif _what_the_ledger_sees(channel, order_id, before) != _what_the_ledger_sees(
                channel, order_id, after
            ):
                outcome = "changed"
            else:
                outcome = "unchanged"
            await conn.execute(
                "UPDATE webhook_deliveries SET outcome = $3 WHERE source = $1 AND delivery_id = $2",
                delivery.source,
                delivery.delivery_id,
                outcome,
            )
            revision = row["revision"] + (1 if outcome == "changed" else 0)
            await conn.execute(
                "UPDATE channel_orders SET facts = $3::jsonb, revision = $4,"
                " updated_at = clock_timestamp() WHERE channel = $1 AND channel_order_id = $2",
                channel,
                order_id,
                json.dumps(facts_to_json(after)),
                revision,
            )
            if outcome == "changed":
                message = order_changed(channel, order_id, after, revision)
                event = NewEvent.of(
                    message,
                    event_id=event_id("order_changed", str(channel), order_id, str(revision)),
                )
                # Keyed as OrderPlaced is (by the order's first SKU, else its first listing
                # id): the partition that owns that SKU's ledger sees every change in order.
                key = order_partition_key((line.sku, line.listing_id) for line in message.lines)
                await self.store.enqueue_messages(
                    [(subject_for(SERVICE, event.type, key, self.partitions), event, order_id)],
                    conn=conn,
                )
        return outcome
