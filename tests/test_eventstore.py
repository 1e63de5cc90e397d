"""The event log against a real PostgreSQL: optimistic concurrency, atomic multi-stream
appends, append-only rows, and a tailing reader that never skips a late commit."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pulsestock.bus.codec import parse_header_block
from pulsestock.eventstore import (
    NO_STREAM,
    EventStore,
    NewEvent,
    StreamAppend,
    WrongExpectedVersion,
    decode_event,
)
from pulsestock.v1 import inventory_sync_events_pb2 as ev


def received(quantity: int, sku: str = "SKU-1") -> NewEvent:
    return NewEvent.of(ev.StockReceived(sku=sku, warehouse_id="W1", quantity=quantity))


async def test_append_then_read_stream_round_trips_protobuf(store: EventStore) -> None:
    version = await store.append("sku-A", NO_STREAM, [received(5), received(7)])
    assert version == 2
    events = await store.read_stream("sku-A")
    assert [e.stream_version for e in events] == [1, 2]
    assert events[0].type == "pulsestock.v1.StockReceived"
    message = decode_event(events[1].type, events[1].data)
    assert isinstance(message, ev.StockReceived)
    assert message.quantity == 7


async def test_append_with_stale_expected_version_raises_and_writes_nothing(
    store: EventStore,
) -> None:
    await store.append("sku-A", NO_STREAM, [received(1)])
    with pytest.raises(WrongExpectedVersion) as caught:
        await store.append("sku-A", NO_STREAM, [received(2)])
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert await store.stream_version("sku-A") == 1


async def test_two_writers_racing_on_one_version_exactly_one_wins(store: EventStore) -> None:
    await store.append("sku-A", NO_STREAM, [received(1)])
    results = await asyncio.gather(
        *(store.append("sku-A", 1, [received(i)]) for i in range(10)), return_exceptions=True
    )
    assert sum(1 for r in results if r == 2) == 1
    assert sum(1 for r in results if isinstance(r, WrongExpectedVersion)) == 9
    assert await store.stream_version("sku-A") == 2


async def test_multi_stream_append_is_all_or_nothing(store: EventStore) -> None:
    await store.append("sku-B", NO_STREAM, [received(1)])
    with pytest.raises(WrongExpectedVersion):
        await store.append_many(
            [
                StreamAppend("sku-A", NO_STREAM, [received(1)]),
                StreamAppend("sku-B", NO_STREAM, [received(1)]),  # stale: B is at 1
            ]
        )
    assert await store.stream_version("sku-A") == 0
    versions = await store.append_many(
        [StreamAppend("sku-A", NO_STREAM, [received(1)]), StreamAppend("sku-B", 1, [received(2)])]
    )
    assert versions == [1, 2]


async def test_reusing_an_event_id_is_refused(store: EventStore) -> None:
    event = received(1)
    await store.append("sku-A", NO_STREAM, [event])
    with pytest.raises(ValueError, match="event id"):
        await store.append("sku-B", NO_STREAM, [event])
    assert await store.stream_version("sku-B") == 0


async def test_the_log_refuses_updates_deletes_and_truncates(store: EventStore) -> None:
    await store.append("sku-A", NO_STREAM, [received(1)])
    for statement in ("UPDATE events SET type = 'x'", "DELETE FROM events", "TRUNCATE events"):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await store.pool.execute(statement)
    assert len(await store.read_stream("sku-A")) == 1


async def test_outbox_rows_commit_with_the_events_and_only_with_them(
    pool: asyncpg.Pool, schema: str
) -> None:
    store = EventStore(pool, schema, outbox_route=lambda stream, _e: f"test.{stream}")
    await store.append("sku-A", NO_STREAM, [received(1), received(2)])
    with pytest.raises(WrongExpectedVersion):
        await store.append("sku-A", NO_STREAM, [received(3)])
    rows = await pool.fetch("SELECT event_id, subject, headers FROM outbox ORDER BY id")
    events = await store.read_stream("sku-A")
    assert [r["event_id"] for r in rows] == [e.event_id for e in events]
    assert rows[0]["subject"] == "test.sku-A"
    headers = parse_header_block(rows[0]["headers"])
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == str(events[0].event_id)
    assert headers["ce-type"] == "pulsestock.v1.StockReceived"
    assert headers["ce-specversion"] == "1.0"


async def test_tailing_reader_sees_every_event_once_in_commit_order_under_concurrent_writers(
    store: EventStore,
) -> None:
    """Writers hold their transactions open for random times after appending, so commits
    happen out of the order positions would be drawn in without serialised appends."""
    writers, appends_each = 8, 25
    written: list[uuid.UUID] = []
    rng = random.Random(7)

    async def writer(index: int) -> None:
        stream = f"sku-w{index}"
        version = NO_STREAM
        for _ in range(appends_each):
            batch = [received(1, sku=f"w{index}") for _ in range(rng.randint(1, 3))]
            async with store.pool.acquire() as conn, conn.transaction():
                version = await store.append(stream, version, batch, conn=conn)
                await asyncio.sleep(rng.random() / 500)  # keep the transaction open a while
            written.extend(e.event_id for e in batch)

    seen: list[int] = []
    seen_ids: list[uuid.UUID] = []
    last_version: dict[str, int] = {}
    done = asyncio.Event()

    async def reader() -> None:
        position = 0
        while True:
            events = await store.read_all(position, limit=7)
            for event in events:
                assert event.global_position > position, "positions must only grow"
                assert event.stream_version == last_version.get(event.stream_id, 0) + 1
                last_version[event.stream_id] = event.stream_version
                position = event.global_position
                seen.append(position)
                seen_ids.append(event.event_id)
            if not events:
                if done.is_set() and position == await store.head_position():
                    return
                await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(i) for i in range(writers)))
    done.set()
    await asyncio.wait_for(reading, 30)
    assert len(seen_ids) == len(set(seen_ids)) == len(written)
    assert set(seen_ids) == set(written)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["sku-a", "sku-b", "sku-c"]),
            st.integers(-1, 1),
            st.lists(st.integers(1, 100), min_size=1, max_size=3),
        ),
        max_size=25,
    )
)
async def test_streams_match_a_model_under_any_sequence_of_appends(
    store: EventStore, operations: list[tuple[str, int, list[int]]]
) -> None:
    """Property: an append succeeds iff its expected version is the stream's, and then the
    stream holds exactly what the model holds."""
    prefix = uuid.uuid4().hex[:6]
    model: dict[str, list[int]] = {}
    for stream, skew, quantities in operations:
        stream_id = f"{stream}-{prefix}"
        current = len(model.get(stream_id, []))
        expected = max(0, current + skew)
        try:
            await store.append(stream_id, expected, [received(q) for q in quantities])
        except WrongExpectedVersion:
            assert expected != current
        else:
            assert expected == current
            model.setdefault(stream_id, []).extend(quantities)
    for stream_id, held in model.items():
        stored = [decode_event(e.type, e.data) for e in await store.read_stream(stream_id)]
        assert [m.quantity for m in stored] == held  # type: ignore[attr-defined]
