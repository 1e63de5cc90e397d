"""Event store throughput against plain PostgreSQL doing the same writes and reads."""

from __future__ import annotations

import asyncio
import io
import statistics
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent, StreamAppend
from pulsestock.eventstore.store import connect_pool
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.bench.report import alternating_rounds, emit, rate
from tests.helpers.infra import Infra, create_event_store_schema, drop_schema

BATCH = 100
BATCHES = 200
WRITERS = 16
STREAMS_PER_APPEND = 10
EVENTS_PER_STREAM = 5
APPENDS_PER_WRITER = 20
ROUNDS = 5
READ_PAGE = 1000

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
    pool: asyncpg.Pool | asyncpg.Connection,
    stream_id: str,
    first_version: int,
    batch: list[NewEvent],
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


async def rounds(
    total: int, ours: Callable[[int], Awaitable[None]], baseline: Callable[[int], Awaitable[None]]
) -> tuple[float, float, dict[str, Any]]:
    """ROUNDS rounds of ours then the baseline (each told its round): median rates and what
    alternating_rounds reports (the median, min and max of the per-round ratios)."""
    ours_rates, baseline_rates = [], []
    for round_ in range(ROUNDS):
        ours_rates.append(await rate(total, partial(ours, round_)))
        baseline_rates.append(await rate(total, partial(baseline, round_)))
    return (
        statistics.median(ours_rates),
        statistics.median(baseline_rates),
        alternating_rounds(ours_rates, baseline_rates),
    )


async def bench_append_batched(store: EventStore, pool: asyncpg.Pool) -> None:
    # Fresh events (ids) for every round, made before the clock starts.
    per_round = [[events(BATCH) for _ in range(BATCHES)] for _ in range(ROUNDS)]

    async def ours(round_: int) -> None:
        version = NO_STREAM
        for batch in per_round[round_]:
            version = await store.append(f"sku-HOT-{round_}", version, batch)

    async def baseline(round_: int) -> None:
        for index, batch in enumerate(per_round[round_]):
            await raw_insert(
                pool,
                f"sku-HOT-{round_}",
                index * BATCH + 1,
                [NewEvent(e.type, e.data) for e in batch],
            )

    total = BATCH * BATCHES
    ours_rate, baseline_rate, extra = await rounds(total, ours, baseline)
    emit(
        "eventstore.append_batched",
        ours_rate,
        "events/s",
        baseline=baseline_rate,
        **extra,
        baseline_is="plain INSERT ... unnest of the same batches into an identical table",
        batch_size=BATCH,
        events=total,
    )


async def bench_append_many_streams(store: EventStore, pool: asyncpg.Pool) -> None:
    async def writer(round_: int, index: int, raw: bool) -> None:
        for append in range(APPENDS_PER_WRITER):
            streams = [f"sku-r{round_}-w{index}-{append}-{s}" for s in range(STREAMS_PER_APPEND)]
            if raw:
                # The same events committed together: one transaction per batch of streams.
                async with pool.acquire() as conn, conn.transaction():
                    for stream in streams:
                        await raw_insert(conn, f"raw-{stream}", 1, events(EVENTS_PER_STREAM))
            else:
                await store.append_many(
                    [
                        StreamAppend(stream, NO_STREAM, events(EVENTS_PER_STREAM))
                        for stream in streams
                    ]
                )

    async def ours(round_: int) -> None:
        await asyncio.gather(*(writer(round_, i, raw=False) for i in range(WRITERS)))

    async def baseline(round_: int) -> None:
        await asyncio.gather(*(writer(round_, i, raw=True) for i in range(WRITERS)))

    total = WRITERS * APPENDS_PER_WRITER * STREAMS_PER_APPEND * EVENTS_PER_STREAM
    ours_rate, baseline_rate, extra = await rounds(total, ours, baseline)
    emit(
        "eventstore.append_many_streams",
        ours_rate,
        "events/s",
        baseline=baseline_rate,
        **extra,
        baseline_is=(
            "the same events by the same concurrent writers, each batch of streams as plain"
            " per-stream INSERTs in one transaction (no version check, no commit-order lock)"
        ),
        writers=WRITERS,
        streams_per_append=STREAMS_PER_APPEND,
        events=total,
    )


async def bench_read_all_vs_copy(store: EventStore, pool: asyncpg.Pool) -> None:
    """The bulk catch-up path (read_all_pages, what a rebuild folds) decoding every event."""
    total = int(await pool.fetchval("SELECT count(*) FROM events"))

    async def ours(_: int) -> None:
        seen = 0
        async with pool.acquire() as conn:
            async for page in store.read_all_pages(0, READ_PAGE, conn=conn):
                seen += len(page)
        assert seen == total

    async def baseline(_: int) -> None:
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

    ours_rate, baseline_rate, extra = await rounds(total, ours, baseline)
    emit(
        "eventstore.read_all_vs_copy",
        ours_rate,
        "events/s",
        baseline=baseline_rate,
        **extra,
        baseline_is="COPY (SELECT same columns ORDER BY global_position) TO STDOUT, binary",
        events=total,
        read_page=READ_PAGE,
    )
