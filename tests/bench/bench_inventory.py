"""inventory-sync benchmarks, against the service running as its own process:

- inventory.hot_sku_vs_rowlock: the same N `orders.placed` events for one SKU, consumed by
  inventory-sync and by a minimal consumer doing `UPDATE stock SET available = available - q
  WHERE sku = s AND available >= q` per order; reservations committed per second.
- inventory.reserve_p99_ms_c1 / _c100: gRPC Reserve latency at 1 and 100 callers.
- inventory.channel_propagation_p99_ms: from sending a reservation to every fake channel
  holding the new quantity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
import nats
from pulsestock.bus import cloudevent_headers, ensure_stream, service_stream, subject_for
from pulsestock.devstack.servers import EmbeddedNats, free_port
from pulsestock.eventstore import NewEvent
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.v1 import ingest_events_pb2
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.bench.report import emit
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

HOT_ORDERS = 5000
HOT_STOCK = 4000


@asynccontextmanager
async def fresh_nats() -> AsyncIterator[str]:
    server = EmbeddedNats(Path(tempfile.mkdtemp(prefix="bench-nats-")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@asynccontextmanager
async def inventory_process(
    infra: Infra,
    nats_url: str,
    extra: dict[str, str] | None = None,
    schema: str | None = None,
) -> AsyncIterator[tuple[int, str]]:
    """inventory-sync as its own process; drops its schema after unless one was given."""
    owned = schema is None
    schema = schema or unique_name("bench_inv")
    port = free_port()
    await migrate(infra.database_url, "inventory-sync", schema)
    env = {"LOG_LEVEL": "error", **(extra or {})}
    process = start_service_process(
        "inventory-sync", infra.database_url, nats_url, schema, port, env
    )
    try:
        deadline = time.monotonic() + 30
        while not await serving(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("inventory-sync did not start")
            await asyncio.sleep(0.05)
        yield port, schema
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        if owned:
            await drop_schema(infra.database_url, schema)


def order_messages(count: int) -> list[tuple[str, bytes, dict[str, str]]]:
    messages = []
    for index in range(count):
        order = ingest_events_pb2.OrderPlaced(
            channel=Channel.CHANNEL_TIKTOK_SHOP,
            channel_order_id=f"hot-{index}",
            lines=[OrderLine(sku="HOT-1", quantity=1)],
        )
        event = NewEvent.of(order)
        headers = cloudevent_headers(
            event_id=str(uuid.uuid4()),
            event_type=event.type,
            source="/bench",
            subject=f"hot-{index}",
        )
        messages.append((subject_for("ingest", event.type, "HOT-1", 16), event.data, headers))
    return messages


async def publish_all(nats_url: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, service_stream("ingest"))
    for start in range(0, len(messages), 500):
        futures = [
            await js.publish_async(s, d, headers=h) for s, d, h in messages[start : start + 500]
        ]
        await asyncio.gather(*futures)
    await nc.close()


ROUNDS = 3


async def bench_hot_sku(infra: Infra) -> None:
    """Alternate ours and the baseline, three rounds each; report the medians."""
    messages = order_messages(HOT_ORDERS)
    ours: list[float] = []
    baseline: list[float] = []
    reserved = baseline_reserved = 0
    for _ in range(ROUNDS):
        elapsed, reserved = await hot_sku_ours(infra, messages)
        ours.append(HOT_ORDERS / elapsed)
        async with fresh_nats() as nats_url:
            await publish_all(nats_url, messages)
            elapsed, baseline_reserved = await rowlock_consumer(infra, nats_url)
        baseline.append(HOT_ORDERS / elapsed)
    emit(
        "inventory.hot_sku_vs_rowlock",
        statistics.median(ours),
        "orders/s",
        baseline=statistics.median(baseline),
        baseline_is=(
            "nats-py pull consumer (batch 256, 32 connections, messages handled concurrently)"
            " doing UPDATE stock SET available = available - 1 WHERE sku = $1 AND available >= 1"
            " per order, autocommit"
        ),
        rounds={"ours": [round(x) for x in ours], "baseline": [round(x) for x in baseline]},
        orders=HOT_ORDERS,
        stock=HOT_STOCK,
        reserved=reserved,
        baseline_reserved=baseline_reserved,
        oversold_beyond_stock=max(0, reserved - HOT_STOCK) + max(0, baseline_reserved - HOT_STOCK),
        measured=(
            "stock in place, orders waiting in JetStream; from the first decision's commit to"
            " the last (ours: recorded_at in the log; baseline: UPDATE completions)"
        ),
        note=(
            "every order of ours also gets its ledger events, channel quantities, read model"
            " and outbox rows; inventory-sync runs as two processes (command side, read side)"
        ),
    )


# inventory-sync deployed as two processes: the command side and the read side (CQRS).
COMMAND_SIDE = "relay,writer,leases,expiry,orders,pulses,channel_sync"
READ_SIDE = "read_model"
DECISIONS = "('pulsestock.v1.StockReserved', 'pulsestock.v1.Oversold')"


async def hot_sku_ours(
    infra: Infra, messages: list[tuple[str, bytes, dict[str, str]]]
) -> tuple[float, int]:
    """Stock first, then the orders wait in the stream, then inventory-sync consumes them;
    the time from its first decision's commit to its last."""
    schema = unique_name("bench_hot")
    try:
        async with fresh_nats() as nats_url:
            async with (
                inventory_process(infra, nats_url, schema=schema) as (port, _),
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            ):
                await InventorySyncServiceStub(channel).Receive(
                    pb.ReceiveRequest(sku="HOT-1", warehouse_id="W1", quantity=HOT_STOCK),
                    timeout=30,
                )
            await publish_all(nats_url, messages)
            async with (
                inventory_process(infra, nats_url, {"PULSESTOCK_ROLES": READ_SIDE}, schema),
                inventory_process(infra, nats_url, {"PULSESTOCK_ROLES": COMMAND_SIDE}, schema),
            ):
                pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
                try:
                    count = f"SELECT count(*) FROM {schema}.events WHERE type IN {DECISIONS}"

                    async def all_decided() -> bool:
                        return bool(await pool.fetchval(count) >= len(messages))

                    await eventually(all_decided, within=120, what="every order decided")
                    window = await pool.fetchval(
                        "SELECT extract(epoch FROM max(recorded_at) - min(recorded_at))"
                        f" FROM {schema}.events WHERE type IN {DECISIONS}"
                    )
                    reserved = await pool.fetchval(
                        f"SELECT count(*) FROM {schema}.events"
                        " WHERE type = 'pulsestock.v1.StockReserved'"
                    )
                finally:
                    await pool.close()
    finally:
        await drop_schema(infra.database_url, schema)
    return float(window), int(reserved)


