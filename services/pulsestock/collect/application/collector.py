"""The polling loop: each tick, per connected creator, ask the Display API about the videos the
adaptive scheduler picks, push what came back into ingest, and keep a checkpoint so a restarted
collector resumes where it stood (no resending of what ingest already has, no gap longer than
the schedule allows).

Time: the scheduler counts in ticks. In production a tick is 60 s, so its "minutes" are
minutes; a test may shorten the tick, which compresses every interval alike.

Only videos with SKUs are polled: ingest accepts no video without one, and a sample nobody can
attribute to a product spends budget for nothing. A video gets SKUs from an operator's mapping
(`MapVideo`) or, failing that, its creator's defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
import asyncpg
import grpc
from pulsestock.clock import timestamp as stamp
from pulsestock.collect.adapters.display_api import (
    DisplayApiError,
    ReauthorisationRequired,
    Video,
    VideoStats,
)
from pulsestock.collect.adapters.ingest_client import PushReport
from pulsestock.collect.adapters.postgres import CollectRepository, Creator
from pulsestock.collect.domain.polling import PollingPolicy, PollScheduler, VideoSample
from pulsestock.collect.domain.videos import effective_skus
from pulsestock.metrics import SAMPLES_COLLECTED
from pulsestock.telemetry import get_logger
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2

log = get_logger(__name__)


class DisplayApi(Protocol):
    async def list_videos(self, open_id: str) -> list[Video]: ...

    async def query_stats(self, open_id: str, video_ids: Sequence[str]) -> list[VideoStats]: ...

    async def follower_count(self, open_id: str) -> int | None: ...


class IngestApi(Protocol):
    async def register_video(self, request: ingest_pb2.RegisterVideoRequest) -> bool: ...

    async def push_video_samples(self, samples: Sequence[ev.VideoSampled]) -> PushReport: ...


@dataclass(frozen=True)
class CollectorSettings:
    tick_seconds: float = 60.0
    calls_per_tick: int = 30  # per creator; the documented limit is 600 calls a minute
    list_every_ticks: int = 5  # how often each creator's video list is read again
    policy: PollingPolicy = field(default_factory=PollingPolicy)


@dataclass
class _CreatorState:
    creator: Creator
    scheduler: PollScheduler
    ticks_to_list: int = 0
    followers: int = 0  # the creator's reach, as ingest's RegisterVideo takes it


@dataclass
class TickReport:
    calls: int = 0
    polled: int = 0
    pushed: int = 0
    rejected: int = 0
    failures: list[str] = field(default_factory=list)
    views: dict[str, int] = field(default_factory=dict)  # a few sampled videos, for the log


class Collector:
    def __init__(
        self,
        repository: CollectRepository,
        api: DisplayApi,
        ingest: IngestApi,
        settings: CollectorSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repository = repository
        self.api = api
        self.ingest = ingest
        self.settings = settings
        self.clock = clock
        self._creators: dict[str, _CreatorState] = {}
        self._owner: dict[str, str] = {}  # video -> creator
        self._created: dict[str, datetime] = {}
        self._mapped: dict[str, list[str]] = {}  # operator mappings
        self._registered: dict[str, tuple[str, ...] | None] = {}  # what ingest was told
        self._pulses: dict[str, set[str]] = {}  # pulse id -> its videos
        self._last: dict[str, tuple[VideoSample, ...]] = {}  # checkpoint, Unix seconds

    @property
    def minutes_per_tick(self) -> float:
        return self.settings.tick_seconds / 60

    def _now(self) -> float:
        return self._ticks(self.clock().timestamp())

    def _ticks(self, unix_seconds: float) -> float:
        return unix_seconds / self.settings.tick_seconds

    # --- state --------------------------------------------------------------------------

    async def load(self) -> None:
        """Creators, mappings and checkpoints from the tables (start, or a creator change)."""
        now = self._now()
        self._mapped = await self.repository.mappings()
        for creator in await self.repository.creators():
            state = self._creators.get(creator.open_id)
            if creator.needs_reauthorisation:
                self._creators.pop(creator.open_id, None)
                continue
            if state is not None:
                state.creator = creator
                continue
            state = _CreatorState(
                creator, PollScheduler(self.settings.calls_per_tick, self.settings.policy)
            )
            self._creators[creator.open_id] = state
            for video in await self.repository.videos(creator.open_id):
                self._owner[video.video_id] = creator.open_id
                self._created[video.video_id] = video.created_at
                self._registered[video.video_id] = video.registered_skus
                self._last[video.video_id] = video.samples
                if video.samples:
                    self._follow(state, video.video_id, now)
                    for sample in video.samples:  # the schedule resumes from the checkpoint
                        state.scheduler.observe(video.video_id, self._in_ticks(sample))
        for state in self._creators.values():
            for video_id in self._videos_of(state.creator.open_id):
                self._follow(state, video_id, now)

    def _in_ticks(self, sample: VideoSample) -> VideoSample:
        return VideoSample(self._ticks(sample.at), sample.views, sample.likes, sample.shares)

    def _videos_of(self, open_id: str) -> list[str]:
        return [video for video, owner in self._owner.items() if owner == open_id]

    def skus_of(self, video_id: str) -> list[str]:
        owner = self._creators.get(self._owner.get(video_id, ""))
        defaults = owner.creator.default_skus if owner else ()
        return effective_skus(self._mapped.get(video_id), defaults)

    def _follow(self, state: _CreatorState, video_id: str, now: float) -> None:
        """Poll the video when it has SKUs; stop when it has none any more."""
        if self.skus_of(video_id):
            created = self._ticks(self._created[video_id].timestamp())
            state.scheduler.register(video_id, created, now)
        else:
            state.scheduler.forget(video_id)

    async def mapping_changed(self, video_id: str, skus: Sequence[str]) -> None:
        self._mapped[video_id] = sorted(set(skus))
        owner = self._creators.get(self._owner.get(video_id, ""))
        if owner is not None:
            self._follow(owner, video_id, self._now())

    def pulse_started(self, pulse_id: str, video_ids: Sequence[str]) -> None:
        now = self._now()
        ours = {v for v in video_ids if v in self._owner}
        self._pulses[pulse_id] = ours
        for video_id in ours:
            self._set_pulse(video_id, True, now)
        if ours:
            log.info("pulse: polling its videos every tick", pulse_id=pulse_id, videos=sorted(ours))

    def pulse_ended(self, pulse_id: str) -> None:
        now = self._now()
        for video_id in self._pulses.pop(pulse_id, set()):
            still = any(video_id in videos for videos in self._pulses.values())
            self._set_pulse(video_id, still, now)

    def pulse_active(self, video_id: str) -> bool:
        return any(video_id in videos for videos in self._pulses.values())

    def _set_pulse(self, video_id: str, active: bool, now: float) -> None:
        state = self._creators.get(self._owner.get(video_id, ""))
        if state is not None and state.scheduler.follows(video_id):
            state.scheduler.set_pulse(video_id, active, now)

    def scheduler_of(self, open_id: str) -> PollScheduler | None:
        state = self._creators.get(open_id)
        return state.scheduler if state else None

    # --- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
        """Tick every `tick_seconds`; after a failed tick (ingest or the database away) try
        again sooner, 1 s then doubling up to a tick, so a collector started before ingest
        does not wait a whole tick to begin."""
        await self.load()
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        failures = 0
        while not stop.is_set():
            if reload is not None and reload.is_set():
                reload.clear()
                await self.load()
            try:
                report = await self.tick()
                failures = 0
                if report.calls:
                    log.info(
                        "collected",
                        calls=report.calls,
                        videos=report.polled,
                        pushed=report.pushed,
                        rejected=report.rejected,
                        views=report.views,
                    )
            except (
                grpc.aio.AioRpcError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as error:
                failures += 1
                log.warning("tick failed", error=_describe(error))
            if failures:
                delay = min(self.settings.tick_seconds, 2.0 ** (failures - 1))
                next_tick = loop.time() + delay
            else:
                next_tick += self.settings.tick_seconds
                delay = max(0.0, next_tick - loop.time())
                if delay == 0.0:
                    next_tick = loop.time()  # behind: start again from now, do not burst
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def tick(self) -> TickReport:
        report = TickReport()
        for state in list(self._creators.values()):
            open_id = state.creator.open_id
            try:
                if state.ticks_to_list <= 0:
                    await self.discover(state)
                    state.ticks_to_list = self.settings.list_every_ticks
                state.ticks_to_list -= 1
                await self._register_due(state)
                await self._poll(state, report)
            except ReauthorisationRequired as gone:
                log.warning("creator must authorise again", open_id=open_id, reason=gone.code)
                await self.repository.disconnect_creator(open_id, gone.code, self.clock())
                self._creators.pop(open_id, None)
            except (DisplayApiError, aiohttp.ClientError, TimeoutError) as error:
                report.failures.append(f"{open_id}: {error}")
                log.warning("display api failed", open_id=open_id, error=str(error))
        return report

    async def discover(self, state: _CreatorState) -> list[str]:
        """Read the creator's video list; returns the videos new to the collector."""
        open_id = state.creator.open_id
        followers = await self.api.follower_count(open_id)
        if followers is not None:
            state.followers = followers
        listed = await self.api.list_videos(open_id)
        new = [v for v in listed if v.id not in self._owner]
        await self.repository.add_videos(
            open_id, [(v.id, datetime.fromtimestamp(v.create_time, UTC), v.title) for v in new]
        )
        now = self._now()
        for video in new:
            self._owner[video.id] = open_id
            self._created[video.id] = datetime.fromtimestamp(video.create_time, UTC)
            self._registered[video.id] = None
            self._last[video.id] = ()
            self._follow(state, video.id, now)
        return [v.id for v in new]

    async def _register_due(self, state: _CreatorState) -> None:
        """Tell ingest about each followed video whose SKUs it does not have yet."""
        creator = state.creator
        for video_id in self._videos_of(creator.open_id):
            skus = tuple(self.skus_of(video_id))
            if not skus or self._registered.get(video_id) == skus:
                continue
            await self.ingest.register_video(
                ingest_pb2.RegisterVideoRequest(
                    video_id=video_id,
                    skus=list(skus),
                    creator_id=creator.open_id,
                    creator_followers=state.followers,
                    published_at=stamp(self._created[video_id]),
                    channel=creator.channel,  # type: ignore[arg-type]
                    seller_id=creator.seller_id,
                )
            )
            await self.repository.mark_registered(video_id, skus)
            self._registered[video_id] = skus

    async def _poll(self, state: _CreatorState, report: TickReport) -> None:
        open_id = state.creator.open_id
        batches = state.scheduler.plan(self._now())
        stats: list[VideoStats] = []
        for batch in batches:
            report.calls += 1
            report.polled += len(batch)
            stats.extend(await self.api.query_stats(open_id, batch))
        fresh = [s for s in stats if self._registered.get(s.id) and not self._already_sent(s)]
        if not fresh:
            return
        pushed = await self.ingest.push_video_samples(
            [
                ev.VideoSampled(
                    video_id=s.id,
                    observed_at=stamp(datetime.fromtimestamp(s.observed_at, UTC)),
                    views=s.view_count,
                    likes=s.like_count,
                    shares=s.share_count,
                    comments=s.comment_count,
                )
                for s in fresh
            ]
        )
        report.pushed += pushed.accepted
        SAMPLES_COLLECTED.add(pushed.accepted, {"source": "display_api"})
        report.rejected += pushed.rejected
        for index, reason in sorted(pushed.rejections.items())[:5]:
            log.warning("ingest rejected a sample", video_id=fresh[index].id, reason=reason)
        checkpoints = []
        for index, s in enumerate(fresh):
            if index in pushed.rejections:
                continue
            sample = VideoSample(s.observed_at, s.view_count, s.like_count, s.share_count)
            self._last[s.id] = (*self._last.get(s.id, ())[-2:], sample)
            checkpoints.append((s.id, self._last[s.id]))
            state.scheduler.observe(s.id, self._in_ticks(sample))
            if len(report.views) < 5:
                report.views[s.id] = s.view_count
        await self.repository.save_samples(checkpoints)

    def _already_sent(self, stats: VideoStats) -> bool:
        last = self._last.get(stats.id, ())
        return bool(last) and stats.observed_at <= last[-1].at


def _describe(error: BaseException) -> str:
    """One line: a gRPC error's code and details (its repr carries a debug dump)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return repr(error)
