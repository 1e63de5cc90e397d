"""The front door's use cases: register videos, take sample streams, record orders.

Accepted facts go out through the outbox in the transaction that remembers them, with
deterministic event ids (`Nats-Msg-Id`), so a client that retries a stream after a broken
connection creates no duplicates: the repeated samples are recognised and not sent again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message
from pulsestock.bus.codec import subject_for
from pulsestock.errors import InvalidArgument, Validator
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.ingest.domain.samples import (
    MAX_SAMPLES_PER_MESSAGE,
    LiveSample,
    Verdict,
    Video,
    VideoSample,
    judge_live_sample,
    judge_video_sample,
    valid_id,
)
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

SERVICE = "ingest"
EVENT_IDS = uuid.UUID("6f1c3c6e-3f0b-4b7e-9a55-2f3d1a0c9b21")  # namespace of ingest's ids
Clock = Callable[[], datetime]
Sample = TypeVar("Sample", ev.VideoSampled, ev.LiveSampled)


def event_id(*parts: str) -> uuid.UUID:
    """The same fact always gets the same id (and so the same Nats-Msg-Id)."""
    return uuid.uuid5(EVENT_IDS, "|".join(parts))


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    rejections: list[tuple[int, str]] = field(default_factory=list)

    def reject(self, index: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < 1000:  # enough to act on; the counts say the rest
            self.rejections.append((index, reason))


async def _tally_stream(
    batches: AsyncIterator[Sequence[Sample]],
    handle: Callable[[Sequence[Sample], int, Tally], Awaitable[None]],
) -> Tally:
    """Count a stream's samples message by message (indexes run across the whole stream);
    an oversize message is rejected whole."""
    tally = Tally()
    index = 0
    async for batch in batches:
        if len(batch) > MAX_SAMPLES_PER_MESSAGE:
            for offset in range(len(batch)):
                tally.reject(
                    index + offset, f"message holds more than {MAX_SAMPLES_PER_MESSAGE} samples"
                )
        else:
            await handle(batch, index, tally)
        index += len(batch)
    return tally


def _video_sample(row: asyncpg.Record) -> VideoSample:
    return VideoSample(
        row["video_id"],
        row["observed_at"],
        row["views"],
        row["likes"],
        row["shares"],
        row["comments"],
    )


class Ingestion:
    def __init__(self, store: EventStore, clock: Clock, partitions: int) -> None:
        self.store = store
        self.clock = clock
        self.partitions = partitions

    def _message(
        self, message: Message, *, key: str, subject_of: str, identity: tuple[str, ...]
    ) -> tuple[str, NewEvent, str]:
        event = NewEvent.of(message, event_id=event_id(*identity))
        return (subject_for(SERVICE, event.type, key, self.partitions), event, subject_of)

    # --- videos -----------------------------------------------------------------------------

    async def register_video(self, request: ev.VideoRegistered) -> bool:
        """Register or update a video; True when it was new."""
        v = Validator()
        v.check(valid_id(request.video_id), "video_id", "must be 1-128 letters, digits or _.:-")
        v.check(0 < len(request.skus) <= 100, "skus", "must list 1 to 100 SKUs")
        for index, sku in enumerate(request.skus):
            v.check(valid_id(sku), f"skus[{index}]", "malformed SKU")
        v.check(valid_id(request.creator_id), "creator_id", "must be 1-128 letters, digits or _.:-")
        v.check(request.creator_followers >= 0, "creator_followers", "must not be negative")
        v.check(request.HasField("published_at"), "published_at", "is required")
        v.check(
            request.channel in Channel.values() and request.channel != Channel.CHANNEL_UNSPECIFIED,
            "channel",
            "must be a selling channel",
        )
        v.raise_if_invalid()
        published_at = request.published_at.ToDatetime(tzinfo=UTC)
        if published_at > self.clock():
            raise InvalidArgument.single("published_at", "is in the future")
        async with self.store.pool.acquire() as conn, conn.transaction():
            created = await conn.fetchval(
                "INSERT INTO videos (video_id, skus, creator_id, creator_followers, published_at,"
                " channel) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (video_id) DO UPDATE SET"
                " skus = excluded.skus, creator_id = excluded.creator_id,"
                " creator_followers = excluded.creator_followers,"
                " published_at = excluded.published_at, channel = excluded.channel"
                " RETURNING (xmax = 0)",
                request.video_id,
                list(request.skus),
                request.creator_id,
                request.creator_followers,
                published_at,
                request.channel,
            )
            content = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
            identity = ("video_registered", request.video_id, content)
            await self.store.enqueue_messages(
                [
                    self._message(
                        request,
                        key=request.video_id,
                        subject_of=request.video_id,
                        identity=identity,
                    )
                ],
                conn=conn,
            )
        return bool(created)

    async def push_video_samples(self, batches: AsyncIterator[Sequence[ev.VideoSampled]]) -> Tally:
        return await _tally_stream(batches, self._video_batch)

    async def _video_batch(
        self, batch: Sequence[ev.VideoSampled], first_index: int, tally: Tally
    ) -> None:
        now = self.clock()
        ids = list({s.video_id for s in batch})
        samples = [
            VideoSample(
                p.video_id,
                p.observed_at.ToDatetime(tzinfo=UTC),
                p.views,
                p.likes,
                p.shares,
                p.comments,
            )
            if p.HasField("observed_at")
            else None
            for p in batch
        ]
        async with self.store.pool.acquire() as conn, conn.transaction():
            videos = {
                r["video_id"]: Video(r["video_id"], r["published_at"])
                for r in await conn.fetch(
                    "SELECT video_id, published_at FROM videos WHERE video_id = ANY($1::text[])",
                    ids,
                )
            }
            latest = {
                r["video_id"]: _video_sample(r)
                for r in await conn.fetch(
                    "SELECT * FROM video_latest WHERE video_id = ANY($1::text[]) FOR UPDATE", ids
                )
            }
            earlier = await self._accepted_at(conn, samples, latest)
            outgoing = []
            accepted: list[VideoSample] = []
            for offset, (proto, sample) in enumerate(zip(batch, samples, strict=True)):
                if sample is None:
                    tally.reject(first_index + offset, "observed_at is required")
                    continue
                verdict = judge_video_sample(
                    sample,
                    videos.get(sample.video_id),
                    latest.get(sample.video_id),
                    now,
                    accepted_then=earlier.get((sample.video_id, sample.observed_at)),
                )
                if verdict == Verdict.DUPLICATE:
                    tally.accepted += 1
                    continue
                if verdict != Verdict.ACCEPT:
                    tally.reject(first_index + offset, verdict)
                    continue
                tally.accepted += 1
                latest[sample.video_id] = sample
                accepted.append(sample)
                outgoing.append(
                    self._message(
                        proto,
                        key=sample.video_id,
                        subject_of=sample.video_id,
                        identity=("video_sampled", sample.video_id, sample.observed_at.isoformat()),
                    )
                )
            if accepted:
                await self._remember(conn, accepted)
                await self.store.enqueue_messages(outgoing, conn=conn)

    @staticmethod
    async def _remember(conn: asyncpg.Connection, accepted: list[VideoSample]) -> None:
        """Each accepted sample's key and counters, and each video's newest sample."""
        columns = [
            [s.video_id for s in accepted],
            [s.observed_at for s in accepted],
            [s.views for s in accepted],
            [s.likes for s in accepted],
            [s.shares for s in accepted],
            [s.comments for s in accepted],
        ]
        rows = (
            "unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[],"
            " $6::bigint[])"
        )
        await conn.execute(f"INSERT INTO video_samples SELECT * FROM {rows}", *columns)
        await conn.execute(
            f"INSERT INTO video_latest SELECT DISTINCT ON (1) * FROM {rows} AS r"
            "   (video_id, observed_at, views, likes, shares, comments)"
            " ORDER BY 1, 2 DESC"
            " ON CONFLICT (video_id) DO UPDATE SET observed_at = excluded.observed_at,"
            " views = excluded.views, likes = excluded.likes, shares = excluded.shares,"
            " comments = excluded.comments",
            *columns,
        )

    @staticmethod
    async def _accepted_at(
        conn: asyncpg.Connection,
        samples: Sequence[VideoSample | None],
        latest: dict[str, VideoSample],
    ) -> dict[tuple[str, datetime], VideoSample]:
        """The samples accepted before at the times of this batch's late ones (one query)."""
        late = [
            s
            for s in samples
            if s is not None
            and s.video_id in latest
            and s.observed_at < latest[s.video_id].observed_at
        ]
        if not late:
            return {}
        rows = await conn.fetch(
            "SELECT v.* FROM video_samples v JOIN unnest($1::text[], $2::timestamptz[])"
            " AS k(video_id, observed_at) USING (video_id, observed_at)",
            [s.video_id for s in late],
            [s.observed_at for s in late],
        )
        return {(r["video_id"], r["observed_at"]): _video_sample(r) for r in rows}

    # --- live sessions -------------------------------------------------------------------------

    async def push_live_samples(self, batches: AsyncIterator[Sequence[ev.LiveSampled]]) -> Tally:
        return await _tally_stream(batches, self._live_batch)

    async def _live_batch(
        self, batch: Sequence[ev.LiveSampled], first_index: int, tally: Tally
    ) -> None:
        now = self.clock()
        ids = list({s.live_id for s in batch})
        async with self.store.pool.acquire() as conn, conn.transaction():
            latest = {
                r["live_id"]: LiveSample(
                    r["live_id"], (), r["observed_at"], 0, r["interactions"], r["orders_so_far"]
                )
                for r in await conn.fetch(
                    "SELECT * FROM live_latest WHERE live_id = ANY($1::text[]) FOR UPDATE", ids
                )
            }
            outgoing = []
            changed: dict[str, LiveSample] = {}
            for offset, proto in enumerate(batch):
                if not proto.HasField("observed_at"):
                    tally.reject(first_index + offset, "observed_at is required")
                    continue
                sample = LiveSample(
                    proto.live_id,
                    tuple(proto.skus),
                    proto.observed_at.ToDatetime(tzinfo=UTC),
                    proto.concurrent_viewers,
                    proto.interactions,
                    proto.orders_so_far,
                )
                verdict = judge_live_sample(sample, latest.get(sample.live_id), now)
                if verdict == Verdict.DUPLICATE:
                    tally.accepted += 1
                    continue
                if verdict != Verdict.ACCEPT:
                    tally.reject(first_index + offset, verdict)
                    continue
                tally.accepted += 1
                latest[sample.live_id] = changed[sample.live_id] = sample
                outgoing.append(
                    self._message(
                        proto,
                        key=sample.live_id,
                        subject_of=sample.live_id,
                        identity=("live_sampled", sample.live_id, sample.observed_at.isoformat()),
                    )
                )
            if changed:
                rows = list(changed.values())
                await conn.execute(
                    "INSERT INTO live_latest SELECT * FROM unnest($1::text[], $2::timestamptz[],"
                    " $3::bigint[], $4::bigint[]) ON CONFLICT (live_id) DO UPDATE SET"
                    " observed_at = excluded.observed_at, interactions = excluded.interactions,"
                    " orders_so_far = excluded.orders_so_far",
                    [s.live_id for s in rows],
                    [s.observed_at for s in rows],
                    [s.interactions for s in rows],
                    [s.orders_so_far for s in rows],
                )
                await self.store.enqueue_messages(outgoing, conn=conn)

    # --- orders --------------------------------------------------------------------------------

    async def record_order(self, order: ev.OrderPlaced) -> bool:
        """Publish an order once; True when it had been recorded before (nothing sent)."""
        v = Validator()
        v.check(
            order.channel in Channel.values() and order.channel != Channel.CHANNEL_UNSPECIFIED,
            "order.channel",
            "must be a selling channel",
        )
        v.check(valid_id(order.channel_order_id), "order.channel_order_id", "malformed order id")
        v.check(0 < len(order.lines) <= 100, "order.lines", "must hold 1 to 100 lines")
        for index, line in enumerate(order.lines):
            v.check(valid_id(line.sku), f"order.lines[{index}].sku", "malformed SKU")
            v.check(
                0 < line.quantity <= 100_000,
                f"order.lines[{index}].quantity",
                "must be 1 to 100000",
            )
        v.raise_if_invalid()
        return await self.publish_order(order)

    async def publish_order(
        self,
        message: ev.OrderPlaced | ev.OrderCancelled,
        delivery: tuple[str, str] | None = None,
    ) -> bool:
        """Shared by RecordOrder and the channel webhooks: one event per order and kind.
        `delivery` (source, id) is recorded in the same transaction: a redelivered webhook
        finds it and changes nothing. True when nothing new was published."""
        kind = "placed" if isinstance(message, ev.OrderPlaced) else "cancelled"
        key = (
            message.lines[0].sku
            if isinstance(message, ev.OrderPlaced)
            else message.channel_order_id
        )
        async with self.store.pool.acquire() as conn, conn.transaction():
            if delivery is not None and not await conn.fetchval(
                "INSERT INTO webhook_deliveries (source, delivery_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                *delivery,
            ):
                return True
            fresh = await conn.fetchval(
                "INSERT INTO recorded_orders (channel, channel_order_id, kind) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                message.channel,
                message.channel_order_id,
                kind,
            )
            if not fresh:
                return True
            identity = (f"order_{kind}", str(message.channel), message.channel_order_id)
            await self.store.enqueue_messages(
                [
                    self._message(
                        message, key=key, subject_of=message.channel_order_id, identity=identity
                    )
                ],
                conn=conn,
            )
        return False