async def rowlock_consumer(infra: Infra, nats_url: str) -> tuple[float, int]:
    schema = unique_name("bench_rowlock")
    pool = await asyncpg.create_pool(infra.database_url, min_size=32, max_size=32)
    await pool.execute(f"CREATE SCHEMA {schema}")
    await pool.execute(
        f"CREATE TABLE {schema}.stock"
        " (sku text PRIMARY KEY, available int NOT NULL CHECK (available >= 0))"
    )
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_consumer(
        "INGEST", durable_name="bench__rowlock", filter_subjects=["ingest.order_placed.>"]
    )
    subscription = await js.pull_subscribe_bind("bench__rowlock", stream="INGEST")
    reserved = 0
    committed: list[float] = []
    update = (
        f"UPDATE {schema}.stock SET available = available - $1 WHERE sku = $2 AND available >= $1"
    )

    async def apply(message: nats.aio.msg.Msg) -> None:
        nonlocal reserved
        order = ingest_events_pb2.OrderPlaced.FromString(message.data)
        line = order.lines[0]
        status = await pool.execute(update, line.quantity, line.sku)
        committed.append(time.perf_counter())
        reserved += status == "UPDATE 1"
        await message.ack()

    await pool.execute(f"INSERT INTO {schema}.stock VALUES ('HOT-1', $1)", HOT_STOCK)
    done = 0
    while done < HOT_ORDERS:
        try:  # as our consumer does: wait for one, then take what is there (no lingering)
            batch = list(await subscription.fetch(1, timeout=1))
        except TimeoutError:
            continue
        with contextlib.suppress(TimeoutError):
            batch += await subscription.fetch(255, timeout=0.005)
        await asyncio.gather(*(apply(m) for m in batch))
        done += len(batch)
    elapsed = max(committed) - min(committed)  # first commit to last, as for ours
    await nc.close()
    await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    await pool.close()
    return elapsed, reserved


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_reserve_latency(infra: Infra) -> None:
    async with (
        fresh_nats() as nats_url,
        inventory_process(infra, nats_url) as (port, _schema),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = InventorySyncServiceStub(channel)
        await stub.Receive(
            pb.ReceiveRequest(sku="LAT-1", warehouse_id="W1", quantity=10_000_000), timeout=30
        )

        async def one(order_id: str) -> float:
            started = time.perf_counter()
            await stub.Reserve(
                pb.ReserveRequest(
                    channel=Channel.CHANNEL_SHOPIFY,
                    channel_order_id=order_id,
                    lines=[OrderLine(sku="LAT-1", quantity=1)],
                    paid=True,
                ),
                timeout=30,
            )
            return (time.perf_counter() - started) * 1000

        for _ in range(50):  # warm up
            await one(f"warm-{uuid.uuid4()}")
        sequential = [await one(f"c1-{i}") for i in range(1000)]

        async def caller(index: int, samples: list[float]) -> None:
            for round_ in range(50):
                samples.append(await one(f"c100-{index}-{round_}"))

        concurrent: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(*(caller(i, concurrent) for i in range(100)))
        throughput = len(concurrent) / (time.perf_counter() - started)
    for name, samples, extra in (
        ("inventory.reserve_p99_ms_c1", sequential, {}),
        ("inventory.reserve_p99_ms_c100", concurrent, {"reservations_per_s": round(throughput, 1)}),
    ):
        emit(
            name,
            percentile(samples, 0.99),
            "ms",
            p50_ms=round(statistics.median(samples), 3),
            calls=len(samples),
            **extra,
        )


async def bench_channel_propagation(infra: Infra) -> None:
    fakes = (FakeTikTokShop(), FakeShopify(), FakeAmazon(rate_per_second=50, burst=50))
    for fake in fakes:
        await fake.start()
    env = {
        **fake_channel_env(*(fake.url for fake in fakes)),
        "CHANNEL_SYNC_RECONCILE_SECONDS": "3600",
    }
    samples: list[float] = []
    try:
        async with (
            fresh_nats() as nats_url,
            inventory_process(infra, nats_url, env) as (port, _schema),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = InventorySyncServiceStub(channel)
            stock = 1000
            await stub.Receive(
                pb.ReceiveRequest(sku="PROP-1", warehouse_id="W1", quantity=stock), timeout=30
            )
            await wait_for_channels(fakes, "PROP-1", stock)
            for index in range(100):
                # Space reservations beyond Amazon's documented 5 requests/s, so the
                # figure is the pipeline's latency, not the channel's rate limit.
                await asyncio.sleep(0.25)
                started = time.perf_counter()
                await stub.Reserve(
                    pb.ReserveRequest(
                        channel=Channel.CHANNEL_TIKTOK_SHOP,
                        channel_order_id=f"p-{index}",
                        lines=[OrderLine(sku="PROP-1", quantity=1)],
                        paid=True,
                    ),
                    timeout=30,
                )
                await wait_for_channels(fakes, "PROP-1", stock - index - 1)
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        for fake in fakes:
            await fake.stop()
    emit(
        "inventory.channel_propagation_p99_ms",
        percentile(samples, 0.99),
        "ms",
        p50_ms=round(statistics.median(samples), 3),
        measured=(
            "from sending Reserve to all three fake channels holding the new quantity;"
            " one reservation every 250 ms (Amazon allows 5 calls/s; faster changes coalesce)"
        ),
        reservations=len(samples),
    )


async def wait_for_channels(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon], sku: str, quantity: int
) -> None:
    deadline = time.monotonic() + 30
    while any(fake.quantity_of(sku) != quantity for fake in fakes):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"channels did not reach {quantity}: {[f.quantity_of(sku) for f in fakes]}"
            )
        await asyncio.sleep(0.0005)


async def run(infra: Infra) -> None:
    os.environ.setdefault("LOG_LEVEL", "error")
    await bench_hot_sku(infra)
    await bench_reserve_latency(infra)
    await bench_channel_propagation(infra)
