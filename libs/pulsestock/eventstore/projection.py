"""Projections: folds of the log whose checkpoint moves in the same transaction as their rows."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Protocol, runtime_checkable

import asyncpg
from pulsestock.eventstore.events import RecordedEvent
from pulsestock.eventstore.store import CONNECTION_LOST, EventStore, Wakeup, notify_channel


class Projection(Protocol):
    name: str

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        """Fold one event into the read model (inside the runner's transaction)."""

    async def clear(self, conn: asyncpg.Connection) -> None:
        """Delete every row of the read model (before a rebuild)."""


@runtime_checkable
class BatchProjection(Projection, Protocol):
    async def apply_batch(
        self, conn: asyncpg.Connection, events: list[RecordedEvent], *, replay: bool
    ) -> None:
        """Fold several events at once (set-based writes); same result as one by one.
        `replay` is true during a rebuild: change the rows, publish nothing again."""


class CheckpointMovedBackwards(RuntimeError):
    pass


class ProjectionRunner:
    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        dsn: str | None = None,
    ) -> None:
        self.store = store
        self.projection = projection
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._dsn = dsn

    async def _lock_checkpoint(self, conn: asyncpg.Connection) -> int:
        # The upsert locks the row: two runners of one projection take turns, never interleave.
        position = await conn.fetchval(
            "INSERT INTO projection_checkpoints (name) VALUES ($1)"
            " ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING position",
            self.projection.name,
        )
        return int(position)

    async def _advance(self, conn: asyncpg.Connection, position: int) -> None:
        status = await conn.execute(
            "UPDATE projection_checkpoints SET position = $2, updated_at = clock_timestamp()"
            " WHERE name = $1 AND position < $2",
            self.projection.name,
            position,
        )
        if status != "UPDATE 1":
            raise CheckpointMovedBackwards(
                f"{self.projection.name} would not advance to {position}"
            )

    async def _fold(
        self, conn: asyncpg.Connection, events: list[RecordedEvent], replay: bool = False
    ) -> None:
        if isinstance(self.projection, BatchProjection):
            await self.projection.apply_batch(conn, events, replay=replay)
            return
        for event in events:
            await self.projection.apply(conn, event)

    async def _apply_batch(self, conn: asyncpg.Connection, after: int) -> int:
        events = await self.store.read_all(after, self.batch_size, conn=conn)
        await self._fold(conn, events)
        if events:
            await self._advance(conn, events[-1].global_position)
        return len(events)

    async def run_batch(self, conn: asyncpg.Connection | None = None) -> int:
        """Apply the next batch and its checkpoint in one transaction; returns events applied."""
        if conn is None:
            async with self.store.pool.acquire() as acquired:
                return await self.run_batch(acquired)
        async with conn.transaction():
            return await self._apply_batch(conn, await self._lock_checkpoint(conn))

    async def catch_up(self) -> int:
        total = 0
        while applied := await self.run_batch():
            total += applied
        return total

    async def position(self) -> int:
        value = await self.store.pool.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = $1", self.projection.name
        )
        return int(value or 0)

    async def rebuild(self) -> int:
        """Drop the read model and fold the whole log again, atomically: readers see the old
        rows until the new ones commit."""
        total = 0
        async with self.store.pool.acquire() as conn, conn.transaction():
            await self._lock_checkpoint(conn)
            await self.projection.clear(conn)
            await conn.execute(
                "UPDATE projection_checkpoints SET position = 0 WHERE name = $1",
                self.projection.name,
            )
            position = 0
            pages = self.store.read_all_pages(0, self.batch_size, conn=conn)
            async with aclosing(pages):
                async for events in pages:
                    await self._fold(conn, events, replay=True)
                    position = events[-1].global_position
                    total += len(events)
            if position:
                await self._advance(conn, position)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log until `stop` is set: catch up, then wait for a notification."""
        channel = notify_channel(self.store.schema, "events")
        async with Wakeup(self._dsn, channel) as wakeup:
            while not stop.is_set():
                try:
                    await self._follow(stop, wakeup)
                except CONNECTION_LOST:  # the database went away: take a new connection
                    await wakeup.wait(self.poll_interval)

    async def _follow(self, stop: asyncio.Event, wakeup: Wakeup) -> None:
        async with self.store.pool.acquire() as conn:  # one connection while it lasts
            while not stop.is_set():
                if await self.run_batch(conn):
                    continue
                await wakeup.wait(self.poll_interval)
