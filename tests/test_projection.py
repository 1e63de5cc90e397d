"""Projections: checkpoint and rows commit together, so a crash in between re-applies nothing
twice; a rebuilt projection equals the live one."""

from __future__ import annotations

import asyncpg
import pytest
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent, ProjectionRunner, RecordedEvent
from pulsestock.eventstore.projection import CheckpointMovedBackwards
from pulsestock.v1 import inventory_sync_events_pb2 as ev


class Crash(Exception):
    pass


class OnHandProjection:
    """Counts applications per event (to catch double application) and sums on-hand per SKU."""

    name = "on_hand"

    def __init__(self, crash_after: int | None = None, terminate: bool = False) -> None:
        self.crash_after = crash_after
        self.terminate = terminate
        self.applied_in_this_attempt = 0

    async def setup(self, pool: asyncpg.Pool) -> None:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS on_hand (sku text PRIMARY KEY, quantity bigint NOT NULL);"
            "CREATE TABLE IF NOT EXISTS applications"
            " (event_id uuid PRIMARY KEY, times int NOT NULL)"
        )

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        message = event.decode()
        assert isinstance(message, ev.StockReceived)
        await conn.execute(
            "INSERT INTO on_hand VALUES ($1, $2)"
            " ON CONFLICT (sku) DO UPDATE SET quantity = on_hand.quantity + excluded.quantity",
            message.sku,
            message.quantity,
        )
        await conn.execute(
            "INSERT INTO applications VALUES ($1, 1)"
            " ON CONFLICT (event_id) DO UPDATE SET times = applications.times + 1",
            event.event_id,
        )
        self.applied_in_this_attempt += 1
        if self.crash_after is not None and self.applied_in_this_attempt >= self.crash_after:
            if self.terminate:
                conn.terminate()  # as if the process died: the server sees the socket drop
            raise Crash

    async def clear(self, conn: asyncpg.Connection) -> None:
        await conn.execute("DELETE FROM on_hand; DELETE FROM applications")


async def fill(store: EventStore, streams: int = 5, per_stream: int = 20) -> None:
    for s in range(streams):
        events = [
            NewEvent.of(ev.StockReceived(sku=f"S{s}", warehouse_id="W", quantity=q))
            for q in range(1, per_stream + 1)
        ]
        await store.append(f"sku-S{s}", NO_STREAM, events)


@pytest.mark.parametrize("terminate", [False, True], ids=["exception", "connection-dropped"])
async def test_crash_between_apply_and_checkpoint_reapplies_nothing_twice(
    store: EventStore, terminate: bool
) -> None:
    await fill(store)
    crashing = OnHandProjection(terminate=terminate)
    await crashing.setup(store.pool)
    runner = ProjectionRunner(store, crashing, batch_size=50)
    assert await runner.run_batch() == 50  # first batch commits
    crashing.crash_after, crashing.applied_in_this_attempt = 30, 0
    with pytest.raises((Crash, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError)):
        await runner.run_batch()  # dies 30 events into the second batch
    assert await runner.position() == 50

    healthy = ProjectionRunner(store, OnHandProjection(), batch_size=50)
    assert await healthy.catch_up() == 50
    assert await store.pool.fetchval("SELECT max(times) FROM applications") == 1
    assert await store.pool.fetchval("SELECT count(*) FROM applications") == 100
    assert await store.pool.fetchval("SELECT sum(quantity) FROM on_hand") == 5 * sum(range(21))
    assert await healthy.position() == await store.head_position()


async def test_rebuilt_projection_equals_the_live_one(store: EventStore) -> None:
    projection = OnHandProjection()
    await projection.setup(store.pool)
    runner = ProjectionRunner(store, projection, batch_size=7)
    await fill(store, streams=3)
    await runner.catch_up()
    await fill_more(store)
    await runner.catch_up()
    live = await store.pool.fetch("SELECT * FROM on_hand ORDER BY sku")
    assert await runner.rebuild() == await store.pool.fetchval("SELECT count(*) FROM events")
    rebuilt = await store.pool.fetch("SELECT * FROM on_hand ORDER BY sku")
    assert [tuple(r) for r in rebuilt] == [tuple(r) for r in live]
    assert await store.pool.fetchval("SELECT max(times) FROM applications") == 1


async def fill_more(store: EventStore) -> None:
    await store.append(
        "sku-S0", 20, [NewEvent.of(ev.StockReceived(sku="S0", warehouse_id="W", quantity=1000))]
    )


async def test_checkpoint_only_moves_forward(store: EventStore) -> None:
    projection = OnHandProjection()
    await projection.setup(store.pool)
    runner = ProjectionRunner(store, projection)
    await fill(store, streams=1, per_stream=3)
    await runner.catch_up()
    async with store.pool.acquire() as conn, conn.transaction():
        with pytest.raises(CheckpointMovedBackwards):
            await runner._advance(conn, 1)
