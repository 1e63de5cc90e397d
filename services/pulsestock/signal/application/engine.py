"""signal's engine: folds video samples into per-video metrics and detectors, SKU heat and
pulses; publishes pulse and heat events through the outbox in the same transaction as its
state, so a restart resumes from the snapshot and a redelivered or late sample (observed_at
not after the video's last) changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf.message import Message
from pulsestock.bus import Envelope
from pulsestock.bus.codec import subject_for
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.eventstore.store import CONNECTION_LOST
from pulsestock.metrics import PULSES_DETECTED
from pulsestock.signal.application.sample_window import SampleWindow
from pulsestock.signal.domain.detector import DetectorConfig, PulseDetector
from pulsestock.signal.domain.metrics import (
    DEFAULT_RULES,
    Rule,
    Sample,
    VideoMetrics,
    live_heat,
    live_metrics,
    metrics_of,
    video_heat,
)
from pulsestock.signal.domain.pulses import ENDED, Evidence, Pulse, advance
from pulsestock.telemetry import get_logger
from pulsestock.v1 import ingest_events_pb2 as ingest
from pulsestock.v1 import signal_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

log = get_logger(__name__)
SERVICE = "signal"
IDS = uuid.UUID("0b8f5a3e-7f5e-4a8c-8d1f-5b2a7e9c4d10")
# HeatUpdated per SKU: at most one per minute of content time, and at most one per second of
# wall time (a backfill or burst folds a SKU's samples far faster than they were observed;
# its latest heat then goes out when the second is up, by `flush_heat`).
HEAT_EVERY = timedelta(seconds=60)
HEAT_MIN_INTERVAL_S = 1.0
RULES_TTL_S = 5.0


def rules_scope(*, sku: str = "", seller_id: str = "") -> str | None:
    if sku:
        return f"sku:{sku}"
    return f"seller:{seller_id}" if seller_id else None


class RegistrationNotSeenYet(Exception):
    pass


@dataclass
class VideoState:
    video_id: str
    skus: list[str]
    followers: int
    published_at: datetime
    channel: int
    seller_id: str
    window: SampleWindow = field(default_factory=SampleWindow)
    detector: PulseDetector = field(default_factory=PulseDetector)
    heat: float = 0.0
    last_observed_at: datetime | None = None
    metrics: VideoMetrics | None = None


@dataclass
class LiveState:
    live_id: str
    skus: list[str]
    last_observed_at: datetime
    viewers: int
    interactions: int
    orders_so_far: int
    heat: float = 0.0


@dataclass
class SkuState:
    sku: str
    video_ids: set[str]
    live_ids: set[str] = field(default_factory=set)
    heat: float = 0.0
    heat_sent_at: datetime | None = None  # as_of of the last heat published
    heat_sent_wall: float = float("-inf")  # monotonic time of that
    pulse: Pulse | None = None
    view_velocity: float = 0.0  # of all its videos together
    like_rate: float = 0.0  # of its most recently sampled video
    share_rate: float = 0.0
    as_of: datetime | None = None


def _stamp(message: Message, field_name: str, moment: datetime) -> None:
    getattr(message, field_name).FromDatetime(moment)


class SignalEngine:
    def __init__(
        self,
        store: EventStore,
        partitions: int,
        config: DetectorConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.partitions = partitions
        self.config = config or DetectorConfig()
        self.monotonic = monotonic
        self.heat_pending: set[str] = set()  # SKUs whose latest heat waits for its second
        # Batches and heat flushes take turns: both move SKU state and write its snapshot.
        self._turn = asyncio.Lock()
        self.videos: dict[str, VideoState] = {}
        self.lives: dict[str, LiveState] = {}
        self.skus: dict[str, SkuState] = {}
        # Rules by scope ("sku:…", "seller:…"); None: nothing set there. Entries expire, so a
        # SetRules served by another replica takes effect here too.
        self._rules: dict[str, tuple[tuple[Rule, ...] | None, float]] = {}

    # --- consuming -----------------------------------------------------------------------------

    async def handle_batch(self, envelopes: list[Envelope]) -> list[Exception | None]:
        outgoing: list[tuple[str, NewEvent, str]] = []
        touched_videos: set[str] = set()
        touched_skus: set[str] = set()
        results: list[Exception | None] = []
        messages = [envelope.decode() for envelope in envelopes]
        async with self._turn_in_transaction() as conn:
            await self._preload(conn, messages)
            for message in messages:
                result: Exception | None = None
                if isinstance(message, ingest.VideoRegistered):
                    await self._register(conn, message)
                elif isinstance(message, ingest.VideoSampled):
                    known = await self._sample(
                        conn, message, touched_videos, touched_skus, outgoing
                    )
                    if not known:
                        # ingest accepts samples of registered videos only: the registration
                        # is on its way (a redelivery overtook it). Try this sample again.
                        result = RegistrationNotSeenYet(message.video_id)
                elif isinstance(message, ingest.LiveSampled):
                    await self._live(conn, message, touched_skus, outgoing)
                results.append(result)
            await self._persist(conn, touched_videos, touched_skus)
            if outgoing:
                await self.store.enqueue_messages(outgoing, conn=conn)
        return results

    async def _register(self, conn: asyncpg.Connection, message: ingest.VideoRegistered) -> None:
        published_at = message.published_at.ToDatetime(tzinfo=UTC)
        await conn.execute(
            "INSERT INTO videos (video_id, skus, creator_followers, published_at, channel,"
            " seller_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (video_id) DO UPDATE SET"
            " skus = excluded.skus, creator_followers = excluded.creator_followers,"
            " published_at = excluded.published_at, channel = excluded.channel,"
            " seller_id = excluded.seller_id",
            message.video_id,
            list(message.skus),
            message.creator_followers,
            published_at,
            message.channel,
            message.seller_id,
        )
        state = self.videos.get(message.video_id)
        if state is not None:
            state.skus, state.followers = list(message.skus), message.creator_followers
            state.published_at, state.channel = published_at, message.channel
            state.seller_id = message.seller_id
        for sku in message.skus:
            if sku in self.skus:
                self.skus[sku].video_ids.add(message.video_id)

    async def _video(self, conn: asyncpg.Connection, video_id: str) -> VideoState | None:
        if video_id not in self.videos:
            await self._load_videos(conn, [video_id])
        return self.videos.get(video_id)

    async def _load_videos(self, conn: asyncpg.Connection, video_ids: list[str]) -> None:
        """Bring videos (registration and snapshot) into memory, one query for all."""
        for row in await conn.fetch(
            "SELECT v.*, s.last_observed_at, s.sample_window, s.detector, s.heat FROM videos v"
            " LEFT JOIN video_state s USING (video_id) WHERE v.video_id = ANY($1::text[])",
            video_ids,
        ):
            state = VideoState(
                row["video_id"],
                list(row["skus"]),
                row["creator_followers"],
                row["published_at"],
                row["channel"],
                row["seller_id"],
            )
            if row["last_observed_at"] is not None:
                state.last_observed_at = row["last_observed_at"]
                state.window = SampleWindow.unpack(row["sample_window"])
                state.detector = PulseDetector.restore(row["detector"], self.config)
                state.heat = row["heat"]
                state.metrics = metrics_of(state.window.samples)
            self.videos[state.video_id] = state

    async def _sku(self, conn: asyncpg.Connection, sku: str) -> SkuState:
        if sku not in self.skus:
            await self._load_skus(conn, [sku])
        return self.skus[sku]

    async def _load_skus(self, conn: asyncpg.Connection, skus: list[str]) -> None:
        """Bring SKUs (their videos, live sessions, open pulse and heat) into memory: four
        queries for all of them."""
        states = {sku: SkuState(sku, set()) for sku in skus}
        for row in await conn.fetch(
            "SELECT s.sku, v.video_id FROM videos v CROSS JOIN unnest(v.skus) AS s(sku)"
            " WHERE v.skus && $1::text[] AND s.sku = ANY($1::text[])",
            skus,
        ):
            states[row["sku"]].video_ids.add(row["video_id"])
        for row in await conn.fetch("SELECT * FROM live_state WHERE skus && $1::text[]", skus):
            for sku in set(row["skus"]) & states.keys():
                states[sku].live_ids.add(row["live_id"])
            self.lives.setdefault(row["live_id"], _live_state(row))
        for pulse in await conn.fetch(
            "SELECT * FROM pulses WHERE sku = ANY($1::text[]) AND phase <> 'ended'", skus
        ):
            states[pulse["sku"]].pulse = Pulse(
                pulse["pulse_id"],
                pulse["sku"],
                pulse["detected_at"],
                pulse["hot_channel"],
                [Evidence(**e) for e in pulse["evidence"]],
                pulse["phase"],
                pulse["peak_heat"],
            )
        for heat in await conn.fetch("SELECT * FROM sku_heat WHERE sku = ANY($1::text[])", skus):
            state = states[heat["sku"]]
            state.heat, state.as_of = heat["heat"], heat["as_of"]
            state.heat_sent_at = heat["published_at"]
            if state.heat_sent_at != state.as_of:  # heat folded but not sent before a stop
                self.heat_pending.add(state.sku)
            state.view_velocity = heat["view_velocity"]
            state.like_rate, state.share_rate = heat["like_rate"], heat["share_rate"]
        self.skus.update(states)

    async def _preload(self, conn: asyncpg.Connection, messages: list[Message]) -> None:
        """What this batch's samples need and memory lacks, loaded set-based up front (after
        a restart, or for new videos, one query per video and four per SKU added up)."""
        videos = {
            m.video_id
            for m in messages
            if isinstance(m, ingest.VideoSampled) and m.video_id not in self.videos
        }
        if videos:
            await self._load_videos(conn, sorted(videos))
        skus = {
            sku
            for m in messages
            if isinstance(m, ingest.VideoSampled) and m.video_id in self.videos
            for sku in self.videos[m.video_id].skus
        } | {sku for m in messages if isinstance(m, ingest.LiveSampled) for sku in m.skus}
        missing = sorted(skus - self.skus.keys())
        if missing:
            await self._load_skus(conn, missing)

    async def _live(
        self,
        conn: asyncpg.Connection,
        message: ingest.LiveSampled,
        touched_skus: set[str],
        outgoing: list[tuple[str, NewEvent, str]],
    ) -> None:
        at = message.observed_at.ToDatetime(tzinfo=UTC)
        live = self.lives.get(message.live_id)
        if live is None:
            row = await conn.fetchrow(
                "SELECT * FROM live_state WHERE live_id = $1", message.live_id
            )
            if row is not None:
                live = self.lives[row["live_id"]] = _live_state(row)
        if live is not None and at <= live.last_observed_at:
            return  # a duplicate or late: it changes nothing
        previous = (live.last_observed_at, live.interactions, live.orders_so_far) if live else None
        metrics = live_metrics(
            message.concurrent_viewers, message.interactions, message.orders_so_far, at, previous
        )
        live = LiveState(
            message.live_id,
            list(message.skus),
            at,
            message.concurrent_viewers,
            message.interactions,
            message.orders_so_far,
            live_heat(metrics),
        )
        self.lives[live.live_id] = live
        await conn.execute(
            "INSERT INTO live_state VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (live_id)"
            " DO UPDATE SET skus = excluded.skus, last_observed_at = excluded.last_observed_at,"
            " viewers = excluded.viewers, interactions = excluded.interactions,"
            " orders_so_far = excluded.orders_so_far, heat = excluded.heat",
            live.live_id,
            live.skus,
            at,
            live.viewers,
            live.interactions,
            live.orders_so_far,
            live.heat,
        )
        for sku in live.skus:
            state = await self._sku(conn, sku)
            state.live_ids.add(live.live_id)
            touched_skus.add(sku)
            self._refresh_heat(state, at, outgoing)

    async def _rules_for(
        self, conn: asyncpg.Connection, sku: str, seller_id: str
    ) -> tuple[Rule, ...]:
        """The SKU's own rules, else its seller's, else the defaults."""
        for scope in (rules_scope(sku=sku), rules_scope(seller_id=seller_id)):
            if scope is None:
                continue
            cached = self._rules.get(scope)
            if cached is None or self.monotonic() - cached[1] > RULES_TTL_S:
                row = await conn.fetchval("SELECT rules FROM rules WHERE scope = $1", scope)
                rules = tuple(Rule(**r) for r in row) if row is not None else None
                cached = self._rules[scope] = (rules, self.monotonic())
            if cached[0] is not None:
                return cached[0]
        return DEFAULT_RULES

    async def _sample(
        self,
        conn: asyncpg.Connection,
        message: ingest.VideoSampled,
        touched_videos: set[str],
        touched_skus: set[str],
        outgoing: list[tuple[str, NewEvent, str]],
    ) -> bool:
        """Fold one sample; False when its video is not known yet."""
        video = await self._video(conn, message.video_id)
        if video is None:
            return False
        at = message.observed_at.ToDatetime(tzinfo=UTC)
        if video.last_observed_at is not None and at <= video.last_observed_at:
            return True  # a duplicate or late: it changes nothing
        video.window.add(Sample(at, message.views, message.likes, message.shares, message.comments))
        video.last_observed_at = at
        touched_videos.add(video.video_id)
        metrics = metrics_of(video.window.samples)
        video.metrics = metrics
        if metrics is None:
            return True
        step = video.detector.update(metrics.view_velocity)
        video.heat = video_heat(metrics.view_velocity, video.followers, video.published_at, at)
        for sku in video.skus:
            state = await self._sku(conn, sku)
            state.video_ids.add(video.video_id)
            touched_skus.add(sku)
            evidence = []
            if step.alert:
                evidence.append(
                    Evidence(
                        "detector",
                        "CUSUM of the robust z-score of log view velocity crossed its alarm level",
                        {"z": step.z, "score": step.score, **metrics.as_dict()},
                        video.video_id,
                    )
                )
            for rule in await self._rules_for(conn, sku, video.seller_id):
                if rule.fires(metrics):
                    evidence.append(
                        Evidence(
                            f"rule:{rule.name}",
                            f"{rule.metric} {rule.op} {rule.threshold}",
                            metrics.as_dict(),
                            video.video_id,
                        )
                    )
            self._refresh_heat(state, at, outgoing, video, evidence)
        return True

    def _refresh_heat(
        self,
        state: SkuState,
        at: datetime,
        outgoing: list[tuple[str, NewEvent, str]],
        video: VideoState | None = None,
        evidence: list[Evidence] | None = None,
    ) -> None:
        """Recompute the SKU's heat from its videos and live sessions; start a pulse on new
        evidence, move an active one along, and publish heat at a bounded rate."""
        videos = [self.videos[v] for v in state.video_ids if v in self.videos]
        lives = [self.lives[v] for v in state.live_ids if v in self.lives]
        state.heat = sum(v.heat for v in videos) + sum(live.heat for live in lives)
        state.view_velocity = sum(v.metrics.view_velocity for v in videos if v.metrics)
        if video is not None and video.metrics is not None:
            state.like_rate, state.share_rate = video.metrics.like_rate, video.metrics.share_rate
        state.as_of = at
        changed = False
        if state.pulse is None and evidence and video is not None:
            pulse_id = str(uuid.uuid5(IDS, f"pulse|{state.sku}|{at.isoformat()}"))
            hot = (
                Channel.Name(Channel.ValueType(video.channel))
                if video.channel
                else "CHANNEL_TIKTOK_SHOP"
            )
            state.pulse = Pulse(pulse_id, state.sku, at, hot, evidence, peak_heat=state.heat)
            detected = ev.PulseDetected(
                pulse_id=pulse_id,
                sku=state.sku,
                video_ids=sorted({e.video_id for e in evidence}),
                hot_channel=hot,
                evidence=[
                    ev.PulseEvidence(
                        source=e.source, description=e.description, metrics=_finite(e.metrics)
                    )
                    for e in evidence
                ],
            )
            _stamp(detected, "detected_at", at)
            outgoing.append(self._out(detected, state.sku, ("detected", pulse_id)))
            PULSES_DETECTED.add(1)
            changed = True
        elif state.pulse is not None and advance(state.pulse, state.heat, at):
            ended = ev.PulseEnded(pulse_id=state.pulse.pulse_id, sku=state.sku)
            _stamp(ended, "ended_at", at)
            outgoing.append(self._out(ended, state.sku, ("ended", state.pulse.pulse_id)))
            changed = True
        due = changed or state.heat_sent_at is None or at - state.heat_sent_at >= HEAT_EVERY
        if changed or (due and self._heat_may_go(state)):
            outgoing.append(self._heat_event(state))
        elif due:
            self.heat_pending.add(state.sku)

    def _heat_may_go(self, state: SkuState) -> bool:
        return self.monotonic() - state.heat_sent_wall >= HEAT_MIN_INTERVAL_S

    def _heat_event(self, state: SkuState) -> tuple[str, NewEvent, str]:
        """The SKU's current heat as an event; it counts as sent from now."""
        assert state.as_of is not None
        heat = ev.HeatUpdated(
            sku=state.sku,
            heat=state.heat,
            view_velocity=state.view_velocity,
            like_rate=state.like_rate,
            share_rate=state.share_rate,
        )
        _stamp(heat, "as_of", state.as_of)
        state.heat_sent_at, state.heat_sent_wall = state.as_of, self.monotonic()
        self.heat_pending.discard(state.sku)
        return self._out(heat, state.sku, ("heat", state.sku, state.as_of.isoformat()))

    async def recover_pending_heat(self) -> None:
        """After a restart: SKUs whose last folded heat was never published."""
        rows = await self.store.pool.fetch(
            "SELECT sku FROM sku_heat WHERE published_at IS DISTINCT FROM as_of"
        )
        self.heat_pending.update(row["sku"] for row in rows)

    async def flush_heat(self) -> int:
        """Publish the latest heat of pending SKUs whose second is up; how many went out."""
        if not self.heat_pending:
            return 0
        async with self._turn_in_transaction() as conn:
            await self._load_skus(conn, sorted(self.heat_pending - self.skus.keys()))
            due = [self.skus[sku] for sku in sorted(self.heat_pending)]
            outgoing = [self._heat_event(state) for state in due if self._heat_may_go(state)]
            if outgoing:
                await self._persist(conn, set(), {sku for _, _, sku in outgoing})
                await self.store.enqueue_messages(outgoing, conn=conn)
        return len(outgoing)

    @contextlib.asynccontextmanager
    async def _turn_in_transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A batch or a heat flush: one at a time, in one transaction. Memory is folded
        ahead of the commit; if the commit fails, memory forgets everything and reloads from
        the snapshots, or a redelivered batch would look like duplicates and be lost."""
        async with self._turn:
            pending = set(self.heat_pending)
            try:
                async with self.store.pool.acquire() as conn, conn.transaction():
                    yield conn
            except BaseException:
                self.videos.clear()
                self.lives.clear()
                self.skus.clear()
                self.heat_pending |= pending
                raise

    async def run_heat_flusher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEAT_MIN_INTERVAL_S / 4)
            try:
                await self.flush_heat()
            except (*CONNECTION_LOST, asyncpg.PostgresError) as error:  # pending stays pending
                log.warning("heat flush failed, retrying", error=repr(error))

    def _out(
        self, message: Message, sku: str, identity: tuple[str, ...]
    ) -> tuple[str, NewEvent, str]:
        event = NewEvent.of(message, event_id=uuid.uuid5(IDS, "|".join(identity)))
        return (subject_for(SERVICE, event.type, sku, self.partitions), event, sku)

    async def _persist(self, conn: asyncpg.Connection, videos: set[str], skus: set[str]) -> None:
        """The batch's snapshots: one statement per table, not one per row."""
        if videos:
            states = [self.videos[video_id] for video_id in sorted(videos)]
            await conn.execute(
                "INSERT INTO video_state"
                " (video_id, last_observed_at, sample_window, detector, heat)"
                " SELECT v, t, w, d::jsonb, h FROM unnest("
                " $1::text[], $2::timestamptz[], $3::bytea[], $4::text[], $5::float8[])"
                " AS u(v, t, w, d, h)"
                " ON CONFLICT (video_id) DO UPDATE SET"
                " last_observed_at = excluded.last_observed_at,"
                " sample_window = excluded.sample_window,"
                " detector = excluded.detector, heat = excluded.heat",
                [v.video_id for v in states],
                [v.last_observed_at for v in states],
                [v.window.packed() for v in states],
                [json.dumps(v.detector.snapshot()) for v in states],
                [v.heat for v in states],
            )
        if skus:
            heats = [self.skus[sku] for sku in sorted(skus)]
            await conn.execute(
                "INSERT INTO sku_heat"
                " (sku, heat, view_velocity, like_rate, share_rate, as_of, published_at)"
                " SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[],"
                " $5::float8[], $6::timestamptz[], $7::timestamptz[]) ON CONFLICT (sku) DO UPDATE"
                " SET heat = excluded.heat, view_velocity = excluded.view_velocity,"
                " like_rate = excluded.like_rate, share_rate = excluded.share_rate,"
                " as_of = excluded.as_of, published_at = excluded.published_at",
                [h.sku for h in heats],
                [h.heat for h in heats],
                [h.view_velocity for h in heats],
                [h.like_rate for h in heats],
                [h.share_rate for h in heats],
                [h.as_of or datetime.now(UTC) for h in heats],
                [h.heat_sent_at for h in heats],
            )
        for sku in skus:
            state = self.skus[sku]
            pulse = state.pulse
            if pulse is not None:
                await conn.execute(
                    "INSERT INTO pulses VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    " ON CONFLICT (pulse_id) DO UPDATE SET phase = excluded.phase,"
                    " ended_at = excluded.ended_at, peak_heat = excluded.peak_heat",
                    pulse.pulse_id,
                    sku,
                    pulse.phase,
                    pulse.hot_channel,
                    pulse.detected_at,
                    pulse.ended_at,
                    pulse.peak_heat,
                    [e.__dict__ | {"metrics": _finite(e.metrics)} for e in pulse.evidence],
                    sorted({e.video_id for e in pulse.evidence}),
                )
                if pulse.phase == ENDED:
                    state.pulse = None

    def forget_rules(self, scope: str) -> None:
        self._rules.pop(scope, None)


def _live_state(row: asyncpg.Record) -> LiveState:
    return LiveState(
        row["live_id"],
        list(row["skus"]),
        row["last_observed_at"],
        row["viewers"],
        row["interactions"],
        row["orders_so_far"],
        row["heat"],
    )


def _finite(values: dict[str, float]) -> dict[str, float]:
    """JSON and protobuf doubles are fine with inf, JSON columns are not."""
    return {k: (v if v == v and abs(v) != float("inf") else 1e308) for k, v in values.items()}
