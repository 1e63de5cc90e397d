"""Stats from a file or a webhook (issue 16, item 3) into ingest: what `file_source` parsed is
pushed through ingest's public API, so validation and deduplication stay in ingest.

Each parsed row ends as exactly one accepted sample or exactly one `RowError(line, reason)`:
the parser's errors, a video nobody mapped to SKUs, a registration ingest refused, and each
sample ingest rejected (its rejection index mapped back to the row's line).

Videos: ingest takes samples only of videos registered with it, and a registration needs SKUs.
A video's SKUs come from the operator's mapping (`MapVideo`, `CollectRepository.mappings`);
a video without one has its rows reported ("map it with MapVideo") and skipped. A mapped video
is registered (channel TikTok Shop, `creator_id` from the row's creator column if the mapping
names one, else `DEFAULT_CREATOR_ID`; published_at the earliest observed_at seen for it, as an
export does not say when a video was posted) before its samples are pushed, and registered
again when its SKUs or creator change or an earlier sample turns up. What was registered is
kept in a `Registrations` store so a restart does not move published_at later.

Live rows carry their SKUs and need no registration.

A transient failure (ingest unreachable) raises `grpc.aio.AioRpcError` before or after some
samples were pushed; the caller sends the same rows again and ingest counts the copies of
samples it already has as accepted (duplicates), so nothing is applied twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from pulsestock.clock import Clock, utc_now
from pulsestock.clock import timestamp as stamp
from pulsestock.collect.adapters.ingest_client import PushReport
from pulsestock.collect.domain.file_source import LiveSample, ParseResult, RowError, VideoSample
from pulsestock.collect.domain.videos import Registration
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2
from pulsestock.v1.common_pb2 import Channel

# Registered as the creator of a video whose rows name none (ingest requires one).
DEFAULT_CREATOR_ID = "stats-import"
# ingest's answers that mean "this registration is wrong", not "try again later".
_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


class IngestApi(Protocol):
    async def register_video(self, request: ingest_pb2.RegisterVideoRequest) -> bool: ...

    async def push_video_samples(self, samples: Sequence[ev.VideoSampled]) -> PushReport: ...

    async def push_live_samples(self, samples: Sequence[ev.LiveSampled]) -> PushReport: ...


class Mappings(Protocol):
    async def mappings(self, video_ids: Sequence[str] | None = None) -> dict[str, list[str]]: ...


class Registrations(Protocol):
    async def registrations(self, video_ids: Sequence[str]) -> dict[str, Registration]: ...

    async def save_registration(self, video_id: str, registration: Registration) -> None: ...


class MemoryRegistrations:
    """Registrations kept for the life of the process: after a restart a video is registered
    again with the earliest observed_at seen since (a database-backed store avoids that)."""

    def __init__(self) -> None:
        self._known: dict[str, Registration] = {}

    async def registrations(self, video_ids: Sequence[str]) -> dict[str, Registration]:
        return {v: self._known[v] for v in video_ids if v in self._known}

    async def save_registration(self, video_id: str, registration: Registration) -> None:
        self._known[video_id] = registration


@dataclass(frozen=True, slots=True)
class IntakeReport:
    accepted: int
    errors: tuple[RowError, ...]  # in line order

    @property
    def rejected(self) -> int:
        return len(self.errors)


class StatsIntake:
    """Applies parsed rows; one batch at a time (the tailer and the webhook share it, and a
    registration must not move published_at under another batch's samples)."""

    def __init__(
        self,
        ingest: IngestApi,
        mappings: Mappings,
        registrations: Registrations | None = None,
        *,
        seller_id: str = "",
        channel: int = Channel.CHANNEL_TIKTOK_SHOP,
        clock: Clock = utc_now,
    ) -> None:
        self.ingest = ingest
        self.mappings = mappings
        self.registrations = registrations or MemoryRegistrations()
        self.seller_id = seller_id
        self.channel = channel
        self.clock = clock
        self._lock = asyncio.Lock()

    async def apply(self, parsed: ParseResult) -> IntakeReport:
        async with self._lock:
            errors = list(parsed.errors)
            videos = [s for s in parsed.samples if isinstance(s, VideoSample)]
            lives = [s for s in parsed.samples if isinstance(s, LiveSample)]
            refused = await self._register(videos)
            pushable: list[VideoSample] = []
            for sample in videos:
                reason = refused.get(sample.video_id)
                if reason is None:
                    pushable.append(sample)
                else:
                    errors.append(RowError(sample.line_number, reason))
            accepted = 0
            if pushable:
                report = await self.ingest.push_video_samples([_video(s) for s in pushable])
                accepted += report.accepted
                errors += _rejections(report, pushable)
            if lives:
                report = await self.ingest.push_live_samples([_live(s) for s in lives])
                accepted += report.accepted
                errors += _rejections(report, lives)
            errors.sort(key=lambda e: e.line_number)
            return IntakeReport(accepted, tuple(errors))

    async def _register(self, samples: Sequence[VideoSample]) -> dict[str, str]:
        """Register each video of `samples` that ingest must hear (again) about; returns the
        reason each video that cannot take samples has."""
        rows: dict[str, list[VideoSample]] = {}
        for sample in samples:
            rows.setdefault(sample.video_id, []).append(sample)
        if not rows:
            return {}
        mapped = await self.mappings.mappings(list(rows))
        known = await self.registrations.registrations(list(rows))
        refused: dict[str, str] = {}
        now = self.clock()
        for video_id, video_rows in rows.items():
            skus = tuple(sorted(set(mapped.get(video_id, ()))))
            if not skus:
                refused[video_id] = f"video {video_id} has no SKUs: map it with MapVideo"
                continue
            before = known.get(video_id)
            creator = next((r.creator_id for r in video_rows if r.creator_id), None)
            earliest = min(r.observed_at for r in video_rows)
            wanted = Registration(
                skus=skus,
                creator_id=creator or (before.creator_id if before else DEFAULT_CREATOR_ID),
                # Never later than before, nor in the future (ingest refuses that).
                published_at=min(earliest, now, *([before.published_at] if before else [])),
            )
            if wanted == before:
                continue
            try:
                await self.ingest.register_video(
                    ingest_pb2.RegisterVideoRequest(
                        video_id=video_id,
                        skus=list(wanted.skus),
                        creator_id=wanted.creator_id,
                        published_at=stamp(wanted.published_at),
                        channel=self.channel,  # type: ignore[arg-type]
                        seller_id=self.seller_id,
                    )
                )
            except grpc.aio.AioRpcError as error:
                if error.code() not in _REFUSALS:
                    raise
                refused[video_id] = (
                    f"ingest refused to register video {video_id}: {error.details()}"
                )
                continue
            await self.registrations.save_registration(video_id, wanted)
        return refused


def _video(sample: VideoSample) -> ev.VideoSampled:
    return ev.VideoSampled(
        video_id=sample.video_id,
        observed_at=stamp(sample.observed_at),
        views=sample.views,
        likes=sample.likes,
        shares=sample.shares,
        comments=sample.comments,
    )


def _live(sample: LiveSample) -> ev.LiveSampled:
    return ev.LiveSampled(
        live_id=sample.live_id,
        skus=list(sample.skus),
        observed_at=stamp(sample.observed_at),
        concurrent_viewers=sample.concurrent_viewers,
        interactions=sample.interactions,
        orders_so_far=sample.orders_so_far,
    )


def _rejections(
    report: PushReport, pushed: Sequence[VideoSample] | Sequence[LiveSample]
) -> list[RowError]:
    """ingest's rejections, by the line of the row each pushed sample came from."""
    return [
        RowError(pushed[index].line_number, f"ingest rejected the sample: {reason}")
        for index, reason in sorted(report.rejections.items())
        if 0 <= index < len(pushed)
    ]
