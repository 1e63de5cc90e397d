"""NATS killed under load and brought back on the same port and store: ingest and
inventory-sync keep taking commands into PostgreSQL, their outboxes grow and then drain,
inventory-sync's order consumer catches up, nothing is lost or applied twice, and neither
service needs a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
import pytest
from nats.aio.client import Client as NATS
from pulsestock.devstack.servers import EmbeddedNats
from pulsestock.inventory_sync.entrypoints.consumers import ORDERS
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
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import RunningService, running_service

OUTAGE_S = 6.0


@pytest.fixture
def own_nats(infra: Infra, tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass
class Stack:
    database_url: str
    nats: EmbeddedNats
    ingest: RunningService
    inventory: RunningService


@pytest.fixture
async def stack(infra: Infra, own_nats: EmbeddedNats) -> AsyncIterator[Stack]:
    ingest_schema, inventory_schema = unique_name("ing"), unique_name("inv")
    try:
        async with (
            running_service(
                "ingest",
                infra.database_url,
                own_nats.url,
                ingest_schema,
                {"INGEST_RECONCILE_SECONDS": "0"},
            ) as ingest,
            running_service(
                "inventory-sync", infra.database_url, own_nats.url, inventory_schema
            ) as inventory,
        ):
            yield Stack(infra.database_url, own_nats, ingest, inventory)
    finally:
        await drop_schema(infra.database_url, ingest_schema)
        await drop_schema(infra.database_url, inventory_schema)


@pytest.fixture
async def observer(stack: Stack) -> AsyncIterator[NATS]:
    """The test's own view of the streams, reconnecting as the services do."""

    async def quiet(error: Exception) -> None:
        """The outage is the test's own doing: nothing to log."""

    client = await nats.connect(stack.nats.url, max_reconnect_attempts=-1, error_cb=quiet)
    yield client
    await client.close()


@pytest.mark.slow
async def test_commands_keep_succeeding_and_every_consumer_catches_up_after_nats_returns(
    stack: Stack, observer: NATS
) -> None:
    ingest_schema = stack.ingest.settings.schema
    inventory_schema = stack.inventory.settings.schema
    traffic = Traffic(
        IngestServiceStub(stack.ingest.channel), InventorySyncServiceStub(stack.inventory.channel)
    )
    await traffic.prepare()
    load = Load(timeout_s=5.0)
    traffic.start(load)
    try:
        # The whole path works before the outage: orders from ingest become reservations.
        await eventually(
            lambda: load.calls_after(0, "order", 20), within=20, what="orders before the outage"
        )
        first_orders = {o.key for o in load.ok("order")[:20]}

        async def first_reserved() -> bool:
            applied = await reservations_by_order(stack.database_url, inventory_schema)
            return first_orders <= applied.keys()

        await eventually(first_reserved, within=20, what="the first orders reserved")

        await asyncio.to_thread(stack.nats.kill)
        outage_start = time.monotonic()
        health_during: list[tuple[str, str]] = []

        async def outbox_grew() -> bool:
            return await outbox_depth(stack.database_url, ingest_schema) >= 50

        await eventually(outbox_grew, within=OUTAGE_S, what="ingest's outbox to grow")
        health_during.append(
            (await health_of(stack.ingest.channel), await health_of(stack.inventory.channel))
        )
        # The outage lasts its full length whatever the load did meanwhile (a chosen length,
        # not a wait for something).
        await asyncio.sleep(max(0.0, outage_start + OUTAGE_S - time.monotonic()))
        health_during.append(
            (await health_of(stack.ingest.channel), await health_of(stack.inventory.channel))
        )
        depth_at_restart = await outbox_depth(stack.database_url, ingest_schema)
        await asyncio.to_thread(stack.nats.start)
        outage_end = time.monotonic()

        await eventually(
            lambda: load.calls_after(outage_end, "order", 20),
            within=10,
            what="orders after the outage",
        )
    finally:
        await load.stop()

    # Every command succeeded, during the outage too, and none waited on NATS.
    failed = [o for o in load.outcomes if o.code != grpc.StatusCode.OK]
    assert failed == [], failed[:5]
    during = load.between(outage_start, outage_end)
    assert {o.kind for o in during} == {"order", "reserve", "sample"}
    assert max(o.seconds for o in during) < 2.0, max(during, key=lambda o: o.seconds)
    assert depth_at_restart >= 50
    assert health_during == [("SERVING", "SERVING")] * 2

    orders = {o.key for o in load.ok("order")}
    reserves = {o.key for o in load.ok("reserve")}
    samples = sum(o.accepted for o in load.ok("sample"))
    assert samples == len(load.ok("sample"))  # each push one new sample, each accepted

    async def drained() -> bool:
        return (
            await outbox_depth(stack.database_url, ingest_schema) == 0
            and await outbox_depth(stack.database_url, inventory_schema) == 0
        )

    await eventually(drained, within=20, what="both outboxes to drain")

    async def caught_up() -> bool:
        applied = await reservations_by_order(stack.database_url, inventory_schema)
        return applied.keys() >= orders | reserves

    await eventually(caught_up, within=20, what="inventory-sync to reserve every order")
    applied = await reservations_by_order(stack.database_url, inventory_schema)
    assert applied == dict.fromkeys(orders | reserves, 1)  # nothing lost, nothing twice

    async def read_model_caught_up() -> bool:
        return await reserved_in_read_model(traffic.inventory, traffic.skus) == len(applied)

    await eventually(read_model_caught_up, within=20, what="the read model to catch up")

    # JetStream holds each published fact once (the relay's re-sends were deduplicated), the
    # order consumer has settled all of them, and nothing was dead-lettered.
    assert await stream_count(observer, "INGEST", "ingest.order_placed.>") == len(orders)
    assert await stream_count(observer, "INGEST", "ingest.video_sampled.>") == samples
    js = observer.jetstream()

    async def settled() -> bool:
        """Every order message delivered and acked (the stream's last message may be a
        sample, which this consumer's filter leaves out: no sequence to compare with)."""
        info = await js.consumer_info("INGEST", ORDERS.durable)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    # An ack sent as the server died is lost with it (or with the consumer state it had not
    # yet written): JetStream redelivers that message once its ack wait has passed (the
    # ledger then changes nothing), so settling can take that long after the kill.
    settle_by = outage_start + ORDERS.ack_wait_s + 10
    await eventually(
        settled, within=settle_by - time.monotonic(), what="the order consumer to settle"
    )
    assert await reservations_by_order(stack.database_url, inventory_schema) == applied
    assert (await js.stream_info("DEAD_LETTERS")).state.messages == 0

    # Recovered without a restart: both still serve, and a new order flows end to end.
    assert await health_of(stack.ingest.channel) == "SERVING"
    assert await health_of(stack.inventory.channel) == "SERVING"
    await traffic.record_order("after-the-outage", 5)

    async def new_order_reserved() -> bool:
        return "after-the-outage" in await reservations_by_order(
            stack.database_url, inventory_schema
        )

    await eventually(new_order_reserved, within=10, what="a new order reserved")
