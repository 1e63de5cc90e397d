"""The front door's use cases: register videos, take sample streams, record orders.

Accepted facts go out through the outbox in the transaction that remembers them, with
deterministic event ids (`Nats-Msg-Id`), so a client that retries a stream after a broken
connection creates no duplicates: the repeated samples are recognised and not sent again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Generic, TypeVar

import asyncpg
from google.protobuf.message import Message
from pulsestock.bus.codec import subject_for
from pulsestock.clock import Clock
from pulsestock.errors import InvalidArgument, Validator
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.group_commit import GroupCommit
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.ingest.domain.orders import LISTING_ID_RULE, valid_listing_id
from pulsestock.ingest.domain.samples import (
    MAX_SAMPLES_PER_MESSAGE,
    AnySample,
    LiveSample,
    SampleKey,
    Verdict,
    Video,
    VideoSample,
    judge_in_order,
    judge_live_sample,
    judge_video_sample,
    keys_to_recheck,
)
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

SERVICE = "ingest"
EVENT_IDS = uuid.UUID("6f1c3c6e-3f0b-4b7e-9a55-2f3d1a0c9b21")  # namespace of ingest's ids
Sample = TypeVar("Sample", ev.VideoSampled, ev.LiveSampled)


def event_id(*parts: str) -> uuid.UUID:
    """The same fact always gets the same id (and so the same Nats-Msg-Id)."""
    return uuid.uuid5(EVENT_IDS, "|".join(parts))


def order_partition_key(lines: Iterable[tuple[str, str]]) -> str:
    """An order's events are keyed by its first line's SKU (the partition that owns that
    SKU's ledger sees them in order); lines that came with only a listing id are passed
    over, and an order none of whose lines has a SKU is keyed by its first listing id.
    `lines` are (sku, listing_id) pairs."""
    pairs = list(lines)
    return next(
        (sku for sku, _ in pairs if sku),
        next((listing_id for _, listing_id in pairs if listing_id), ""),
    )


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
    judge: Callable[[Sequence[Sample]], Awaitable[list[str]]],
) -> Tally:
    """Count a stream's samples message by message (indexes run across the whole stream);
    an oversize message is rejected whole. The next message is read only once this one is
    committed: a fast client waits (HTTP/2 flow control) instead of filling our memory."""
    tally = Tally()
    index = 0
    async for batch in batches:
        if len(batch) > MAX_SAMPLES_PER_MESSAGE:
            for offset in range(len(batch)):
                tally.reject(
                    index + offset, f"message holds more than {MAX_SAMPLES_PER_MESSAGE} samples"
                )
        else:
            for offset, verdict in enumerate(await judge(batch)):
                if verdict in (Verdict.ACCEPT, Verdict.DUPLICATE):
                    tally.accepted += 1
                else:
                    tally.reject(index + offset, verdict)
        index += len(batch)
    return tally


def _per_message(verdicts: list[str], messages: Sequence[Sequence[object]]) -> list[list[str]]:
    out, at = [], 0
    for message in messages:
        out.append(verdicts[at : at + len(message)])
        at += len(message)
    return out


def _video_sample(proto: ev.VideoSampled) -> VideoSample | None:
    if not proto.HasField("observed_at"):
        return None
    return VideoSample(
        proto.video_id,
        proto.observed_at.ToDatetime(tzinfo=UTC),
        proto.views,
        proto.likes,
        proto.shares,
        proto.comments,
    )


def _live_sample(proto: ev.LiveSampled) -> LiveSample | None:
    if not proto.HasField("observed_at"):
        return None
    return LiveSample(
        proto.live_id,
        tuple(proto.skus),
        proto.observed_at.ToDatetime(tzinfo=UTC),
        proto.concurrent_viewers,
        proto.interactions,
        proto.orders_so_far,
    )


async def _remember_video_samples(conn: asyncpg.Connection, accepted: list[VideoSample]) -> None:
    """Each accepted sample, and each video's newest one on its row (one statement)."""
    await conn.execute(
        "WITH s AS (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[],"
        "   $4::bigint[], $5::bigint[], $6::bigint[])"
        "   AS s(video_id, observed_at, views, likes, shares, comments)),"
        " stored AS (INSERT INTO video_samples SELECT * FROM s)"
        " UPDATE videos v SET last_observed_at = n.observed_at, last_views = n.views,"
        "   last_likes = n.likes, last_shares = n.shares, last_comments = n.comments"
        " FROM (SELECT DISTINCT ON (video_id) * FROM s ORDER BY video_id, observed_at DESC) n"
        " WHERE v.video_id = n.video_id",
        [s.video_id for s in accepted],
        [s.observed_at for s in accepted],
        [s.views for s in accepted],
        [s.likes for s in accepted],
        [s.shares for s in accepted],
        [s.comments for s in accepted],
    )


async def _remember_live_samples(conn: asyncpg.Connection, accepted: list[LiveSample]) -> None:
    await conn.execute(
        "WITH s AS (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[],"
        "   $4::bigint[], $5::bigint[]) AS s(live_id, observed_at, viewers, interactions,"
        "   orders_so_far)),"
        " stored AS (INSERT INTO live_samples SELECT * FROM s)"
        " INSERT INTO live_latest (live_id, observed_at, interactions, orders_so_far, viewers)"
        " SELECT DISTINCT ON (live_id) live_id, observed_at, interactions, orders_so_far, viewers"
        " FROM s ORDER BY live_id, observed_at DESC"
        " ON CONFLICT (live_id) DO UPDATE SET observed_at = excluded.observed_at,"
        " interactions = excluded.interactions, orders_so_far = excluded.orders_so_far,"
        " viewers = excluded.viewers",
        [s.live_id for s in accepted],
        [s.observed_at for s in accepted],
        [s.concurrent_viewers for s in accepted],
        [s.interactions for s in accepted],
        [s.orders_so_far for s in accepted],
    )


def _video_sample_row(row: asyncpg.Record) -> VideoSample:
    return VideoSample(
        row["video_id"],
        row["observed_at"],
        row["views"],
        row["likes"],
        row["shares"],
        row["comments"],
    )


def _live_sample_row(row: asyncpg.Record) -> LiveSample:
    return LiveSample(
        row["live_id"],
        (),
        row["observed_at"],
        row["viewers"],
        row["interactions"],
        row["orders_so_far"],
    )


@dataclass(frozen=True)
class _SampleKind(Generic[AnySample]):
    """What differs between video and live samples on their way in."""

    event: str  # the first part of an accepted sample's event identity
    id_column: str  # the sample's source (video or live session) in `table` and its rows
    table: str  # every accepted sample, to recognise an older one sent again
    from_row: Callable[[asyncpg.Record], AnySample]
    remember: Callable[[asyncpg.Connection, list[AnySample]], Awaitable[None]]

    def source_of(self, sample: AnySample) -> str:
        return str(getattr(sample, self.id_column))


VIDEO = _SampleKind(
    "video_sampled", "video_id", "video_samples", _video_sample_row, _remember_video_samples
)
LIVE = _SampleKind(
    "live_sampled", "live_id", "live_samples", _live_sample_row, _remember_live_samples
)


async def _accepted_at(
    conn: asyncpg.Connection, kind: _SampleKind[AnySample], keys: Sequence[SampleKey]
) -> dict[SampleKey, AnySample]:
    """The samples accepted before at these moments (one query, and only when a retried
    stream resends some)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        f"SELECT t.* FROM {kind.table} t JOIN unnest($1::text[], $2::timestamptz[])"
        f" AS k({kind.id_column}, observed_at) USING ({kind.id_column}, observed_at)",
        [source for source, _ in keys],
        [observed_at for _, observed_at in keys],
    )
    return {(r[kind.id_column], r["observed_at"]): kind.from_row(r) for r in rows}


class Ingestion:
    def __init__(self, store: EventStore, clock: Clock, partitions: int) -> None:
        self.store = store
        self.clock = clock
        self.partitions = partitions
        # Concurrent streams share transactions (group commit).
        self._video_commits = GroupCommit(self._judge_video_messages)
        self._live_commits = GroupCommit(self._judge_live_messages)

    def _message(
        self, message: Message, *, key: str, subject_of: str, identity: tuple[str, ...]
    ) -> tuple[str, NewEvent, str]:
        event = NewEvent.of(message, event_id=event_id(*identity))
        return (subject_for(SERVICE, event.type, key, self.partitions), event, subject_of)

    # --- videos -----------------------------------------------------------------------------

    async def register_video(self, request: ev.VideoRegistered) -> bool:
        """Register or update a video; True when it was new."""
        v = Validator()
        v.check(valid_id(request.video_id), "video_id", ID_RULE)
        v.check(0 < len(request.skus) <= 100, "skus", "must list 1 to 100 SKUs")
        for index, sku in enumerate(request.skus):
            v.check(valid_id(sku), f"skus[{index}]", "malformed SKU")
        v.check(valid_id(request.creator_id), "creator_id", ID_RULE)
        v.check(request.creator_followers >= 0, "creator_followers", "must not be negative")
        v.check(
            not request.seller_id or valid_id(request.seller_id),
            "seller_id",
            f"{ID_RULE} (or empty)",
        )
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
        return await _tally_stream(batches, self._video_commits.submit)

    async def _judge_video_messages(
        self, messages: list[Sequence[ev.VideoSampled]]
    ) -> list[list[str]]:
        """Judge and remember the messages of all streams waiting now in one transaction."""
        now = self.clock()
        protos = [proto for message in messages for proto in message]
        async with self.store.pool.acquire() as conn, conn.transaction():
            videos: dict[str, Video] = {}
            latest: dict[str, VideoSample] = {}
            for row in await conn.fetch(
                # Sorted, so two writers lock shared videos in the same order (no deadlock).
                "SELECT * FROM videos WHERE video_id = ANY($1::text[]) ORDER BY video_id"
                " FOR NO KEY UPDATE",
                sorted({proto.video_id for proto in protos}),
            ):
                videos[row["video_id"]] = Video(row["video_id"], row["published_at"])
                if row["last_observed_at"] is not None:
                    latest[row["video_id"]] = VideoSample(
                        row["video_id"],
                        row["last_observed_at"],
                        row["last_views"],
                        row["last_likes"],
                        row["last_shares"],
                        row["last_comments"],
                    )

            def judge(
                sample: VideoSample, previous: VideoSample | None, then: VideoSample | None
            ) -> str:
                video = videos.get(sample.video_id)
                return judge_video_sample(sample, video, previous, now, accepted_then=then)

            verdicts = await self._judge_in_order(
                conn, VIDEO, protos, [_video_sample(p) for p in protos], latest, judge
            )
        return _per_message(verdicts, messages)

    # --- live sessions -------------------------------------------------------------------------

    async def push_live_samples(self, batches: AsyncIterator[Sequence[ev.LiveSampled]]) -> Tally:
        return await _tally_stream(batches, self._live_commits.submit)

    async def _judge_live_messages(
        self, messages: list[Sequence[ev.LiveSampled]]
    ) -> list[list[str]]:
        now = self.clock()
        protos = [proto for message in messages for proto in message]
        async with self.store.pool.acquire() as conn, conn.transaction():
            latest = {
                row["live_id"]: _live_sample_row(row)
                for row in await conn.fetch(
                    "SELECT * FROM live_latest WHERE live_id = ANY($1::text[]) ORDER BY live_id"
                    " FOR UPDATE",
                    sorted({proto.live_id for proto in protos}),
                )
            }

            def judge(
                sample: LiveSample, previous: LiveSample | None, then: LiveSample | None
            ) -> str:
                return judge_live_sample(sample, previous, now, accepted_then=then)

            verdicts = await self._judge_in_order(
                conn, LIVE, protos, [_live_sample(p) for p in protos], latest, judge
            )
        return _per_message(verdicts, messages)

    # --- both kinds of samples -----------------------------------------------------------------

    async def _judge_in_order(
        self,
        conn: asyncpg.Connection,
        kind: _SampleKind[AnySample],
        protos: Sequence[Message],
        samples: Sequence[AnySample | None],
        latest: dict[str, AnySample],
        judge: Callable[[AnySample, AnySample | None, AnySample | None], str],
    ) -> list[str]:
        """A verdict per sample (domain `judge_in_order`); the accepted are remembered and
        queued for publishing in the caller's transaction, which holds the sources' rows
        locked, so `latest` and what was accepted before cannot change underneath."""
        earlier = await _accepted_at(conn, kind, keys_to_recheck(samples, latest, kind.source_of))
        verdicts = judge_in_order(samples, latest, earlier, kind.source_of, judge)
        accepted: list[AnySample] = []
        outgoing = []
        for proto, sample, verdict in zip(protos, samples, verdicts, strict=True):
            if sample is None or verdict != Verdict.ACCEPT:
                continue
            source = kind.source_of(sample)
            accepted.append(sample)
            outgoing.append(
                self._message(
                    proto,
                    key=source,
                    subject_of=source,
                    identity=(kind.event, source, sample.observed_at.isoformat()),
                )
            )
        if accepted:
            await kind.remember(conn, accepted)
            await self.store.enqueue_messages(outgoing, conn=conn)
        return verdicts

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
            if v.check(
                bool(line.sku or line.listing_id),
                f"order.lines[{index}].sku",
                "a line needs a sku or a listing_id",
            ):
                v.check(
                    not line.sku or valid_id(line.sku), f"order.lines[{index}].sku", "malformed SKU"
                )
            v.check(
                not line.listing_id or valid_listing_id(line.listing_id),
                f"order.lines[{index}].listing_id",
                f"{LISTING_ID_RULE} (or empty)",
            )
            v.check(
                0 < line.quantity <= 100_000,
                f"order.lines[{index}].quantity",
                "must be 1 to 100000",
            )
        v.check(
            not order.marketplace_id or valid_id(order.marketplace_id),
            "order.marketplace_id",
            f"{ID_RULE} (or empty)",
        )
        v.raise_if_invalid()
        return await self.publish_order(order)

    async def publish_order(self, message: ev.OrderPlaced) -> bool:
        """One OrderPlaced per order (channel webhooks go through ChannelOrders instead).
        True when the order had been recorded before and nothing new was published."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO recorded_orders (channel, channel_order_id, kind) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                message.channel,
                message.channel_order_id,
                "placed",
            )
            if not fresh:
                return True
            identity = ("order_placed", str(message.channel), message.channel_order_id)
            await self.store.enqueue_messages(
                [
                    self._message(
                        message,
                        key=order_partition_key(
                            (line.sku, line.listing_id) for line in message.lines
                        ),
                        subject_of=message.channel_order_id,
                        identity=identity,
                    )
                ],
                conn=conn,
            )
        return False
