"""A bounded, paced load on real services, recording every call's outcome, and the checks the
fault tests share: what was acknowledged is stored, reserved and published exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NATS
from pulsestock.v1 import ingest_events_pb2 as ingest_ev
from pulsestock.v1 import ingest_pb2
from pulsestock.v1 import inventory_sync_events_pb2 as inventory_ev
from pulsestock.v1 import inventory_sync_pb2 as inventory_pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

STOCK_PER_SKU = 1_000_000
RESERVED = "pulsestock.v1.StockReserved"


@dataclass(frozen=True)
class Outcome:
    kind: str
    key: str
    code: grpc.StatusCode
    details: str
    started: float  # time.monotonic()
    seconds: float
    accepted: int = 0  # samples a PushVideoSamples call accepted


Call = Callable[[str, float], Awaitable[int]]
"""(key, deadline in seconds) -> samples accepted (0 for the other calls); raises AioRpcError."""


@dataclass
class Load:
    """Workers that call until `stop()`, each paced by `pause_s` between calls (a bounded
    rate, not synchronisation), every outcome recorded."""

    timeout_s: float
    pause_s: float = 0.01
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, kind: str, call: Call, workers: int = 1) -> None:
        for worker in range(workers):
            self._tasks.append(asyncio.create_task(self._work(kind, worker, call)))

    async def _work(self, kind: str, worker: int, call: Call) -> None:
        number = 0
        while not self._stop.is_set():
            key = f"{kind}-{worker}-{number}"
            number += 1
            started = time.monotonic()
            try:
                accepted = await call(key, self.timeout_s)
            except grpc.aio.AioRpcError as error:
                code, details, accepted = error.code(), error.details() or "", 0
            else:
                code, details = grpc.StatusCode.OK, ""
            self.outcomes.append(
                Outcome(kind, key, code, details, started, time.monotonic() - started, accepted)
            )
            await asyncio.sleep(self.pause_s)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), self.timeout_s + 5)

    def ok(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind and o.code == grpc.StatusCode.OK]

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    def between(self, start: float, end: float) -> list[Outcome]:
        """Calls made wholly inside [start, end]."""
        return [o for o in self.outcomes if o.started >= start and o.started + o.seconds <= end]

    async def calls_after(self, moment: float, kind: str, count: int) -> bool:
        """`count` calls of `kind` started after `moment` have returned OK."""
        return sum(1 for o in self.ok(kind) if o.started > moment) >= count


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


@dataclass
class Traffic:
    """Orders through ingest (RecordOrder), reservations straight to inventory-sync (Reserve)
    and video samples into ingest (PushVideoSamples), one unit of a few SKUs each."""

    ingest: IngestServiceStub
    inventory: InventorySyncServiceStub
    skus: list[str] = field(
        default_factory=lambda: [f"FAULT-{uuid.uuid4().hex[:6]}-{n}" for n in range(4)]
    )
    video_id: str = field(default_factory=lambda: f"vid-{uuid.uuid4().hex[:8]}")
    published_at: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    )
    _sample: int = 0

    async def prepare(self) -> None:
        for sku in self.skus:
            await self.inventory.Receive(
                inventory_pb.ReceiveRequest(sku=sku, warehouse_id="W1", quantity=STOCK_PER_SKU),
                timeout=10,
            )
        await self.ingest.RegisterVideo(
            ingest_pb2.RegisterVideoRequest(
                video_id=self.video_id,
                skus=self.skus[:1],
                creator_id="creator-faults",
                creator_followers=10_000,
                published_at=stamp(self.published_at),
                channel=Channel.CHANNEL_TIKTOK_SHOP,
            ),
            timeout=10,
        )

    def sku_of(self, key: str) -> str:
        return self.skus[zlib.crc32(key.encode()) % len(self.skus)]

    async def record_order(self, key: str, deadline_s: float) -> int:
        order = ingest_ev.OrderPlaced(
            channel=Channel.CHANNEL_TIKTOK_SHOP,
            channel_order_id=key,
            lines=[OrderLine(sku=self.sku_of(key), quantity=1)],
        )
        await self.ingest.RecordOrder(
            ingest_pb2.RecordOrderRequest(order=order), timeout=deadline_s
        )
        return 0

    async def reserve(self, key: str, deadline_s: float) -> int:
        await self.inventory.Reserve(
            inventory_pb.ReserveRequest(
                channel=Channel.CHANNEL_SHOPIFY,
                channel_order_id=key,
                lines=[OrderLine(sku=self.sku_of(key), quantity=1)],
                paid=True,
            ),
            timeout=deadline_s,
        )
        return 0

    async def push_sample(self, key: str, deadline_s: float) -> int:
        """One sample a second of video time later than the last (one worker only)."""
        self._sample += 1
        sample = ingest_ev.VideoSampled(
            video_id=self.video_id,
            observed_at=stamp(self.published_at + timedelta(seconds=self._sample)),
            views=self._sample * 10,
            likes=self._sample,
        )

        async def requests() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
            yield ingest_pb2.PushVideoSamplesRequest(samples=[sample])

        reply = await self.ingest.PushVideoSamples(requests(), timeout=deadline_s)
        return int(reply.accepted)

    def start(self, load: Load) -> None:
        load.start("order", self.record_order, workers=2)
        load.start("reserve", self.reserve, workers=2)
        load.start("sample", self.push_sample, workers=1)


async def health_of(channel: grpc.aio.Channel) -> str:
    """The overall health a probe would read ("UNREACHABLE" when the call fails)."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
    except grpc.aio.AioRpcError as error:
        return f"UNREACHABLE ({error.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def outbox_depth(database_url: str, schema: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox"))
    finally:
        await conn.close()


async def reservations_by_order(database_url: str, schema: str) -> dict[str, int]:
    """channel_order_id -> how many StockReserved events the ledger holds for it."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(f"SELECT data FROM {schema}.events WHERE type = $1", RESERVED)
    finally:
        await conn.close()
    counts: dict[str, int] = {}
    for row in rows:
        event = inventory_ev.StockReserved.FromString(row["data"])
        counts[event.channel_order_id] = counts.get(event.channel_order_id, 0) + 1
    return counts


async def reserved_in_read_model(inventory: InventorySyncServiceStub, skus: list[str]) -> int:
    total = 0
    for sku in skus:
        reply = await inventory.GetStock(inventory_pb.GetStockRequest(sku=sku), timeout=5)
        total += sum(w.reserved for w in reply.warehouses)
    return total


async def stream_count(nc: NATS, stream: str, subjects: str) -> int:
    info = await nc.jetstream().stream_info(stream, subjects_filter=subjects)
    return sum((info.state.subjects or {}).values())
