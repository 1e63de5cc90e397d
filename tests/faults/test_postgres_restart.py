"""PostgreSQL restarted under load (same data directory and port; durable settings, as in
production): calls during the outage fail fast with UNAVAILABLE and no traceback, the pools
reconnect by themselves, every acknowledged write is there afterwards, and the read model and
the outbox relays carry on from their checkpoints."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus import (
    ConsumerSpec,
    DurableConsumer,
    StreamSpec,
    cloudevent_headers,
    ensure_consumer,
    ensure_stream,
    idempotent,
)
from pulsestock.bus.provision import DEAD_LETTERS
from pulsestock.devstack.servers import EmbeddedNats, EmbeddedPostgres
from pulsestock.eventstore.store import connect_pool
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.faults.load import (
    Load,
    Traffic,
    health_of,
    outbox_depth,
    reservations_by_order,
    reserved_in_read_model,
    stream_count,
)
from tests.helpers.infra import (
    EFFECTS_TABLE,
    count_effect,
    create_event_store_schema,
    eventually,
    unique_name,
)
from tests.helpers.service import RunningService, running_service

OUTAGE_S = 4.0
DEADLINE_S = 3.0  # each call's gRPC deadline


@dataclass
class Servers:
    postgres: EmbeddedPostgres
    nats: EmbeddedNats


@pytest.fixture
def servers() -> Iterator[Servers]:
    """A PostgreSQL of this test's own (the session's is shared: not to be restarted), with
    fsync and synchronous commit on, and a NATS. In a directory of its own rather than
    pytest's tmp_path: as root PostgreSQL runs as another user, who must reach it, and any
    pytest starting meanwhile closes pytest's base directory to all but its owner again."""
    data_dir = Path(tempfile.mkdtemp(prefix="pulsestock-faults-"))
    postgres = EmbeddedPostgres(data_dir, fast=False)
    server = EmbeddedNats(data_dir)
    try:
        postgres.start()
        server.start()
        yield Servers(postgres, server)
    finally:
        server.stop()
        postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Stack:
    servers: Servers
    ingest: RunningService
    inventory: RunningService

    @property
    def database_url(self) -> str:
        return self.servers.postgres.url


@pytest.fixture
async def stack(servers: Servers) -> AsyncIterator[Stack]:
    database_url = servers.postgres.url
    async with (
        running_service(
            "ingest",
            database_url,
            servers.nats.url,
            unique_name("ing"),
            {"INGEST_RECONCILE_SECONDS": "0"},
        ) as ingest,
        running_service(
            "inventory-sync", database_url, servers.nats.url, unique_name("inv")
        ) as inventory,
    ):
        yield Stack(servers, ingest, inventory)


@pytest.fixture
async def observer(stack: Stack) -> AsyncIterator[NATS]:
    client = await nats.connect(stack.servers.nats.url)
    yield client
    await client.close()


