"""Event store throughput against plain PostgreSQL doing the same writes and reads."""

from __future__ import annotations

import asyncio
import io

import asyncpg
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent, StreamAppend
from pulsestock.eventstore.store import connect_pool
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.bench.report import emit, rate
from tests.helpers.infra import Infra, create_event_store_schema, drop_schema

BATCH = 100
BATCHES = 200
WRITERS = 16
STREAMS_PER_APPEND = 10
EVENTS_PER_STREAM = 5
APPENDS_PER_WRITER = 20

RAW_TABLE = """CREATE TABLE raw_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text NOT NULL, stream_version bigint NOT NULL, event_id uuid NOT NULL UNIQUE,
    type text NOT NULL, data bytea NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, stream_version))"""


def events(count: int) -> list[NewEvent]:
    return [
        NewEvent.of(ev.StockReserved(sku="HOT-1", warehouse_id="W1", quantity=1, channel=1))
        for _ in range(count)
    ]


async def raw_insert(
    pool: asyncpg.Pool, stream_id: str, first_version: int, batch: list[NewEvent]
) -> None:
    """The baseline: the same rows into an identical table, no version check, no lock."""
    await pool.execute(
        "INSERT INTO raw_events (stream_id, stream_version, event_id, type, data, metadata)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::bytea[],"
        " $6::jsonb[])",
        [stream_id] * len(batch),
        list(range(first_version, first_version + len(batch))),
        [e.event_id for e in batch],
        [e.type for e in batch],
        [e.data for e in batch],
        [e.metadata for e in batch],
    )


async def run(infra: Infra) -> None:
    schema = await create_event_store_schema(infra.database_url, "bench")
    pool = await connect_pool(infra.database_url, schema, max_size=WRITERS + 2)
    try:
        await pool.execute(RAW_TABLE)
        store = EventStore(pool, schema)
        await bench_append_batched(store, pool)
        await bench_append_many_streams(store, pool)
        await bench_read_all_vs_copy(store, pool)
    finally:
        await pool.close()
        await drop_schema(infra.database_url, schema)


async def bench_append_batched(store: EventStore, pool: asyncpg.Pool) -> None:
    batches = [events(BATCH) for _ in range(BATCHES)]

    async def ours() -> None:
        version = NO_STREAM
        for batch in batches:
            version = await store.append("sku-HOT-1", version, batch)

    async def baseline() -> None:
        for index, batch in enumerate(batches):
            await raw_insert(
                pool, "sku-HOT-1", index * BATCH + 1, [NewEvent(e.type, e.data) for e in batch]
            )

    total = BATCH * BATCHES
    ours_rate = await rate(total, ours)
    baseline_rate = await rate(total, baseline)
    emit(
        "eventstore.append_batched",
        ours_rate,
        "events/s",
        baseline=baseline_rate,
        baseline_is="plain INSERT ... unnest of the same batches into an identical table",
        batch_size=BATCH,
        events=total,
    )


async def bench_append_many_streams(store: EventStore, pool: asyncpg.Pool) -> None:
    async def writer(index: int, raw: bool) -> None:
        for round_ in range(APPENDS_PER_WRITER):
            streams = [f"sku-w{index}-{round_}-{s}" for s in range(STREAMS_PER_APPEND)]
            if raw:
                for stream in streams:
                    await raw_insert(pool, f"raw-{stream}", 1, events(EVENTS_PER_STREAM))
            else:
                await store.append_many(
                    [
                        StreamAppend(stream, NO_STREAM, events(EVENTS_PER_STREAM))
                        for stream in streams
                    ]
                )

    async def ours() -> None:
        await asyncio.gather(*(writer(i, raw=False) for i in range(WRITERS)))

    async def baseline() -> None:
        await asyncio.gather(*(writer(i, raw=True) for i in range(WRITERS)))

    total = WRITERS * APPENDS_PER_WRITER * STREAMS_PER_APPEND * EVENTS_PER_STREAM
    ours_rate = await rate(total, ours)
    baseline_rate = await rate(total, baseline)
    emit(
        "eventstore.append_many_streams",
        ours_rate,
        "events/s",
        baseline=baseline_rate,
        baseline_is=(
            "the same events by the same concurrent writers as plain per-stream INSERTs"
            " (no atomicity across streams, no version check, no commit-order lock)"
        ),
        writers=WRITERS,
        streams_per_append=STREAMS_PER_APPEND,
        events=total,
    )


async def bench_read_all_vs_copy(store: EventStore, pool: asyncpg.Pool) -> None:
    total = int(await pool.fetchval("SELECT count(*) FROM events"))

    async def ours() -> None:
        position, seen = 0, 0
        while batch := await store.read_all(position, 1000):
            position = batch[-1].global_position
            seen += len(batch)
        assert seen == total

    async def baseline() -> None:
        sink = io.BytesIO()

        async def write(chunk: bytes) -> None:
            sink.write(chunk)

        async with pool.acquire() as conn:
            await conn.copy_from_query(
                "SELECT global_position, stream_id, stream_version, event_id, type, data,"
                " metadata, recorded_at FROM events ORDER BY global_position",
                output=write,
                format="binary",
            )

    ours_rate = await rate(total, ours)
    baseline_rate = await rate(total, baseline)
    emit(
        "eventstore.read_all_vs_copy",
        ours_rate,
        "events/s",
        baseline=baseline_rate,
        baseline_is="COPY (SELECT same columns ORDER BY global_position) TO STDOUT, binary",
        events=total,
        read_batch=1000,
    )
