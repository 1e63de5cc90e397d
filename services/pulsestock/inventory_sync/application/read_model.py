"""The read model of inventory-sync: stock levels per warehouse, active reservations and
channel quantities, folded from the ledger by a projection runner (rebuildable)."""

from __future__ import annotations

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.bus.codec import subject_for
from pulsestock.eventstore import EventStore, NewEvent, RecordedEvent
from pulsestock.inventory_sync.domain.sku import is_ledger_stream, ledger_stream, sku_of_stream
from pulsestock.v1 import inventory_sync_events_pb2 as ev


class InventoryReadModel:
    """Also publishes `StockChanged` for each warehouse level a batch changed, through the
    outbox in the batch's transaction (so exactly once), except while replaying a rebuild."""

    name = "inventory_read_model"

    def __init__(self, store: EventStore, partitions: int) -> None:
        self.store = store
        self.partitions = partitions

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        await self.apply_batch(conn, [event], replay=False)

    async def apply_batch(
        self, conn: asyncpg.Connection, events: list[RecordedEvent], *, replay: bool
    ) -> None:
        changed = await apply_batch(conn, events)
        if replay or not changed:
            return
        at = Timestamp()
        at.FromDatetime(events[-1].recorded_at)
        messages = []
        for row in changed:
            change = ev.StockChanged(
                sku=row["sku"],
                warehouse_id=row["warehouse_id"],
                on_hand=row["on_hand"],
                reserved=row["reserved"],
                available=max(0, row["on_hand"] - row["reserved"] - row["safety_hold"]),
                at=at,
            )
            subject = subject_for("inventory-sync", "StockChanged", change.sku, self.partitions)
            messages.append((subject, NewEvent.of(change), ledger_stream(change.sku)))
        await self.store.enqueue_messages(messages, conn=conn)

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "DELETE FROM stock_levels; DELETE FROM active_reservations;"
            " DELETE FROM channel_quantities; DELETE FROM order_index;"
            " DELETE FROM projected_versions; DELETE FROM backorders"
        )


