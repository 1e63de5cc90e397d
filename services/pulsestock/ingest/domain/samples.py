"""Validation of content samples: pure rules, each rejection with a reason a client can act on.
`now` comes in from the edge."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from pulsestock.ids import valid_id

MAX_SAMPLES_PER_MESSAGE = 1000
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class VideoSample:
    video_id: str
    observed_at: datetime
    views: int
    likes: int
    shares: int
    comments: int

    @property
    def counters(self) -> tuple[int, int, int, int]:
        return (self.views, self.likes, self.shares, self.comments)


@dataclass(frozen=True)
class Video:
    video_id: str
    published_at: datetime


class Verdict:
    ACCEPT = "accept"
    DUPLICATE = "duplicate"  # the same sample again (a retried stream): accepted, not re-sent


def _future(skew: timedelta) -> str:
    return f"observed_at is in the future beyond the {int(skew.total_seconds())} s clock skew"


def judge_video_sample(
    sample: VideoSample,
    video: Video | None,
    previous: VideoSample | None,
    now: datetime,
    skew: timedelta = CLOCK_SKEW,
    accepted_then: VideoSample | None = None,
) -> str:
    """Verdict.ACCEPT, Verdict.DUPLICATE, or the reason for rejecting the sample.

    `previous` is the video's last accepted sample; `accepted_then`, the sample accepted at
    exactly this sample's observed_at, if any (a retried stream resends older samples)."""
    if not valid_id(sample.video_id):
        return "malformed video_id"
    if video is None:
        return f"unknown video {sample.video_id}: register it first"
    if min(sample.counters) < 0:
        return "counters must not be negative"
    if sample.observed_at > now + skew:
        return _future(skew)
    if sample.observed_at < video.published_at:
        return "observed_at is before the video was published"
    if previous is not None:
        if sample.observed_at == previous.observed_at:
            if sample.counters == previous.counters:
                return Verdict.DUPLICATE
            return "another sample was already accepted at this observed_at"
        if sample.observed_at < previous.observed_at:
            if accepted_then is not None and accepted_then.counters == sample.counters:
                return Verdict.DUPLICATE
            return "older than the last accepted sample of this video"
        names = ("views", "likes", "shares", "comments")
        for name, new, old in zip(names, sample.counters, previous.counters, strict=True):
            if new < old:
                return f"cumulative {name} went backwards ({old} -> {new})"
    return Verdict.ACCEPT


@dataclass(frozen=True)
class LiveSample:
    live_id: str
    skus: tuple[str, ...]
    observed_at: datetime
    concurrent_viewers: int
    interactions: int
    orders_so_far: int

    @property
    def counts(self) -> tuple[int, int, int]:
        return (self.concurrent_viewers, self.interactions, self.orders_so_far)


def judge_live_sample(
    sample: LiveSample,
    previous: LiveSample | None,
    now: datetime,
    skew: timedelta = CLOCK_SKEW,
    accepted_then: LiveSample | None = None,
) -> str:
    """As for videos: `previous` is the session's last accepted sample, `accepted_then` the
    one accepted at exactly this sample's observed_at, if any."""
    if not valid_id(sample.live_id):
        return "malformed live_id"
    if not sample.skus or not all(valid_id(sku) for sku in sample.skus):
        return "skus must list at least one well-formed SKU"
    if min(sample.concurrent_viewers, sample.interactions, sample.orders_so_far) < 0:
        return "counts must not be negative"
    if sample.observed_at > now + skew:
        return _future(skew)
    if previous is not None:
        if sample.observed_at == previous.observed_at:
            return (
                Verdict.DUPLICATE
                if sample.counts == previous.counts
                else "another sample was already accepted at this observed_at"
            )
        if sample.observed_at < previous.observed_at:
            if accepted_then is not None and accepted_then.counts == sample.counts:
                return Verdict.DUPLICATE
            return "older than the last accepted sample of this live session"
        if sample.interactions < previous.interactions:
            return "cumulative interactions went backwards"
        if sample.orders_so_far < previous.orders_so_far:
            return "orders_so_far went backwards"
    return Verdict.ACCEPT


AnySample = TypeVar("AnySample", VideoSample, LiveSample)
SampleKey = tuple[str, datetime]  # (video or live session, observed_at)


def keys_to_recheck(
    samples: Sequence[AnySample | None],
    latest: Mapping[str, AnySample],
    source_of: Callable[[AnySample], str],
) -> list[SampleKey]:
    """Samples at or before their source's last accepted one: each may be a copy of a sample
    accepted before (a retried stream), so what was accepted at its moment must be known.

    At *or* before: a batch can accept newer samples ahead of a resent copy of the current
    latest one, after which that copy is older than `previous` and only the lookup can tell
    a duplicate from a conflicting sample."""
    keys: list[SampleKey] = []
    for sample in samples:
        if sample is None:
            continue
        last = latest.get(source_of(sample))
        if last is not None and sample.observed_at <= last.observed_at:
            keys.append((source_of(sample), sample.observed_at))
    return keys


def judge_in_order(
    samples: Sequence[AnySample | None],
    latest: Mapping[str, AnySample],
    accepted_before: Mapping[SampleKey, AnySample],
    source_of: Callable[[AnySample], str],
    judge: Callable[[AnySample, AnySample | None, AnySample | None], str],
) -> list[str]:
    """A verdict per sample, in order, for samples that commit together.

    `latest` is each source's last accepted sample and `accepted_before` holds the samples
    accepted before at the moments `keys_to_recheck` named. Each sample accepted here becomes
    the next one's `previous` and is recognised when a copy of it follows in the same batch.
    A missing sample (no observed_at) is None."""
    latest = dict(latest)
    accepted = dict(accepted_before)
    verdicts: list[str] = []
    for sample in samples:
        if sample is None:
            verdicts.append("observed_at is required")
            continue
        source = source_of(sample)
        key = (source, sample.observed_at)
        verdict = judge(sample, latest.get(source), accepted.get(key))
        verdicts.append(verdict)
        if verdict == Verdict.ACCEPT:
            latest[source] = accepted[key] = sample
    return verdicts
