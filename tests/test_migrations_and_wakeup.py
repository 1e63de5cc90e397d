"""Migrations are applied once and never rewritten; readers wake on NOTIFY, not on polling."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from pulsestock.bus.codec import parse_header_block
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent, ProjectionRunner, RecordedEvent
from pulsestock.eventstore.migrations import Migration, apply_migrations, event_store_migrations
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name


async def test_migrations_apply_once_and_refuse_a_changed_history(infra: Infra) -> None:
    schema = unique_name("m")
    first = Migration("svc", 1, "create_things", "CREATE TABLE things (id int PRIMARY KEY)")
    second = Migration("svc", 2, "add_name", "ALTER TABLE things ADD COLUMN name text")
    conn = await asyncpg.connect(infra.database_url)
    try:
        assert await apply_migrations(conn, schema, [first]) == [first]
        assert await apply_migrations(conn, schema, [first, second]) == [second]
        assert await apply_migrations(conn, schema, [first, second]) == []
        edited = Migration("svc", 1, "create_things", "CREATE TABLE things (id bigint)")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await apply_migrations(conn, schema, [edited, second])
        broken = Migration("svc", 3, "broken", "ALTER TABLE nowhere ADD COLUMN x int")
        with pytest.raises(asyncpg.UndefinedTableError):
            await apply_migrations(conn, schema, [first, second, broken])
        versions = await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")
        assert sorted(r["version"] for r in versions) == [1, 2]  # the failed one left nothing
    finally:
        await conn.close()
        await drop_schema(infra.database_url, schema)


async def test_outbox_headers_move_from_json_to_header_blocks_intact(infra: Infra) -> None:
    schema = unique_name("mig_hdr")
    migrations = event_store_migrations()
    headers = {"Nats-Msg-Id": "e-1", "ce-type": "pulsestock.v1.X", "traceparent": "00-ab-cd-01"}
    conn = await asyncpg.connect(infra.database_url)
    try:
        await apply_migrations(conn, schema, [m for m in migrations if m.version < 3])
        await conn.execute(
            f"INSERT INTO {schema}.outbox (event_id, subject, type, data, headers)"
            " VALUES (gen_random_uuid(), 's', 't', '', $1::jsonb)",
            json.dumps(headers),
        )
        await apply_migrations(conn, schema, migrations)
        block = await conn.fetchval(f"SELECT headers FROM {schema}.outbox")
        assert parse_header_block(block) == headers
    finally:
        await conn.close()
        await drop_schema(infra.database_url, schema)


async def test_concurrent_migrators_apply_each_migration_once(infra: Infra) -> None:
    schema = unique_name("m")
    migration = Migration("svc", 1, "create", "CREATE TABLE once (id int)")

    async def migrate() -> list[Migration]:
        conn = await asyncpg.connect(infra.database_url)
        try:
            return await apply_migrations(conn, schema, [migration])
        finally:
            await conn.close()

    try:
        results = await asyncio.gather(*(migrate() for _ in range(5)))
        assert sum(len(r) for r in results) == 1
    finally:
        await drop_schema(infra.database_url, schema)


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        self.seen.append(event.global_position)

    async def clear(self, conn: asyncpg.Connection) -> None:
        self.seen.clear()


async def test_projection_wakes_on_notify_long_before_its_poll_interval(
    infra: Infra, store: EventStore
) -> None:
    """The runner polls once an hour: only a NOTIFY can make it apply an event (and stop)
    within the deadlines, however slow the machine."""
    recorder = Recorder()
    runner = ProjectionRunner(store, recorder, poll_interval=3600, dsn=infra.database_url)
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: _listening(store), what="runner listening")
        await eventually(lambda: _parked(running), what="runner caught up and waiting")
        await store.append("sku-N", NO_STREAM, [NewEvent.of(ev.StockReceived(sku="N"))])

        async def applied() -> bool:
            return len(recorder.seen) == 1

        await eventually(applied, within=30, what="the projection to apply the event")
    finally:
        stop.set()
        store_wakeup = asyncio.wait_for(running, 30)
        await store.append("sku-N", 1, [NewEvent.of(ev.StockReceived(sku="N"))])  # wake to stop
        await store_wakeup


async def _parked(task: asyncio.Task[None]) -> bool:
    """Whether the task is suspended in `Wakeup.wait` (caught up, waiting for a wake-up):
    an event appended before that would be found by the catch-up, NOTIFY or not."""
    awaited: object = task.get_coro()
    while awaited is not None:
        if getattr(awaited, "__qualname__", "") == "Wakeup.wait":
            return True
        awaited = getattr(awaited, "cr_await", None)
    return False


async def _listening(store: EventStore) -> bool:
    count = await store.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND query LIKE $1",
        f"%{store.schema}%",
    )
    return bool(count)
