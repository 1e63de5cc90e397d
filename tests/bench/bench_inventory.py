"""inventory-sync benchmarks, against the service running as its own processes. Rounds
alternate ours and the baseline; each reports the median per-round ratio with its min and max.

- inventory.hot_sku_vs_rowlock: the same N `orders.placed` events for one SKU, published to
  JetStream while inventory-sync (or a baseline consumer) is already running; orders per
  second from the first order published to the last decision committed. The baseline is a
  row-lock consumer deciding a whole fetched batch in one transaction; a per-order
  `UPDATE ... WHERE available >= q` consumer is reported beside it.
- inventory.channel_propagation_p99_ms: a flash sale on one SKU (Poisson orders at 25/s,
  above Amazon's and Shopify's documented update rates) against the three fake channels with
  their documented limits; per change, from sending Reserve to every channel showing that
  quantity or a newer one. The baseline is the floor the rate limits leave: the same channel
  clients, fed each change in-process at the same instants, coalescing to the latest quantity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
from nats.js.client import JetStreamContext
from pulsestock.bus import cloudevent_headers, ensure_stream, service_stream, subject_for
from pulsestock.config import Env
from pulsestock.devstack.servers import EmbeddedNats, free_port
from pulsestock.eventstore import NewEvent
from pulsestock.eventstore.store import notify_channel
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.inventory_sync.adapters.channels.base import (
    ChannelClient,
    ChannelError,
    RateLimiter,
)
from pulsestock.inventory_sync.adapters.channels.config import ChannelConfigs
from pulsestock.inventory_sync.adapters.channels.shopify import (
    MUTATION_COST as SHOPIFY_MUTATION_COST,
)
from pulsestock.v1 import ingest_events_pb2
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.bench.report import alternating_rounds, emit
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

ROUNDS = 3
HOT_ORDERS = 10_000
HOT_STOCK = 8_000
HOT_SKU = "HOT-1"
FETCH_BATCH = 256  # what inventory-sync's order consumer fetches (DurableConsumer default)
BATCHES_IN_FLIGHT = 2  # as inventory-sync's order consumer

Message = tuple[str, bytes, dict[str, str]]


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


def order_messages(count: int) -> list[Message]:
    messages = []
    for index in range(count):
        order = ingest_events_pb2.OrderPlaced(
            channel=Channel.CHANNEL_TIKTOK_SHOP,
            channel_order_id=f"hot-{index}",
            lines=[OrderLine(sku=HOT_SKU, quantity=1)],
        )
        event = NewEvent.of(order)
        headers = cloudevent_headers(
            event_id=str(uuid.uuid4()),
            event_type=event.type,
            source="/bench",
            subject=f"hot-{index}",
        )
        messages.append((subject_for("ingest", event.type, HOT_SKU, 16), event.data, headers))
    return messages


async def publish_timed(js: JetStreamContext, messages: list[Message]) -> float:
    """Publish 500 at a time, every ack awaited; returns when the first publish started
    (perf_counter), the start of both sides' clocks."""
    started = time.perf_counter()
    for start in range(0, len(messages), 500):
        futures = [
            await js.publish_async(s, d, headers=h) for s, d, h in messages[start : start + 500]
        ]
        await asyncio.gather(*futures)
    return started