async def recorded_orders(database_url: str, schema: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(f"SELECT channel_order_id FROM {schema}.recorded_orders")
    finally:
        await conn.close()
    return {row["channel_order_id"] for row in rows}


async def projection_lag(database_url: str, schema: str) -> int:
    """How far the read model's checkpoint is behind the head of the ledger."""
    conn = await asyncpg.connect(database_url)
    try:
        head = await conn.fetchval(f"SELECT coalesce(max(global_position), 0) FROM {schema}.events")
        checkpoint = await conn.fetchval(
            f"SELECT position FROM {schema}.projection_checkpoints WHERE name = $1",
            "inventory_read_model",
        )
    finally:
        await conn.close()
    return int(head) - int(checkpoint or 0)


@pytest.mark.slow
@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
async def test_calls_fail_fast_during_a_postgres_restart_and_nothing_acknowledged_is_lost(
    stack: Stack, observer: NATS, shutdown: str
) -> None:
    ingest_schema = stack.ingest.settings.schema
    inventory_schema = stack.inventory.settings.schema
    traffic = Traffic(
        IngestServiceStub(stack.ingest.channel), InventorySyncServiceStub(stack.inventory.channel)
    )
    await traffic.prepare()
    load = Load(timeout_s=DEADLINE_S)
    traffic.start(load)
    try:
        await eventually(
            lambda: load.calls_after(0, "order", 20), within=20, what="orders before the restart"
        )
        outage_start = time.monotonic()
        # Off the event loop: the services run in it and must keep answering meanwhile.
        await asyncio.to_thread(stack.servers.postgres.stop, immediate=shutdown == "immediate")
        # Down for a chosen length (not a wait for something), then back on its port and data.
        await asyncio.sleep(OUTAGE_S)
        failing_health = (
            await health_of(stack.ingest.channel),
            await health_of(stack.inventory.channel),
        )
        await asyncio.to_thread(stack.servers.postgres.start)
        outage_end = time.monotonic()

        async def recovered() -> bool:
            return all(
                [
                    await load.calls_after(outage_end, kind, count)
                    for kind, count in (("order", 20), ("reserve", 20), ("sample", 5))
                ]
            )

        await eventually(recovered, within=20, what="every kind of call to succeed again")
    finally:
        await load.stop()

    # During the outage calls failed, each at once with UNAVAILABLE and a one-line message.
    failed = [o for o in load.outcomes if o.code != grpc.StatusCode.OK]
    assert failed, "no call failed: the outage was not under load"
    assert {o.code for o in failed} == {grpc.StatusCode.UNAVAILABLE}, failed[:5]
    assert all("Traceback" not in o.details and "\n" not in o.details for o in failed), failed[:5]
    slowest = max(failed, key=lambda o: o.seconds)
    assert slowest.seconds < DEADLINE_S / 2, slowest
    assert all(outage_start <= o.started + o.seconds <= outage_end + 5 for o in failed)
    # The processes stay up and answer their health checks meanwhile (today: SERVING, as the
    # kubelet's liveness and readiness probes both read the overall status, and a liveness
    # failure would restart every pod of a service during a database failover).
    assert not any(status.startswith("UNREACHABLE") for status in failing_health)

    # Every acknowledged write is stored: ingest's orders, inventory-sync's reservations.
    acknowledged_orders = {o.key for o in load.ok("order")}
    acknowledged_reserves = {o.key for o in load.ok("reserve")}
    recorded = await recorded_orders(stack.database_url, ingest_schema)
    assert acknowledged_orders <= recorded
    # A call that failed may still have committed (its reply was lost): never one not made.
    attempted_orders = {o.key for o in load.of("order")}
    assert recorded <= attempted_orders
    applied = await reservations_by_order(stack.database_url, inventory_schema)
    assert acknowledged_reserves <= applied.keys()

    # The relays and the order consumer carry on: every recorded order reaches the ledger
    # once, and is published once.
    async def caught_up() -> bool:
        applied = await reservations_by_order(stack.database_url, inventory_schema)
        return recorded <= applied.keys()

    await eventually(caught_up, within=20, what="every recorded order reserved")
    applied = await reservations_by_order(stack.database_url, inventory_schema)
    attempted = attempted_orders | {o.key for o in load.of("reserve")}
    assert applied.keys() <= attempted
    assert set(applied.values()) == {1}

    async def drained() -> bool:
        return (
            await outbox_depth(stack.database_url, ingest_schema) == 0
            and await outbox_depth(stack.database_url, inventory_schema) == 0
        )

    await eventually(drained, within=20, what="both outboxes to drain")
    assert await stream_count(observer, "INGEST", "ingest.order_placed.>") == len(recorded)

    # The read model resumed from its checkpoint: it reaches the head and shows each
    # reservation once.
    async def projected() -> bool:
        return await projection_lag(stack.database_url, inventory_schema) == 0

    await eventually(projected, within=20, what="the read model to reach the ledger's head")
    assert await reserved_in_read_model(traffic.inventory, traffic.skus) == len(applied)

    assert await health_of(stack.ingest.channel) == "SERVING"
    assert await health_of(stack.inventory.channel) == "SERVING"


@pytest.mark.slow
async def test_a_consumer_holds_its_messages_while_postgres_restarts_instead_of_dead_lettering(
    servers: Servers,
) -> None:
    """Two deliveries allowed: were each failure during the outage to spend one, the
    messages would be dead-lettered within a second of it; held, every one is applied once
    when the database is back."""
    database_url = servers.postgres.url
    schema = await create_event_store_schema(database_url, "fault")
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(EFFECTS_TABLE)
    finally:
        await conn.close()
    nc = await nats.connect(servers.nats.url)
    js = nc.jetstream()
    spec = ConsumerSpec(stream="FAULTS", durable="faults__effects", max_deliver=2)
    await ensure_stream(js, StreamSpec("FAULTS", ["faults.>"]))
    await ensure_stream(js, DEAD_LETTERS)
    await ensure_consumer(js, spec)
    pool = await connect_pool(database_url, schema, max_size=4)
    stop = asyncio.Event()
    consumer = asyncio.create_task(
        DurableConsumer(nc, spec, idempotent(pool, spec.durable, count_effect)).run(stop)
    )

    async def publish(count: int) -> None:
        for _ in range(count):
            event_id = str(uuid.uuid4())
            headers = cloudevent_headers(
                event_id=event_id, event_type="test.Fault", source="/faults", subject="f-1"
            )
            await js.publish("faults.thing", b"x", headers=headers)

    async def effects() -> list[int]:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            return [row["times"] for row in await conn.fetch("SELECT times FROM effects")]
        finally:
            await conn.close()

    try:
        await publish(20)
        await eventually(lambda: _count_is(effects, 20), within=10, what="the first 20 applied")
        await asyncio.to_thread(servers.postgres.stop)
        await publish(20)  # delivered, and failing, while the database is down
        await asyncio.sleep(OUTAGE_S)  # the outage's chosen length
        await asyncio.to_thread(servers.postgres.start)
        await eventually(lambda: _count_is(effects, 40), within=20, what="all 40 applied")
        assert await effects() == [1] * 40
        info = await js.consumer_info("FAULTS", spec.durable)
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
        assert (await js.stream_info(DEAD_LETTERS.name)).state.messages == 0
    finally:
        stop.set()
        await asyncio.wait_for(consumer, 10)
        await pool.close()
        await nc.close()


async def _count_is(rows: Callable[[], Awaitable[list[int]]], count: int) -> bool:
    return len(await rows()) == count
