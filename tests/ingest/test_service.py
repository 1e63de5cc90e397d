"""ingest over real gRPC, PostgreSQL and NATS JetStream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.aio.client import Client as NATS
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub as Stub
from pulsestock.v1.inventory_sync_pb2 import GetStockRequest, ReceiveRequest
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import RunningService, running_service
from tests.helpers.waiting import backends_waiting_on_lock


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


NOW = datetime.now(UTC)


async def register(stub: Stub, video_id: str = "vid-1") -> bool:
    reply = await stub.RegisterVideo(
        pb.RegisterVideoRequest(
            video_id=video_id,
            skus=["MUG-1"],
            creator_id="creator-9",
            creator_followers=120_000,
            published_at=stamp(NOW - timedelta(hours=2)),
            channel=Channel.CHANNEL_TIKTOK_SHOP,
        ),
        timeout=10,
    )
    return reply.created


def video_sample(minutes_ago: float, views: int, video_id: str = "vid-1") -> ev.VideoSampled:
    return ev.VideoSampled(
        video_id=video_id,
        observed_at=stamp(NOW - timedelta(minutes=minutes_ago)),
        views=views,
        likes=views // 10,
        shares=views // 100,
        comments=views // 200,
    )


async def push(stub: Stub, *messages: list[ev.VideoSampled]) -> pb.PushSamplesResponse:
    async def requests() -> AsyncIterator[pb.PushVideoSamplesRequest]:
        for samples in messages:
            yield pb.PushVideoSamplesRequest(samples=samples)

    return await stub.PushVideoSamples(requests(), timeout=30)


async def stream_messages(bus: NATS, subjects: str) -> int:
    info = await bus.jetstream().stream_info("INGEST", subjects_filter=subjects)
    return sum((info.state.subjects or {}).values())


async def test_samples_are_validated_counted_and_published_once(stub: Stub, bus: NATS) -> None:
    assert await register(stub)
    assert not await register(stub)  # registering again updates, creates nothing new
    good = [video_sample(50, 1000), video_sample(40, 2500), video_sample(30, 9000)]
    bad = [
        video_sample(20, 8000),  # views went backwards
        video_sample(10, 9500, video_id="unknown-video"),
        ev.VideoSampled(video_id="vid-1", views=10),  # no observed_at
        video_sample(-30, 9900),  # 30 minutes in the future
    ]
    reply = await push(stub, good, bad)
    assert (reply.accepted, reply.rejected) == (3, 4)
    reasons = {r.index: r.reason for r in reply.rejections}
    assert "views went backwards (9000 -> 8000)" in reasons[3]
    assert "unknown video unknown-video" in reasons[4]
    assert reasons[5] == "observed_at is required"
    assert "in the future" in reasons[6]

    async def published() -> bool:
        return await stream_messages(bus, "ingest.video_sampled.>") == 3

    await eventually(published, what="three samples in JetStream")

    # The client's connection broke and it sends the whole stream again: nothing new goes out.
    again = await push(stub, good)
    assert (again.accepted, again.rejected) == (3, 0)
    more = await push(stub, [video_sample(5, 12_000)])
    assert more.accepted == 1

    async def four() -> bool:
        return await stream_messages(bus, "ingest.video_sampled.>") == 4

    await eventually(four, what="the one new sample")
    consumer = await bus.jetstream().subscribe("ingest.video_sampled.>", ordered_consumer=True)
    first = await consumer.next_msg(timeout=5)
    assert first.headers is not None
    assert first.headers["ce-type"] == "pulsestock.v1.VideoSampled"
    assert first.headers["Nats-Msg-Id"] == first.headers["ce-id"]


async def test_an_oversize_message_is_rejected_whole(stub: Stub) -> None:
    await register(stub)
    reply = await push(stub, [video_sample(59 - i / 100, 1000 + i) for i in range(1001)])
    assert (reply.accepted, reply.rejected) == (0, 1001)
    assert "more than 1000 samples" in reply.rejections[0].reason


async def test_live_samples(stub: Stub) -> None:
    async def requests() -> AsyncIterator[pb.PushLiveSamplesRequest]:
        yield pb.PushLiveSamplesRequest(
            samples=[
                ev.LiveSampled(
                    live_id="live-1",
                    skus=["MUG-1"],
                    observed_at=stamp(NOW - timedelta(minutes=3)),
                    concurrent_viewers=800,
                    interactions=120,
                    orders_so_far=4,
                ),
                ev.LiveSampled(
                    live_id="live-1",
                    skus=["MUG-1"],
                    observed_at=stamp(NOW - timedelta(minutes=2)),
                    concurrent_viewers=1500,
                    interactions=90,
                    orders_so_far=9,
                ),
                ev.LiveSampled(
                    live_id="live-1",
                    skus=[],
                    observed_at=stamp(NOW),
                    concurrent_viewers=1,
                    interactions=200,
                    orders_so_far=9,
                ),
            ]
        )

    reply = await stub.PushLiveSamples(requests(), timeout=10)
    assert (reply.accepted, reply.rejected) == (1, 2)
    assert "interactions went backwards" in reply.rejections[0].reason
    assert "SKU" in reply.rejections[1].reason


def live_sample(minutes_ago: int, viewers: int) -> ev.LiveSampled:
    return ev.LiveSampled(
        live_id="live-2",
        skus=["MUG-1"],
        observed_at=stamp(NOW - timedelta(minutes=minutes_ago)),
        concurrent_viewers=viewers,
        interactions=1000 - minutes_ago,
        orders_so_far=100 - minutes_ago,
    )


async def test_a_resent_live_stream_is_recognised_and_published_once(stub: Stub, bus: NATS) -> None:
    async def push_live(samples: list[ev.LiveSampled]) -> pb.PushSamplesResponse:
        async def requests() -> AsyncIterator[pb.PushLiveSamplesRequest]:
            yield pb.PushLiveSamplesRequest(samples=samples)

        return await stub.PushLiveSamples(requests(), timeout=10)

    sent = [live_sample(m, 100 + m) for m in (9, 7, 5)]
    assert (await push_live(sent)).accepted == 3
    again = await push_live([*sent, live_sample(3, 50)])
    assert (again.accepted, again.rejected) == (4, 0)
    altered = await push_live([live_sample(7, 999)])  # the same moment, other counts
    assert "older than the last accepted sample" in altered.rejections[0].reason

    async def published() -> bool:
        return await stream_messages(bus, "ingest.live_sampled.>") == 4

    await eventually(published, what="four live samples in JetStream")


async def test_concurrent_streams_of_the_same_samples_publish_each_once(
    stub: Stub, bus: NATS
) -> None:
    """Streams retried in parallel land in shared transactions (group commit): a sample
    already accepted in the same batch or before is a duplicate, never a second event."""
    await register(stub, "vid-c")
    samples = [video_sample(60 - m, 1000 + 50 * m, video_id="vid-c") for m in range(30)]

    async def one_stream() -> pb.PushSamplesResponse:
        return await push(stub, *[samples[i : i + 3] for i in range(0, len(samples), 3)])

    replies = await asyncio.gather(*(one_stream() for _ in range(12)))
    assert [(r.accepted, r.rejected) for r in replies] == [(30, 0)] * 12

    async def published() -> bool:
        return await stream_messages(bus, "ingest.video_sampled.>") == 30

    await eventually(published, what="thirty samples in JetStream")


async def test_register_video_refuses_bad_fields_with_their_names(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterVideo(
            pb.RegisterVideoRequest(
                video_id="bad id",
                skus=[],
                creator_id="c",
                creator_followers=-1,
                seller_id="seller with spaces",
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    assert [v.field for v in details.field_violations] == [
        "video_id",
        "skus",
        "creator_followers",
        "seller_id",
        "published_at",
        "channel",
    ]


async def test_record_order_publishes_once_and_inventory_reserves_it(
    stub: Stub, infra: Infra, nats_url: str
) -> None:
    order = ev.OrderPlaced(
        channel=Channel.CHANNEL_SHOPIFY,
        channel_order_id="shop-1001",
        lines=[OrderLine(sku="MUG-1", quantity=2)],
    )
    schema = unique_name("inv")
    try:
        async with running_service(
            "inventory-sync", infra.database_url, nats_url, schema
        ) as inventory:
            inventory_stub = InventorySyncServiceStub(inventory.channel)
            await inventory_stub.Receive(
                ReceiveRequest(sku="MUG-1", warehouse_id="W1", quantity=5), timeout=10
            )
            first = await stub.RecordOrder(pb.RecordOrderRequest(order=order), timeout=10)
            second = await stub.RecordOrder(pb.RecordOrderRequest(order=order), timeout=10)
            assert (first.duplicate, second.duplicate) == (False, True)

            async def reserved() -> bool:
                stock = await inventory_stub.GetStock(GetStockRequest(sku="MUG-1"), timeout=10)
                return stock.available == 3 and sum(w.reserved for w in stock.warehouses) == 2

            await eventually(reserved, within=15, what="inventory-sync to reserve the order")
    finally:
        await drop_schema(infra.database_url, schema)


async def test_record_order_refuses_bad_orders(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordOrder(
            pb.RecordOrderRequest(order=ev.OrderPlaced(channel=0, channel_order_id="", lines=[])),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_fast_client_is_held_back_while_ingest_cannot_commit(
    ingest: RunningService, stub: Stub, infra: Infra
) -> None:
    """Backpressure: while the video's row is locked elsewhere nothing commits, ingest reads
    no further message, and the client's writes stop completing once gRPC's HTTP/2 flow
    control windows are full, instead of piling up in ingest's memory. Released, all count."""
    video = "v" * 120  # long ids: the windows fill with fewer samples to ingest afterwards
    await register(stub, video)
    start = NOW - timedelta(minutes=90)

    def message(number: int) -> pb.PushVideoSamplesRequest:
        first = number * 1000
        return pb.PushVideoSamplesRequest(
            samples=[
                ev.VideoSampled(
                    video_id=video,
                    observed_at=stamp(start + timedelta(milliseconds=20 * (first + i))),
                    views=first + i,
                )
                for i in range(1000)
            ]
        )

    size = message(0).ByteSize()  # ~140 kB
    total = 250  # ~35 MB: more than any flow control window lets through
    bound = 16 * 2**20 // size  # what gRPC's windows (and socket buffers) can hold, at most
    call = stub.PushVideoSamples(timeout=120)
    written = 0
    slowest_write = 0.0  # the longest a completed write took, in seconds
    stop_writing = asyncio.Event()

    async def write_fast() -> None:
        nonlocal written, slowest_write
        while written < total and not stop_writing.is_set():
            began = time.monotonic()
            await call.write(message(written))
            slowest_write = max(slowest_write, time.monotonic() - began)
            written += 1
        await call.done_writing()

    locker = await asyncpg.connect(infra.database_url)
    observer = await asyncpg.connect(infra.database_url)
    try:
        locking = locker.transaction()
        await locking.start()
        await locker.execute(
            f"SELECT 1 FROM {ingest.settings.schema}.videos WHERE video_id = $1 FOR UPDATE", video
        )
        writing = asyncio.create_task(write_fast())

        async def ingest_waits_on_the_lock() -> bool:
            waiting = await backends_waiting_on_lock(observer, locker.get_server_pid())
            return any("FROM videos" in query and "FOR NO KEY UPDATE" in query for query in waiting)

        # ingest has read the first message and its transaction waits on our row lock: it
        # commits nothing, and it reads the next message only once this one is committed.
        await eventually(ingest_waits_on_the_lock, within=30, what="ingest to wait on the lock")
        # That the client's writes have stopped is the one thing no condition shows: a write
        # blocked by flow control and a slow one look alike. So wait for a quiet spell, long
        # against the slowest write so far (a slow machine only makes it longer), and fail
        # only on what broken backpressure does: all `total` writes going through, or more
        # than `bound` of them, while nothing can commit.
        seen = -1
        while written != seen:
            seen = written
            await asyncio.wait({writing}, timeout=max(2.0, 20 * slowest_write))
            assert not writing.done(), f"{total * size} bytes went in while nothing committed"
            assert written <= bound, f"{written * size} bytes went in while nothing committed"
        assert await ingest_waits_on_the_lock()  # still held back by the lock, not failed
        held_back = written
        stop_writing.set()
        await locking.rollback()  # ingest commits again
    finally:
        await observer.close()
        await locker.close()
    await asyncio.wait_for(writing, 60)
    reply = await call
    assert (reply.accepted, reply.rejected) == (written * 1000, 0)
    # The writer always waits inside a write: the one held back went in after all, and
    # stop_writing (set before the lock went) let no other start.
    assert written == held_back + 1
    assert held_back * size < 16 * 2**20, held_back * size  # bounded by gRPC's windows