async def publish_all(nats_url: str, messages: list[Message]) -> float:
    """Publish into the ingest stream of a server; returns the seconds it took."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, service_stream("ingest"))
    started = await publish_timed(js, messages)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def publish_alone(messages: list[Message]) -> float:
    """The publisher with nobody consuming: the ceiling every side shares."""
    async with fresh_nats() as nats_url:
        return await publish_all(nats_url, messages)


def check_sold_exactly_stock(side: str, reserved: int) -> None:
    """More than the stock is an oversell; less, with more orders than stock, lost sales."""
    if reserved != HOT_STOCK:
        raise AssertionError(f"{side} reserved {reserved} of {HOT_STOCK} units for {HOT_ORDERS}")


async def bench_hot_sku(infra: Infra) -> None:
    """Rounds alternate ours, the batch row-lock baseline and the per-order one."""
    messages = order_messages(HOT_ORDERS)
    ours: list[float] = []
    batched: list[float] = []
    per_order: list[float] = []
    publisher: list[float] = []
    for _ in range(ROUNDS):
        publisher.append(HOT_ORDERS / await publish_alone(messages))
        for side, rates, run_side in (
            ("ours", ours, hot_sku_ours),
            ("batch row-lock baseline", batched, batch_rowlock_consumer),
            ("per-order row-lock baseline", per_order, per_order_rowlock_consumer),
        ):
            elapsed, reserved = await run_side(infra, messages)
            check_sold_exactly_stock(side, reserved)
            rates.append(HOT_ORDERS / elapsed)
    versus_per_order = alternating_rounds(ours, per_order)
    emit(
        "inventory.hot_sku_vs_rowlock",
        statistics.median(ours),
        "orders/s",
        baseline=statistics.median(batched),
        baseline_is=(
            f"nats-py pull consumer (fetch up to {FETCH_BATCH}, {BATCHES_IN_FLIGHT} batches in"
            " flight, as ours) deciding each fetched batch in one transaction: skip orders"
            " already decided, SELECT ... FOR UPDATE the SKU row once, decide every order in"
            " memory, INSERT all decisions (unnest), UPDATE the stock, COMMIT, ack each"
        ),
        **alternating_rounds(ours, batched),
        per_order_rowlock=round(statistics.median(per_order), 3),
        per_order_rowlock_is=(
            "the same fetch, 32 connections, each order its own autocommit"
            " UPDATE stock SET available = available - q WHERE sku = s AND available >= q"
        ),
        ratio_vs_per_order_rowlock=versus_per_order["ratio"],
        ratio_vs_per_order_rowlock_min=versus_per_order["ratio_min"],
        ratio_vs_per_order_rowlock_max=versus_per_order["ratio_max"],
        rounds_per_order_rowlock=versus_per_order["rounds"]["baseline"],
        publish_alone=round(statistics.median(publisher), 3),
        publish_alone_is="the same publisher into JetStream with no consumer (a ceiling)",
        orders=HOT_ORDERS,
        stock=HOT_STOCK,
        oversold_beyond_stock=0,  # every side of every round reserved exactly the stock
        measured=(
            "consumer running and stock in place; from the first order published (500"
            " publish_async in flight) to the last decision committed (ours: the commit's"
            " NOTIFY showing the SKU stream at its final version; baselines: COMMIT returned)"
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


async def hot_sku_ours(infra: Infra, messages: list[Message]) -> tuple[float, int]:
    """inventory-sync up with the stock received, then the orders published."""
    schema = unique_name("bench_hot")
    try:
        async with (
            fresh_nats() as nats_url,
            inventory_process(infra, nats_url, {"PULSESTOCK_ROLES": READ_SIDE}, schema),
            inventory_process(infra, nats_url, {"PULSESTOCK_ROLES": COMMAND_SIDE}, schema) as (
                port,
                _,
            ),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            await InventorySyncServiceStub(channel).Receive(
                pb.ReceiveRequest(sku=HOT_SKU, warehouse_id="W1", quantity=HOT_STOCK),
                timeout=30,
            )
            nc = await nats.connect(nats_url)
            observer = await asyncpg.connect(infra.database_url)
            try:
                watch = LedgerWatch(observer, schema, f"sku-{HOT_SKU}")
                await watch.start()
                finished = asyncio.create_task(watch.last_decision_committed(len(messages)))
                started = await publish_timed(nc.jetstream(), messages)
                ended = await finished
                reserved = await observer.fetchval(
                    f"SELECT count(*) FROM {schema}.events"
                    " WHERE type = 'pulsestock.v1.StockReserved'"
                )
            finally:
                await observer.close()
                await nc.close()
    finally:
        await drop_schema(infra.database_url, schema)
    return ended - started, int(reserved)


class LedgerWatch:
    """When a ledger stream reached its final version, seen from the event store's NOTIFY
    (sent by every append, delivered at its commit): the version is read on each wake-up,
    an index lookup; the full count of decisions, a scan, only every 100 ms to know the end."""

    def __init__(self, conn: asyncpg.Connection, schema: str, stream_id: str) -> None:
        self.conn = conn
        self.schema = schema
        self.stream_id = stream_id
        self.woken = asyncio.Event()

    async def start(self) -> None:
        await self.conn.add_listener(
            notify_channel(self.schema, "events"), lambda *_: self.woken.set()
        )

    async def last_decision_committed(self, decisions: int, within: float = 300) -> float:
        version_of = (
            f"SELECT coalesce(max(stream_version), 0) FROM {self.schema}.events"
            " WHERE stream_id = $1"
        )
        decided = f"SELECT count(*) FROM {self.schema}.events WHERE type IN {DECISIONS}"
        first_seen: dict[int, float] = {}
        counted_at = 0.0
        deadline = time.perf_counter() + within
        while True:
            self.woken.clear()
            version = await self.conn.fetchval(version_of, self.stream_id)
            now = time.perf_counter()
            first_seen.setdefault(version, now)
            if now - counted_at > 0.1:
                counted_at = now
                if await self.conn.fetchval(decided) >= decisions:
                    break
            if now > deadline:
                raise AssertionError(f"not every order decided within {within} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), 0.1)
        final = await self.conn.fetchval(version_of, self.stream_id)
        return first_seen.get(final, time.perf_counter())


async def rowlock_setup(
    infra: Infra, nats_url: str, pool_size: int
) -> tuple[asyncpg.Pool, str, nats.NATS, JetStreamContext.PullSubscription]:
    schema = unique_name("bench_rowlock")
    pool = await asyncpg.create_pool(infra.database_url, min_size=pool_size, max_size=pool_size)
    await pool.execute(f"CREATE SCHEMA {schema}")
    await pool.execute(
        f"CREATE TABLE {schema}.stock"
        " (sku text PRIMARY KEY, available int NOT NULL CHECK (available >= 0))"
    )
    await pool.execute(
        f"CREATE TABLE {schema}.decisions (order_id text PRIMARY KEY, reserved bool NOT NULL)"
    )
    await pool.execute(f"INSERT INTO {schema}.stock VALUES ($1, $2)", HOT_SKU, HOT_STOCK)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, service_stream("ingest"))
    await js.add_consumer(
        "INGEST", durable_name="bench__rowlock", filter_subjects=["ingest.order_placed.>"]
    )
    subscription = await js.pull_subscribe_bind("bench__rowlock", stream="INGEST")
    return pool, schema, nc, subscription


async def fetch_available(subscription: JetStreamContext.PullSubscription) -> list[Any]:
    """As our consumer does: wait for one, then take what is there (no lingering)."""
    batch = list(await subscription.fetch(1, timeout=1))
    with contextlib.suppress(TimeoutError):
        batch += await subscription.fetch(FETCH_BATCH - 1, timeout=0.005)
    return batch


async def batch_rowlock_consumer(infra: Infra, messages: list[Message]) -> tuple[float, int]:
    """The strongest plain consumer we could write: one transaction per fetched batch."""
    async with fresh_nats() as nats_url:
        pool, schema, nc, subscription = await rowlock_setup(infra, nats_url, BATCHES_IN_FLIGHT)
        reserved = 0
        committed: list[float] = []

        async def decide(batch: list[Any]) -> None:
            nonlocal reserved
            orders = [
                (o.channel_order_id, [(line.sku, line.quantity) for line in o.lines])
                for o in (ingest_events_pb2.OrderPlaced.FromString(m.data) for m in batch)
            ]
            async with pool.acquire() as conn, conn.transaction():
                decided = {
                    r["order_id"]
                    for r in await conn.fetch(
                        f"SELECT order_id FROM {schema}.decisions WHERE order_id = ANY($1)",
                        [order_id for order_id, _ in orders],
                    )
                }
                skus = sorted({sku for _, lines in orders for sku, _ in lines})
                available = {
                    r["sku"]: r["available"]
                    for r in await conn.fetch(
                        f"SELECT sku, available FROM {schema}.stock WHERE sku = ANY($1)"
                        " ORDER BY sku FOR UPDATE",
                        skus,
                    )
                }
                ids, outcomes = [], []
                for order_id, lines in orders:
                    if order_id in decided:
                        continue  # a redelivery changes nothing
                    ok = all(available.get(sku, 0) >= quantity for sku, quantity in lines)
                    if ok:
                        for sku, quantity in lines:
                            available[sku] -= quantity
                    ids.append(order_id)
                    outcomes.append(ok)
                await conn.execute(
                    f"INSERT INTO {schema}.decisions SELECT * FROM unnest($1::text[], $2::bool[])",
                    ids,
                    outcomes,
                )
                await conn.execute(
                    f"UPDATE {schema}.stock s SET available = n.available"
                    " FROM unnest($1::text[], $2::int[]) AS n(sku, available)"
                    " WHERE s.sku = n.sku",
                    list(available),
                    list(available.values()),
                )
            committed.append(time.perf_counter())
            reserved += sum(outcomes)
            for message in batch:
                await message.ack()

        async def consume() -> None:
            done = 0
            in_flight: set[asyncio.Task[None]] = set()
            while done < len(messages):
                try:
                    batch = await fetch_available(subscription)
                except TimeoutError:
                    continue
                task = asyncio.create_task(decide(batch))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if len(in_flight) >= BATCHES_IN_FLIGHT:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                done += len(batch)
            await asyncio.gather(*in_flight)

        consuming = asyncio.create_task(consume())
        started = await publish_timed(nc.jetstream(), messages)
        await consuming
        left = await pool.fetchval(f"SELECT available FROM {schema}.stock")
        await nc.close()
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()
    if left != HOT_STOCK - reserved:
        raise AssertionError(f"batch baseline: {left} left after reserving {reserved}")
    return max(committed) - started, reserved


async def per_order_rowlock_consumer(infra: Infra, messages: list[Message]) -> tuple[float, int]:
    """The textbook guard: one conditional UPDATE per order, many connections at once."""
    async with fresh_nats() as nats_url:
        pool, schema, nc, subscription = await rowlock_setup(infra, nats_url, 32)
        reserved = 0
        committed: list[float] = []
        update = (
            f"UPDATE {schema}.stock SET available = available - $1"
            " WHERE sku = $2 AND available >= $1"
        )

        async def apply(message: Any) -> None:
            nonlocal reserved
            line = ingest_events_pb2.OrderPlaced.FromString(message.data).lines[0]
            status = await pool.execute(update, line.quantity, line.sku)
            committed.append(time.perf_counter())
            reserved += status == "UPDATE 1"
            await message.ack()

        async def consume() -> None:
            done = 0
            while done < len(messages):
                try:
                    batch = await fetch_available(subscription)
                except TimeoutError:
                    continue
                await asyncio.gather(*(apply(m) for m in batch))
                done += len(batch)

        consuming = asyncio.create_task(consume())
        started = await publish_timed(nc.jetstream(), messages)
        await consuming
        await nc.close()
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()
    return max(committed) - started, reserved


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- channel propagation ---------------------------------------------------------------

PROPAGATION_CHANGES = 350  # per round and side: 1,050 changes of ours over three rounds
ORDERS_PER_SECOND = 25.0
PROPAGATION_STOCK = 1000
Fakes = tuple[FakeTikTokShop, FakeShopify, FakeAmazon]


class WatchedQuantities(dict[str, int]):
    """A fake channel's quantity table that records when each quantity was set."""

    def __init__(self, initial: dict[str, int], writes: list[tuple[float, int]]) -> None:
        super().__init__(initial)
        self.writes = writes

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        self.writes.append((time.perf_counter(), value))


