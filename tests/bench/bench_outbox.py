"""The outbox relay against a raw nats-py JetStream publish of the same messages, in rounds
that alternate the two (and a sequential publish), reporting the median per-round ratio with
its min and max."""

from __future__ import annotations

import asyncio
import contextlib
import statistics

import nats
from pulsestock.bus.codec import parse_header_block
from pulsestock.bus.provision import StreamSpec, ensure_stream
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent
from pulsestock.eventstore.store import connect_pool
from pulsestock.outbox import OutboxRelay
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.bench.report import alternating_rounds, emit, rate
from tests.helpers.infra import Infra, create_event_store_schema, drop_schema, unique_name

EVENTS = 20_000
RELAY_BATCH = 500
ROUNDS = 5
SEQUENTIAL = 5_000  # a side figure: the sequential publish takes only these of each round
Message = tuple[str, bytes, dict[str, str]]


async def run(infra: Infra) -> None:
    """Rounds alternate the relay and the raw publishes; each round relays a fresh outbox."""
    schema = await create_event_store_schema(infra.database_url, "bench")
    pool = await connect_pool(infra.database_url, schema, max_size=4)
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    token = unique_name("bench").lower()
    relay_stream = StreamSpec(f"{token}_RELAY".upper(), [f"{token}.relay.>"])
    raw_stream = StreamSpec(f"{token}_RAW".upper(), [f"{token}.raw.>"])
    seq_stream = StreamSpec(f"{token}_SEQ".upper(), [f"{token}.seq.>"])
    ours: list[float] = []
    pipelined: list[float] = []
    sequential: list[float] = []
    try:
        for spec in (relay_stream, raw_stream, seq_stream):
            await ensure_stream(js, spec)
        store = EventStore(pool, schema, outbox_route=lambda s, _e: f"{token}.relay.{s[-1]}")
        relay = OutboxRelay(pool, nc, schema, batch_size=RELAY_BATCH)
        for round_number in range(ROUNDS):
            for chunk in range(EVENTS // 100):
                batch = [NewEvent.of(ev.StockReserved(sku="S", quantity=1)) for _ in range(100)]
                await store.append(f"r{round_number}-sku-{chunk}", NO_STREAM, batch)
            rows = await pool.fetch("SELECT subject, data, headers FROM outbox ORDER BY id")
            messages = [
                (r["subject"], bytes(r["data"]), parse_header_block(r["headers"])) for r in rows
            ]
            assert len(messages) == EVENTS

            async def relayed() -> None:
                while await relay.relay_batch():
                    pass

            async def raw_pipelined(messages: list[Message] = messages) -> None:
                for start in range(0, len(messages), RELAY_BATCH):
                    futures = [
                        await js.publish_async(
                            subject.replace(".relay.", ".raw."), data, headers=dict(headers)
                        )
                        for subject, data, headers in messages[start : start + RELAY_BATCH]
                    ]
                    await asyncio.gather(*futures)

            async def raw_sequential(messages: list[Message] = messages) -> None:
                for subject, data, headers in messages[:SEQUENTIAL]:
                    await js.publish(
                        subject.replace(".relay.", ".seq."), data, headers=dict(headers)
                    )

            ours.append(await rate(EVENTS, relayed))
            pipelined.append(await rate(EVENTS, raw_pipelined))
            sequential.append(await rate(SEQUENTIAL, raw_sequential))
            assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
            for spec, each in (
                (relay_stream, EVENTS),
                (raw_stream, EVENTS),
                (seq_stream, SEQUENTIAL),
            ):
                published = (await js.stream_info(spec.name)).state.messages
                assert published == each * (round_number + 1), (spec.name, published)
        versus_sequential = alternating_rounds(ours, sequential)
        emit(
            "outbox.relay_vs_raw_publish",
            statistics.median(ours),
            "events/s",
            baseline=statistics.median(pipelined),
            baseline_is=(
                f"raw nats-py publish_async of the same messages, {RELAY_BATCH} in flight,"
                " all acks awaited (the relay adds: read outbox, delete published rows)"
            ),
            **alternating_rounds(ours, pipelined),
            raw_sequential_publish=round(statistics.median(sequential), 3),
            ratio_vs_sequential=versus_sequential["ratio"],
            ratio_vs_sequential_min=versus_sequential["ratio_min"],
            ratio_vs_sequential_max=versus_sequential["ratio_max"],
            rounds_sequential=versus_sequential["rounds"]["baseline"],
            events_per_round=EVENTS,
            sequential_events_per_round=SEQUENTIAL,
            measured="median of alternating rounds: relay, pipelined publish, sequential publish",
        )
    finally:
        for spec in (relay_stream, raw_stream, seq_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(spec.name)
        await nc.close()
        await pool.close()
        await drop_schema(infra.database_url, schema)
