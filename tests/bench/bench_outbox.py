"""The outbox relay against a raw nats-py JetStream publish of the same messages."""

from __future__ import annotations

import asyncio
import contextlib

import nats
from pulsestock.bus.codec import parse_header_block
from pulsestock.bus.provision import StreamSpec, ensure_stream
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent
from pulsestock.eventstore.store import connect_pool
from pulsestock.outbox import OutboxRelay
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.bench.report import emit, rate
from tests.helpers.infra import Infra, create_event_store_schema, drop_schema, unique_name

EVENTS = 20_000
RELAY_BATCH = 500


async def run(infra: Infra) -> None:
    schema = await create_event_store_schema(infra.database_url, "bench")
    pool = await connect_pool(infra.database_url, schema, max_size=4)
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    token = unique_name("bench").lower()
    relay_stream = StreamSpec(f"{token}_RELAY".upper(), [f"{token}.relay.>"])
    raw_stream = StreamSpec(f"{token}_RAW".upper(), [f"{token}.raw.>"])
    seq_stream = StreamSpec(f"{token}_SEQ".upper(), [f"{token}.seq.>"])
    try:
        for spec in (relay_stream, raw_stream, seq_stream):
            await ensure_stream(js, spec)
        store = EventStore(pool, schema, outbox_route=lambda s, _e: f"{token}.relay.{s[-1]}")
        for chunk in range(EVENTS // 100):
            batch = [NewEvent.of(ev.StockReserved(sku="S", quantity=1)) for _ in range(100)]
            await store.append(f"sku-{chunk}", NO_STREAM, batch)
        rows = await pool.fetch("SELECT subject, data, headers FROM outbox ORDER BY id")
        messages = [
            (r["subject"], bytes(r["data"]), parse_header_block(r["headers"])) for r in rows
        ]
        relay = OutboxRelay(pool, nc, schema, batch_size=RELAY_BATCH)

        async def ours() -> None:
            while await relay.relay_batch():
                pass

        async def raw_pipelined() -> None:
            for start in range(0, len(messages), RELAY_BATCH):
                futures = [
                    await js.publish_async(
                        subject.replace(".relay.", ".raw."), data, headers=dict(headers)
                    )
                    for subject, data, headers in messages[start : start + RELAY_BATCH]
                ]
                await asyncio.gather(*futures)

        async def raw_sequential() -> None:
            for subject, data, headers in messages:
                await js.publish(subject.replace(".relay.", ".seq."), data, headers=dict(headers))

        ours_rate = await rate(EVENTS, ours)
        raw_rate = await rate(EVENTS, raw_pipelined)
        sequential_rate = await rate(EVENTS, raw_sequential)
        for spec in (relay_stream, raw_stream, seq_stream):
            assert (await js.stream_info(spec.name)).state.messages == EVENTS
        emit(
            "outbox.relay_vs_raw_publish",
            ours_rate,
            "events/s",
            baseline=raw_rate,
            baseline_is=(
                f"raw nats-py publish_async of the same messages, {RELAY_BATCH} in flight,"
                " all acks awaited (the relay adds: read outbox, delete published rows)"
            ),
            raw_sequential_publish=round(sequential_rate, 3),
            ratio_vs_sequential=round(ours_rate / sequential_rate, 3),
            events=EVENTS,
        )
    finally:
        for spec in (relay_stream, raw_stream, seq_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(spec.name)
        await nc.close()
        await pool.close()
        await drop_schema(infra.database_url, schema)