@asynccontextmanager
async def watched_fakes() -> AsyncIterator[tuple[Fakes, list[list[tuple[float, int]]]]]:
    """The three fakes with their documented default limits (TikTok Shop 50 calls/s; Shopify
    2,000 points restoring 100/s, 10 per mutation; Amazon 5 calls/s, burst 5), fresh for
    each round so no side starts with a bucket the other drained."""
    tiktok, shopify, amazon = FakeTikTokShop(), FakeShopify(), FakeAmazon()
    writes: list[list[tuple[float, int]]] = [[], [], []]
    tiktok.stock = WatchedQuantities(tiktok.stock, writes[0])
    shopify.available = WatchedQuantities(shopify.available, writes[1])
    amazon.quantities = WatchedQuantities(amazon.quantities, writes[2])
    fakes = (tiktok, shopify, amazon)
    for fake in fakes:
        await fake.start()
    try:
        yield fakes, writes
    finally:
        for fake in fakes:
            await fake.stop()


def poisson_schedule(seed: int) -> list[float]:
    """Offsets (s) of the orders: Poisson arrivals, the same for both sides of a round."""
    rng, at, offsets = random.Random(seed), 0.0, []
    for _ in range(PROPAGATION_CHANGES):
        at += rng.expovariate(ORDERS_PER_SECOND)
        offsets.append(at)
    return offsets


