"""The read path: read_all's decoding equals a plain asyncpg read of the same rows, and bulk
catch-up (read_all_pages) returns exactly the paged events, in order, while the log grows."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from datetime import UTC

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent, ProjectionRunner, RecordedEvent
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.test_projection import OnHandProjection


def received(quantity: int, sku: str = "A", metadata: dict[str, str] | None = None) -> NewEvent:
    return NewEvent.of(
        ev.StockReceived(sku=sku, warehouse_id="W1", quantity=quantity), metadata=metadata
    )


async def reference(conn: asyncpg.Connection, after: int = 0) -> list[RecordedEvent]:
    """The log read the plain way: asyncpg's own decoding and RecordedEvent's __init__."""
    rows = await conn.fetch(
        "SELECT global_position, stream_id, stream_version, event_id, type, data,"
        " metadata::text, recorded_at FROM events WHERE global_position > $1"
        " ORDER BY global_position",
        after,
    )
    return [
        RecordedEvent(
            global_position=r[0],
            stream_id=r[1],
            stream_version=r[2],
            event_id=r[3],
            type=r[4],
            data=r[5],
            metadata=json.loads(r[6]),
            recorded_at=r[7],
        )
        for r in rows
    ]


async def test_read_all_decodes_every_field_like_asyncpg(store: EventStore) -> None:
    metadata = {"correlation": "c-1", "quote": 'a "b" \\ é', "empty": ""}
    await store.append("sku-A", NO_STREAM, [received(1), received(2, metadata=metadata)])
    await store.append("sku-B", NO_STREAM, [received(3, sku="B")])
    async with store.pool.acquire() as conn:
        expected = await reference(conn)
    events = await store.read_all(0)
    assert events == expected
    assert [e.metadata for e in events] == [{}, metadata, {}]
    assert events[0].metadata is not events[2].metadata  # each event its own dict
    assert all(e.recorded_at.tzinfo is UTC for e in events)
    assert events[1].decode() == ev.StockReceived(sku="A", warehouse_id="W1", quantity=2)
    assert isinstance(events[0].event_id, uuid.UUID)
    assert isinstance(events[0].data, bytes)
    assert await store.read_stream("sku-A") == expected[:2]


@pytest.mark.parametrize("timezone", ["UTC", "Asia/Kathmandu", "America/St_Johns"])
@pytest.mark.parametrize("datestyle", ["ISO, MDY", "SQL, DMY", "German", "Postgres, MDY"])
async def test_recorded_at_does_not_depend_on_session_settings(
    store: EventStore, timezone: str, datestyle: str
) -> None:
    await store.append("sku-A", NO_STREAM, [received(1)])
    async with store.pool.acquire() as conn:
        (expected,) = await reference(conn)
        await conn.execute(f"SET TimeZone = '{timezone}'; SET DateStyle = '{datestyle}'")
        try:
            (event,) = await store.read_all(0, conn=conn)
        finally:
            await conn.execute("RESET TimeZone; RESET DateStyle")
    assert event == expected
    assert event.recorded_at.tzinfo is UTC


@pytest.mark.parametrize("enabled", [True, False])
async def test_decoding_leaves_the_collector_as_it_found_it(
    store: EventStore, enabled: bool
) -> None:
    await store.append("sku-A", NO_STREAM, [received(1), received(2)])
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert len(await store.read_all(0)) == 2
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


async def test_pages_equal_the_paged_reads_while_writers_append(store: EventStore) -> None:
    """Concurrent writers hold their transactions open, so positions commit late; every page
    read_all_pages yields must be the start of what read_all returns after the previous one."""
    stop = asyncio.Event()

    async def writer(index: int) -> None:
        version = NO_STREAM
        while not stop.is_set():
            async with store.pool.acquire() as conn, conn.transaction():
                version = await store.append(
                    f"sku-{index}", version, [received(1, sku=str(index))], conn=conn
                )
                await asyncio.sleep(0.001)  # keep the transaction open a while (not a sync)

    await store.append("sku-seed", NO_STREAM, [received(1) for _ in range(50)])
    writers = [asyncio.create_task(writer(i)) for i in range(4)]
    try:
        seen: list[RecordedEvent] = []
        async with store.pool.acquire() as conn:
            async for page in store.read_all_pages(0, 7, conn=conn):
                # A page that reached the head may be shorter than a read made after more
                # commits; it must still be exactly where that read starts (nothing skipped).
                later = await store.read_all(seen[-1].global_position if seen else 0, 7, conn=conn)
                assert page
                assert page == later[: len(page)]
                seen.extend(page)
                if len(seen) > 300:
                    break
    finally:
        stop.set()
        await asyncio.gather(*writers)
    positions = [e.global_position for e in seen]
    assert positions == sorted(set(positions))
    async with store.pool.acquire() as conn:
        everything = await reference(conn)
    assert seen == everything[: len(seen)]  # no gap: a late commit was never skipped


async def test_pages_leave_the_connection_free_between_pages(store: EventStore) -> None:
    await store.append("sku-A", NO_STREAM, [received(1) for _ in range(25)])
    async with store.pool.acquire() as conn, conn.transaction():
        pages = [page async for page in store.read_all_pages(0, 10, conn=conn)]
        assert [len(p) for p in pages] == [10, 10, 5]
        assert await conn.fetchval("SELECT 1") == 1
    async with store.pool.acquire() as conn:
        pages = store.read_all_pages(20, 2, conn=conn)
        first = await anext(pages)
        assert [e.global_position for e in first] == [21, 22]
        await pages.aclose()
        assert await conn.fetchval("SELECT count(*) FROM events") == 25


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(st.integers(1, 9), max_size=6)),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 9),
)
async def test_a_projection_rebuilt_through_pages_equals_the_live_one(
    store: EventStore, appends: list[tuple[str, list[int]]], batch_size: int
) -> None:
    async with store.pool.acquire() as conn:
        await conn.execute(
            "DROP TABLE IF EXISTS on_hand, applications;"
            "DELETE FROM projection_checkpoints WHERE name = 'on_hand'"
        )
    projection = OnHandProjection()
    await projection.setup(store.pool)
    runner = ProjectionRunner(store, projection, batch_size=batch_size)
    for sku, quantities in appends:
        if quantities:
            version = await store.stream_version(f"sku-{sku}")
            await store.append(f"sku-{sku}", version, [received(q, sku=sku) for q in quantities])
        await runner.catch_up()  # the live projection follows the log as it grows
    live = await store.pool.fetch("SELECT sku, quantity FROM on_hand ORDER BY sku")
    count = await store.pool.fetchval("SELECT count(*) FROM events")
    assert await runner.rebuild() == count
    assert await store.pool.fetch("SELECT sku, quantity FROM on_hand ORDER BY sku") == live
    assert await store.pool.fetchval("SELECT max(times) FROM applications") in (None, 1)
    assert await runner.position() == await store.head_position()