class _BatchFold:
    """Net effect of a batch of ledger events on the read model's rows."""

    def __init__(self) -> None:
        self.levels: dict[tuple[str, str], list[int]] = {}  # [on_hand, reserved, version]
        self.added: dict[str, tuple[str, int, str, str, int, object]] = {}
        self.removed: dict[str, tuple[bool, int]] = {}  # reservation id -> (shipped, version)
        self.remaining: dict[str, int] = {}  # earlier batch's reservation, partly let go
        self.deleted: set[str] = set()  # earlier batch's reservation closed after that
        self.expiries: dict[str, object] = {}  # earlier batch's reservation, new expiry
        self.quantities: dict[tuple[str, int], tuple[int, int]] = {}
        self.orders: set[tuple[int, str, str]] = set()
        # (sku, channel, order) -> units still owed at the batch's end (0: no longer open)
        self.backorders: dict[tuple[str, int, str], int] = {}

    def move(self, sku: str, warehouse_id: str, on_hand: int, reserved: int, version: int) -> None:
        if not on_hand and not reserved:
            return  # e.g. the empty reservation that notes an order cancelled before it was taken
        level = self.levels.setdefault((sku, warehouse_id), [0, 0, 0])
        level[0] += on_hand
        level[1] += reserved
        level[2] = max(level[2], version)

    def fold(self, event: RecordedEvent) -> None:
        message = event.decode()
        version = event.stream_version
        if isinstance(message, ev.StockReceived):
            self.move(message.sku, message.warehouse_id, message.quantity, 0, version)
        elif isinstance(message, ev.StockAdjusted):
            self.move(message.sku, message.warehouse_id, message.delta, 0, version)
        elif isinstance(message, ev.StockTransferred):
            self.move(message.sku, message.from_warehouse_id, -message.quantity, 0, version)
            self.move(message.sku, message.to_warehouse_id, message.quantity, 0, version)
        elif isinstance(message, ev.StockReserved):
            if message.fills_backorder:
                self.backorders[(message.sku, message.channel, message.channel_order_id)] = 0
            self.move(message.sku, message.warehouse_id, 0, message.quantity, version)
            expires = message.expires_at.ToDatetime() if message.HasField("expires_at") else None
            self.orders.add((message.channel, message.channel_order_id, message.sku))
            self.added[message.reservation_id] = (
                message.sku,
                message.channel,
                message.channel_order_id,
                message.warehouse_id,
                message.quantity,
                expires,
            )
        elif isinstance(message, ev.ReservationReleased | ev.StockShipped):
            self._let_go(message, version)
        elif isinstance(message, ev.ReservationConfirmed):
            expires = message.expires_at.ToDatetime() if message.HasField("expires_at") else None
            if message.reservation_id in self.added:
                row = self.added[message.reservation_id]
                self.added[message.reservation_id] = (*row[:5], expires)
            else:
                self.expiries[message.reservation_id] = expires
        elif isinstance(message, ev.OrderReturned):
            if message.restocked:
                self.move(message.sku, message.warehouse_id, message.quantity, 0, version)
        elif isinstance(message, ev.ChannelQuantityChanged):
            self.quantities[(message.sku, message.channel)] = (message.quantity, version)
        elif isinstance(message, ev.Oversold):
            self.orders.add((message.channel, message.channel_order_id, message.sku))
            key = (message.sku, message.channel, message.channel_order_id)
            self.backorders[key] = max(0, message.quantity)
        elif isinstance(message, ev.BackorderChanged):
            key = (message.sku, message.channel, message.channel_order_id)
            self.backorders[key] = max(0, message.owed)

    def _let_go(self, message: ev.ReservationReleased | ev.StockShipped, version: int) -> None:
        """A release or shipment, whole (remaining 0) or partial; events from before partial
        ones carry no quantity on a release (all of it) and close the reservation."""
        shipped = isinstance(message, ev.StockShipped)
        rid = message.reservation_id
        added = self.added.get(rid)
        if message.remaining > 0:  # partial: the event says how many and where
            self.move(
                message.sku,
                message.warehouse_id,
                -message.quantity if shipped else 0,
                -message.quantity,
                version,
            )
            if added is not None:
                self.added[rid] = (*added[:4], message.remaining, added[5])
            else:
                self.remaining[rid] = message.remaining
            return
        if added is not None:
            del self.added[rid]
            quantity = added[4]
            self.move(message.sku, added[3], -quantity if shipped else 0, -quantity, version)
        elif rid in self.remaining:  # partly let go earlier in this batch: we know the rest
            quantity = self.remaining.pop(rid)
            self.deleted.add(rid)
            self.move(
                message.sku, message.warehouse_id, -quantity if shipped else 0, -quantity, version
            )
        else:  # made in an earlier batch: its row says where and how many
            self.removed[rid] = (shipped, version)


