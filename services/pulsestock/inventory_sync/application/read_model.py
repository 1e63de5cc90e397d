"""The read model of inventory-sync: stock levels per warehouse, active reservations and
channel quantities, folded from the ledger by a projection runner (rebuildable)."""

from __future__ import annotations

import asyncpg
from pulsestock.eventstore import RecordedEvent
from pulsestock.v1 import inventory_sync_events_pb2 as ev


async def _move(
    conn: asyncpg.Connection, sku: str, warehouse_id: str, on_hand: int, reserved: int, version: int
) -> None:
    """Add to a warehouse's levels. (Not an upsert: PostgreSQL checks the CHECK constraint
    on the row an upsert proposes to insert, before it finds the conflict.)"""
    status = await conn.execute(
        "UPDATE stock_levels SET on_hand = on_hand + $3, reserved = reserved + $4, version = $5"
        " WHERE sku = $1 AND warehouse_id = $2",
        sku,
        warehouse_id,
        on_hand,
        reserved,
        version,
    )
    if status == "UPDATE 0":
        await conn.execute(
            "INSERT INTO stock_levels (sku, warehouse_id, on_hand, reserved, version)"
            " VALUES ($1, $2, $3, $4, $5)",
            sku,
            warehouse_id,
            on_hand,
            reserved,
            version,
        )


class InventoryReadModel:
    name = "inventory_read_model"

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        message = event.decode()
        version = event.stream_version
        if isinstance(message, ev.StockReceived):
            await _move(conn, message.sku, message.warehouse_id, message.quantity, 0, version)
        elif isinstance(message, ev.StockAdjusted):
            await _move(conn, message.sku, message.warehouse_id, message.delta, 0, version)
        elif isinstance(message, ev.StockTransferred):
            await _move(conn, message.sku, message.from_warehouse_id, -message.quantity, 0, version)
            await _move(conn, message.sku, message.to_warehouse_id, message.quantity, 0, version)
        elif isinstance(message, ev.StockReserved):
            await _move(conn, message.sku, message.warehouse_id, 0, message.quantity, version)
            await conn.execute(
                "INSERT INTO active_reservations (reservation_id, sku, channel, channel_order_id,"
                " warehouse_id, quantity, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                message.reservation_id,
                message.sku,
                message.channel,
                message.channel_order_id,
                message.warehouse_id,
                message.quantity,
                message.expires_at.ToDatetime() if message.HasField("expires_at") else None,
            )
        elif isinstance(message, ev.ReservationReleased | ev.StockShipped):
            row = await conn.fetchrow(
                "DELETE FROM active_reservations WHERE reservation_id = $1"
                " RETURNING warehouse_id, quantity",
                message.reservation_id,
            )
            shipped = row["quantity"] if isinstance(message, ev.StockShipped) else 0
            await _move(conn, message.sku, row["warehouse_id"], -shipped, -row["quantity"], version)
        elif isinstance(message, ev.ChannelQuantityChanged):
            await conn.execute(
                "INSERT INTO channel_quantities AS c (sku, channel, quantity, version)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (sku, channel) DO UPDATE SET"
                " quantity = excluded.quantity, version = excluded.version",
                message.sku,
                message.channel,
                message.quantity,
                version,
            )

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "DELETE FROM stock_levels; DELETE FROM active_reservations;"
            " DELETE FROM channel_quantities"
        )
