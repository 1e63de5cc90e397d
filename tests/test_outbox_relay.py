"""The outbox relay killed with SIGKILL at random moments and restarted: every event reaches
JetStream exactly once (dedup on Nats-Msg-Id) and an idempotent consumer applies each once."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus import ConsumerSpec, DurableConsumer, Envelope, StreamSpec, idempotent
from pulsestock.bus.provision import ensure_consumer, ensure_stream
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent
from pulsestock.outbox import OutboxRelay
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.helpers.infra import EFFECTS_TABLE, Infra, count_effect, eventually, unique_name

pytestmark = pytest.mark.slow


async def stream_count(nc: NATS, name: str) -> int:
    info = await nc.jetstream().stream_info(name)
    return int(info.state.messages)


async def test_relay_publishes_with_cloudevent_headers(
    nc: NATS, pool: asyncpg.Pool, schema: str
) -> None:
    token = unique_name("r").lower()
    await ensure_stream(nc.jetstream(), StreamSpec(token.upper(), [f"{token}.>"]))
    store = EventStore(
        pool, schema, source="/pulsestock/test", outbox_route=lambda s, _e: f"{token}.x.{s}"
    )
    event = NewEvent.of(ev.StockReceived(sku="A", quantity=3))
    await store.append("sku-A", NO_STREAM, [event])
    subscription = await nc.jetstream().subscribe(f"{token}.>")
    relay = OutboxRelay(pool, nc, schema)
    assert await relay.relay_batch() == 1
    message = await subscription.next_msg(timeout=5)
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == str(event.event_id)
    assert message.headers["ce-source"] == "/pulsestock/test"
    assert message.headers["ce-subject"] == "sku-A"
    assert Envelope.from_headers(message.headers, message.data).decode() == ev.StockReceived(
        sku="A", quantity=3
    )
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_batch_jetstream_does_not_store_stays_in_the_outbox(
    nc: NATS, pool: asyncpg.Pool, schema: str
) -> None:
    """One message of the batch has no stream to go to: the relay fails the batch (nothing
    deleted, the stored ones are dropped as duplicates on the next attempt)."""
    token = unique_name("r").lower()
    await ensure_stream(nc.jetstream(), StreamSpec(token.upper(), [f"{token}.ok.>"]))
    store = EventStore(
        pool,
        schema,
        outbox_route=lambda s, _e: f"{token}.{'lost' if s == 'sku-B' else 'ok'}.{s}",
    )
    for sku in ("sku-A", "sku-B", "sku-C"):
        await store.append(sku, NO_STREAM, [NewEvent.of(ev.StockReceived(sku=sku, quantity=1))])
    relay = OutboxRelay(pool, nc, schema, publish_timeout_s=5)
    with pytest.raises(nats.errors.Error, match="1 not stored"):
        await relay.relay_batch()
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 3
    await ensure_stream(nc.jetstream(), StreamSpec(f"{token.upper()}_LOST", [f"{token}.lost.>"]))
    assert await relay.relay_batch() == 3
    assert await stream_count(nc, token.upper()) == 2  # A and C once each
    assert await stream_count(nc, f"{token.upper()}_LOST") == 1


async def test_relay_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    infra: Infra, nc: NATS, pool: asyncpg.Pool, schema: str
) -> None:
    token = unique_name("k").lower()
    stream = StreamSpec(token.upper(), [f"{token}.>"])
    await ensure_stream(nc.jetstream(), stream)
    store = EventStore(pool, schema, outbox_route=lambda s, _e: f"{token}.stock_received.{s}")
    appended: list[uuid.UUID] = []
    for transaction in range(200):
        events = [NewEvent.of(ev.StockReceived(sku="S", quantity=i)) for i in range(10)]
        await store.append(f"sku-{transaction}", NO_STREAM, events)
        appended.extend(e.event_id for e in events)
    total = len(appended)
    rng = random.Random(42)

    def start_relay() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.relay_process",
                infra.database_url,
                schema,
                infra.nats_url,
                "40",
            ],
            stdout=subprocess.PIPE,
        )

    kills_with_work_left = 0
    for _ in range(5):
        before = await stream_count(nc, stream.name)
        target = min(total - 1, before + rng.randint(20, 400))
        relay = start_relay()

        async def progressed(target: int = target) -> bool:
            return await stream_count(nc, stream.name) >= target

        await eventually(progressed, within=30, what="relay progress")
        relay.send_signal(signal.SIGKILL)
        relay.wait(10)
        assert relay.stdout is not None
        relay.stdout.close()
        kills_with_work_left += bool(await pool.fetchval("SELECT count(*) FROM outbox"))
    assert kills_with_work_left >= 1, "every kill came too late to test anything"

    relay = start_relay()
    assert relay.stdout is not None
    ready = await asyncio.wait_for(asyncio.to_thread(relay.stdout.readline), 30)
    assert ready == b"ready\n"  # a SIGTERM before its handler would just kill it

    async def outbox_empty() -> bool:
        return await pool.fetchval("SELECT count(*) FROM outbox") == 0

    await eventually(outbox_empty, within=60, what="outbox drained")
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(10) == 0
    relay.stdout.close()
    assert await stream_count(nc, stream.name) == total  # nothing lost, nothing twice

    await pool.execute(EFFECTS_TABLE)

    consumer_spec = ConsumerSpec(stream.name, f"{token}__effects")
    await ensure_consumer(nc.jetstream(), consumer_spec)
    stop = asyncio.Event()
    consumer = DurableConsumer(
        nc,
        consumer_spec,
        idempotent(pool, consumer_spec.durable, count_effect),
        fetch_timeout_s=0.2,
    )
    running = asyncio.create_task(consumer.run(stop))

    async def all_applied() -> bool:
        return await pool.fetchval("SELECT count(*) FROM effects") == total

    try:
        await eventually(all_applied, within=60, what="consumer applied every event")
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert await pool.fetchval("SELECT max(times) FROM effects") == 1
    applied = {uuid.UUID(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM effects")}
    assert applied == set(appended)


async def test_a_row_committed_while_the_relay_publishes_is_not_lost(
    nc: NATS, pool: asyncpg.Pool, schema: str
) -> None:
    """Outbox ids are drawn at insert, commits land in another order: a row with a lower id
    that commits between the relay's read and its delete must survive for the next pass."""
    token = unique_name("late").lower()
    await ensure_stream(nc.jetstream(), StreamSpec(token.upper(), [f"{token}.>"]))
    store = EventStore(pool, schema)
    slow = await pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    late = NewEvent.of(ev.StockReceived(sku="late", quantity=1))
    await store.enqueue_messages([(f"{token}.x.late", late, "late")], conn=slow)  # lower id
    early = NewEvent.of(ev.StockReceived(sku="early", quantity=1))
    await store.enqueue_messages([(f"{token}.x.early", early, "early")])  # committed first

    class CommitWhilePublishing(OutboxRelay):
        async def publish(self, rows: list[Any]) -> None:
            await super().publish(rows)
            if transaction is not None and slow.is_in_transaction():
                await transaction.commit()  # lands between the relay's read and its delete

    relay = CommitWhilePublishing(pool, nc, schema)
    try:
        assert await relay.relay_batch() == 1  # "early"
        assert await relay.relay_batch() == 1  # "late" was kept for this pass
    finally:
        await pool.release(slow)
    assert await stream_count(nc, token.upper()) == 2