async def apply_batch(
    conn: asyncpg.Connection, events: list[RecordedEvent]
) -> list[asyncpg.Record]:
    """Fold a batch into the rows; returns the stock levels it changed, as they now are."""
    fold = _BatchFold()
    versions: dict[str, int] = {}  # SKU -> the highest ledger version in the batch
    for event in events:
        if not is_ledger_stream(event.stream_id):
            continue  # the catalogue's stream, for one: not a SKU's stock
        fold.fold(event)
        sku = sku_of_stream(event.stream_id)
        versions[sku] = max(versions.get(sku, 0), event.stream_version)
    if fold.removed:
        rows = await conn.fetch(
            "DELETE FROM active_reservations WHERE reservation_id = ANY($1::text[])"
            " RETURNING reservation_id, sku, warehouse_id, quantity",
            list(fold.removed),
        )
        for row in rows:
            shipped, version = fold.removed[row["reservation_id"]]
            quantity = row["quantity"]
            fold.move(
                row["sku"], row["warehouse_id"], -quantity if shipped else 0, -quantity, version
            )
    if fold.deleted:
        await conn.execute(
            "DELETE FROM active_reservations WHERE reservation_id = ANY($1::text[])",
            list(fold.deleted),
        )
    if fold.remaining:
        await conn.execute(
            "UPDATE active_reservations a SET quantity = d.remaining"
            " FROM unnest($1::text[], $2::bigint[]) AS d(reservation_id, remaining)"
            " WHERE a.reservation_id = d.reservation_id",
            list(fold.remaining),
            list(fold.remaining.values()),
        )
    if fold.expiries:
        await conn.execute(
            "UPDATE active_reservations a SET expires_at = d.expires_at"
            " FROM unnest($1::text[], $2::timestamptz[]) AS d(reservation_id, expires_at)"
            " WHERE a.reservation_id = d.reservation_id",
            list(fold.expiries),
            list(fold.expiries.values()),
        )
    if fold.added:
        columns = list(zip(*((rid, *row) for rid, row in fold.added.items()), strict=True))
        await conn.execute(
            "INSERT INTO active_reservations (reservation_id, sku, channel, channel_order_id,"
            " warehouse_id, quantity, expires_at) SELECT * FROM unnest($1::text[], $2::text[],"
            " $3::int[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[])",
            *map(list, columns),
        )
    changed: list[asyncpg.Record] = []
    levels = list(fold.levels.items())
    if levels:
        args = (
            [k[0] for k, _ in levels],
            [k[1] for k, _ in levels],
            [v[0] for _, v in levels],
            [v[1] for _, v in levels],
            [v[2] for _, v in levels],
        )
        # UPDATE then INSERT, not an upsert: PostgreSQL checks the CHECK constraint on the
        # row an upsert proposes to insert, before it finds the conflict.
        changed += await conn.fetch(
            "UPDATE stock_levels s SET on_hand = s.on_hand + d.on_hand,"
            " reserved = s.reserved + d.reserved, version = greatest(s.version, d.version)"
            " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])"
            " AS d(sku, warehouse_id, on_hand, reserved, version)"
            " WHERE s.sku = d.sku AND s.warehouse_id = d.warehouse_id"
            " RETURNING s.sku, s.warehouse_id, s.on_hand, s.reserved, s.safety_hold",
            *args,
        )
        changed += await conn.fetch(
            "INSERT INTO stock_levels (sku, warehouse_id, on_hand, reserved, version)"
            " SELECT d.* FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],"
            " $5::bigint[]) AS d(sku, warehouse_id, on_hand, reserved, version)"
            " WHERE NOT EXISTS (SELECT 1 FROM stock_levels s"
            "   WHERE s.sku = d.sku AND s.warehouse_id = d.warehouse_id)"
            " RETURNING sku, warehouse_id, on_hand, reserved, safety_hold",
            *args,
        )
    if fold.quantities:
        await conn.execute(
            "INSERT INTO channel_quantities AS c (sku, channel, quantity, version)"
            " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])"
            " ON CONFLICT (sku, channel) DO UPDATE SET quantity = excluded.quantity,"
            " version = excluded.version",
            [k[0] for k in fold.quantities],
            [k[1] for k in fold.quantities],
            [v[0] for v in fold.quantities.values()],
            [v[1] for v in fold.quantities.values()],
        )
    if fold.orders:
        channels, order_ids, skus = zip(*sorted(fold.orders), strict=True)
        await conn.execute(
            "INSERT INTO order_index (channel, channel_order_id, sku)"
            " SELECT * FROM unnest($1::int[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            list(channels),
            list(order_ids),
            list(skus),
        )
    if fold.backorders:
        keys = list(fold.backorders)
        owed = list(fold.backorders.values())
        await conn.execute(
            "DELETE FROM backorders b USING unnest($1::text[], $2::int[], $3::text[], $4::bigint[])"
            " AS d(sku, channel, channel_order_id, owed)"
            " WHERE d.owed = 0 AND (b.sku, b.channel, b.channel_order_id)"
            " = (d.sku, d.channel, d.channel_order_id)",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            owed,
        )
        await conn.execute(
            "INSERT INTO backorders AS b (sku, channel, channel_order_id, owed)"
            " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[])"
            " AS d(sku, channel, channel_order_id, owed) WHERE d.owed > 0"
            " ON CONFLICT (sku, channel, channel_order_id) DO UPDATE SET owed = excluded.owed",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            owed,
        )
    if versions:
        await conn.execute(
            "INSERT INTO projected_versions AS p (sku, version)"
            " SELECT * FROM unnest($1::text[], $2::bigint[])"
            " ON CONFLICT (sku) DO UPDATE SET version = greatest(p.version, excluded.version)",
            list(versions),
            list(versions.values()),
        )
    return changed