async def until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def all_shown(fakes: Fakes, sku: str, quantity: int, within: float = 30) -> None:
    async def shown() -> bool:
        return all(fake.quantity_of(sku) == quantity for fake in fakes)

    await eventually(shown, within=within, what=f"every channel to show {quantity}")


def propagation(
    sent: list[float], writes: list[list[tuple[float, int]]]
) -> tuple[list[float], list[list[float]]]:
    """Per change i (the stock then PROPAGATION_STOCK - i - 1): ms until every channel
    showed that quantity or a newer (lower) one; and the same per channel."""
    per_channel: list[list[float]] = [[] for _ in writes]
    for index, at in enumerate(sent):
        quantity = PROPAGATION_STOCK - index - 1
        for channel, channel_writes in enumerate(writes):
            shown = next((t for t, value in channel_writes if t >= at and value <= quantity), None)
            if shown is None:
                raise AssertionError(f"channel {channel} never showed change {index}")
            per_channel[channel].append((shown - at) * 1000)
    overall = [max(times) for times in zip(*per_channel, strict=True)]
    return overall, per_channel


async def propagation_round_ours(infra: Infra, seed: int) -> tuple[list[float], list[list[float]]]:
    sku = f"PROP-{seed}"
    async with watched_fakes() as (fakes, writes):
        env = {
            **fake_channel_env(*(fake.url for fake in fakes)),
            "CHANNEL_SYNC_RECONCILE_SECONDS": "3600",
        }
        async with (
            fresh_nats() as nats_url,
            inventory_process(infra, nats_url, env) as (port, _schema),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = InventorySyncServiceStub(channel)
            await stub.Receive(
                pb.ReceiveRequest(sku=sku, warehouse_id="W1", quantity=PROPAGATION_STOCK),
                timeout=30,
            )
            await all_shown(fakes, sku, PROPAGATION_STOCK)
            sent: list[float] = []
            start = time.perf_counter()
            for index, offset in enumerate(poisson_schedule(seed)):
                await until(start + offset)
                sent.append(time.perf_counter())
                reply = await stub.Reserve(
                    pb.ReserveRequest(
                        channel=Channel.CHANNEL_TIKTOK_SHOP,
                        channel_order_id=f"p-{seed}-{index}",
                        lines=[OrderLine(sku=sku, quantity=1)],
                        paid=True,
                    ),
                    timeout=30,
                )
                if not reply.reserved:
                    raise AssertionError(f"reservation {index} refused with stock left")
            await all_shown(fakes, sku, PROPAGATION_STOCK - PROPAGATION_CHANGES)
    return propagation(sent, writes)


class TakenBeforehand:
    """Stands in for a channel client's rate limiter once the pusher takes the client's
    token itself, before it picks the quantity: the client's own wait becomes a no-op (the
    client still adjusts `tokens` from the channel's answers, e.g. Shopify's bucket)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def acquire(self, cost: float = 1.0) -> None:
        return None

    @property
    def tokens(self) -> float:
        return self.limiter.tokens

    @tokens.setter
    def tokens(self, value: float) -> None:
        self.limiter.tokens = value


async def propagation_round_floor(seed: int) -> tuple[list[float], list[list[float]]]:
    """No ledger, no NATS, no database: each change goes straight to a coalescing pusher per
    channel at the instant ours was sent. The pusher waits for the channel's rate-limit token
    (our clients' limiters, the same headroom under the documented limits), then sends the
    newest quantity: the least staleness the rate limits allow."""
    sku = f"FLOOR-{seed}"
    async with watched_fakes() as (fakes, writes):
        clients = ChannelConfigs.from_env(
            Env(fake_channel_env(*(fake.url for fake in fakes)))
        ).clients()
        desired = PROPAGATION_STOCK
        changed = {channel: asyncio.Event() for channel in clients}
        cost = {Channel.CHANNEL_SHOPIFY: float(SHOPIFY_MUTATION_COST)}

        async def pusher(channel: int, client: ChannelClient) -> None:
            limiter: RateLimiter = getattr(client, "limiter")  # noqa: B009
            setattr(client, "limiter", TakenBeforehand(limiter))  # noqa: B010
            wake = changed[channel]
            confirmed: int | None = None
            while True:
                await wake.wait()
                wake.clear()
                while confirmed != desired:
                    await limiter.acquire(cost.get(channel, 1.0))
                    target = desired
                    try:
                        await client.set_quantity(sku, target)
                    except ChannelError as error:
                        if not error.retryable:
                            raise
                        await asyncio.sleep(error.retry_after or 0.05)
                        continue
                    confirmed = target

        def change(to: int) -> None:
            nonlocal desired
            desired = to
            for wake in changed.values():
                wake.set()

        pushers = [asyncio.create_task(pusher(ch, client)) for ch, client in clients.items()]
        try:
            change(PROPAGATION_STOCK)
            await all_shown(fakes, sku, PROPAGATION_STOCK)
            sent: list[float] = []
            start = time.perf_counter()
            for index, offset in enumerate(poisson_schedule(seed)):
                await until(start + offset)
                sent.append(time.perf_counter())
                change(PROPAGATION_STOCK - index - 1)
            await all_shown(fakes, sku, PROPAGATION_STOCK - PROPAGATION_CHANGES)
        finally:
            for task in pushers:
                task.cancel()
            await asyncio.gather(*pushers, return_exceptions=True)
            for client in clients.values():
                await client.close()
    return propagation(sent, writes)


async def bench_channel_propagation(infra: Infra) -> None:
    ours: list[float] = []
    ours_channels: list[list[float]] = [[], [], []]
    floor: list[float] = []
    floor_channels: list[list[float]] = [[], [], []]
    round_ours: list[float] = []
    round_floor: list[float] = []
    for seed in range(ROUNDS):
        for samples, channels, per_round, run_side in (
            (ours, ours_channels, round_ours, lambda s: propagation_round_ours(infra, s)),
            (floor, floor_channels, round_floor, propagation_round_floor),
        ):
            overall, per_channel = await run_side(seed)
            samples.extend(overall)
            for pooled, latencies in zip(channels, per_channel, strict=True):
                pooled.extend(latencies)
            per_round.append(percentile(overall, 0.99))
    names = ("tiktok_shop", "shopify", "amazon")
    emit(
        "inventory.channel_propagation_p99_ms",
        percentile(ours, 0.99),
        "ms",
        baseline=percentile(floor, 0.99),
        lower_is_better=True,
        baseline_is=(
            "the rate limits' floor, in-process: a coalescing pusher per channel that takes"
            " the channel's rate-limit token (our clients' limiters) and then sends the newest"
            " quantity through our channel clients, fed each change the moment it happens"
        ),
        **alternating_rounds(round_ours, round_floor, lower_is_better=True),
        p50_ms=round(statistics.median(ours), 3),
        baseline_p50_ms=round(statistics.median(floor), 3),
        p99_ms_by_channel={
            name: round(percentile(latencies, 0.99), 1)
            for name, latencies in zip(names, ours_channels, strict=True)
        },
        baseline_p99_ms_by_channel={
            name: round(percentile(latencies, 0.99), 1)
            for name, latencies in zip(names, floor_channels, strict=True)
        },
        changes=len(ours),
        load=(
            f"one SKU, Poisson orders at {ORDERS_PER_SECOND:g}/s (seeded, same instants for"
            " both sides), Reserve one at a time; above Amazon's 5 updates/s and Shopify's"
            " 10 mutations/s once its 2,000-point bucket is spent, so changes coalesce:"
            " a flash sale, which is when channel staleness oversells"
        ),
        measured=(
            "per change, from sending Reserve (floor: the in-memory change) to every fake"
            " channel showing that quantity or a newer one; p99 of all rounds' changes,"
            " ratio per round = floor p99 / ours p99"
        ),
    )


async def run(infra: Infra) -> None:
    os.environ.setdefault("LOG_LEVEL", "error")
    await bench_hot_sku(infra)
    await bench_channel_propagation(infra)
