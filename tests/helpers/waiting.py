"""Conditions to wait on (with `eventually`) instead of wall-clock pauses: a consumer has
settled everything up to a stream sequence; a PostgreSQL backend waits on a lock."""

from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext


async def consumer_settled(js: JetStreamContext, stream: str, durable: str, seq: int) -> bool:
    """`durable` has acked every message of `stream` up to `seq` and holds none unsettled (a
    nak'd or still-unacked message keeps its ack floor below it)."""
    info = await js.consumer_info(stream, durable)
    return (
        info.ack_floor is not None
        and (info.ack_floor.stream_seq or 0) >= seq
        and info.num_ack_pending == 0
        and info.num_pending == 0
    )


async def backends_waiting_on_lock(conn: asyncpg.Connection, holder_pid: int) -> list[str]:
    """The queries of backends that wait for a lock `holder_pid` holds (pg_blocking_pids)."""
    rows = await conn.fetch(
        "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND $1 = ANY(pg_blocking_pids(pid))",
        holder_pid,
    )
    return [row["query"] for row in rows]
