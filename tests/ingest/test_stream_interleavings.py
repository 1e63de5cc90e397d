"""Duplicate streams in any interleaving of shared transactions (group commit), as pure
domain code: every sample is accepted exactly once and every copy of it counts as accepted.

The model store plays PostgreSQL's part: what was committed (each source's latest sample
and every accepted sample by moment), read at the start of each batch, written at its end."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.ingest.domain.samples import (
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

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
VIDEOS = {name: Video(name, NOW - timedelta(days=1)) for name in ("v1", "v2")}


def video_samples(count: int, sources: int) -> list[VideoSample]:
    """A sequence a collector would send: per video, later samples with larger counters."""
    return [
        VideoSample(f"v{1 + i % sources}", NOW - timedelta(minutes=100 - i), 10 * i, i, i, i)
        for i in range(count)
    ]


def live_samples(count: int, sources: int) -> list[LiveSample]:
    return [
        LiveSample(f"l{1 + i % sources}", ("SKU-1",), NOW - timedelta(minutes=100 - i), 50, i, i)
        for i in range(count)
    ]


def judge_video(sample: VideoSample, previous: VideoSample | None, then: VideoSample | None) -> str:
    return judge_video_sample(sample, VIDEOS[sample.video_id], previous, NOW, accepted_then=then)


def judge_live(sample: LiveSample, previous: LiveSample | None, then: LiveSample | None) -> str:
    return judge_live_sample(sample, previous, NOW, accepted_then=then)


@dataclass
class CommittedState:
    latest: dict[str, Any] = field(default_factory=dict)
    accepted: dict[SampleKey, Any] = field(default_factory=dict)
    accepted_count: int = 0


def commit_batch(
    state: CommittedState,
    batch: list[Any],
    source_of: Callable[[Any], str],
    judge: Callable[[Any, Any, Any], str],
) -> list[str]:
    """What one group-commit transaction does, with the store's reads and writes."""
    keys = keys_to_recheck(batch, state.latest, source_of)
    before = {key: state.accepted[key] for key in keys if key in state.accepted}
    verdicts = judge_in_order(batch, state.latest, before, source_of, judge)
    for sample, verdict in zip(batch, verdicts, strict=True):
        if verdict == Verdict.ACCEPT:
            key = (source_of(sample), sample.observed_at)
            assert key not in state.accepted, f"{key} accepted twice"
            state.accepted[key] = sample
            last = state.latest.get(key[0])
            if last is None or last.observed_at < sample.observed_at:
                state.latest[key[0]] = sample
            state.accepted_count += 1
    return verdicts


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[list[list[int]]], list[list[int]]]:
    """Streams of the same samples, each cut into messages its own way, and a schedule:
    each step commits the next message of some of the streams together, in some order."""
    count = draw(st.integers(1, 14))
    streams = []
    for _ in range(draw(st.integers(2, 6))):
        cuts = sorted(draw(st.sets(st.integers(1, max(1, count - 1)), max_size=count)))
        bounds = [0, *[c for c in cuts if c < count], count]
        streams.append([list(range(a, b)) for a, b in itertools.pairwise(bounds)])
    cursors = [0] * len(streams)
    schedule: list[list[int]] = []
    while any(cursor < len(s) for cursor, s in zip(cursors, streams, strict=True)):
        ready = [i for i, s in enumerate(streams) if cursors[i] < len(s)]
        together = draw(st.permutations(ready))
        size = draw(st.integers(1, len(together)))
        schedule.append(list(together[:size]))
        for i in together[:size]:
            cursors[i] += 1
    return streams, schedule


def replay(
    samples: list[Any],
    streams: list[list[list[int]]],
    schedule: list[list[int]],
    source_of: Callable[[Any], str],
    judge: Callable[[Any, Any, Any], str],
) -> CommittedState:
    state = CommittedState()
    cursors = [0] * len(streams)
    for step in schedule:
        batch: list[Any] = []
        for stream in step:
            message = streams[stream][cursors[stream]]
            cursors[stream] += 1
            batch.extend(samples[i] for i in message)
        verdicts = commit_batch(state, batch, source_of, judge)
        refused = [v for v in verdicts if v not in (Verdict.ACCEPT, Verdict.DUPLICATE)]
        assert not refused, f"valid resent samples refused: {refused}"
    return state


@settings(max_examples=400, deadline=None)
@given(interleavings(), st.integers(1, 2))
def test_any_interleaving_of_duplicate_video_streams_accepts_each_sample_once(
    plan: tuple[list[list[list[int]]], list[list[int]]], sources: int
) -> None:
    streams, schedule = plan
    count = sum(len(message) for message in streams[0])
    samples = video_samples(count, sources)
    state = replay(samples, streams, schedule, lambda s: s.video_id, judge_video)
    assert state.accepted_count == count
    assert sorted(state.accepted.values(), key=lambda s: s.observed_at) == samples


@settings(max_examples=200, deadline=None)
@given(interleavings(), st.integers(1, 2))
def test_any_interleaving_of_duplicate_live_streams_accepts_each_sample_once(
    plan: tuple[list[list[list[int]]], list[list[int]]], sources: int
) -> None:
    streams, schedule = plan
    count = sum(len(message) for message in streams[0])
    samples = live_samples(count, sources)
    state = replay(samples, streams, schedule, lambda s: s.live_id, judge_live)
    assert state.accepted_count == count


def test_a_resent_copy_of_the_latest_sample_after_newer_ones_in_its_batch_is_a_duplicate() -> None:
    """The case the race hit: stream A's next message commits in the same batch as stream
    B's resend of the message that was latest when the batch began."""
    samples = video_samples(6, 1)
    state = CommittedState()
    commit_batch(state, samples[:3], lambda s: s.video_id, judge_video)
    verdicts = commit_batch(state, samples[3:] + samples[:3], lambda s: s.video_id, judge_video)
    assert verdicts == [Verdict.ACCEPT] * 3 + [Verdict.DUPLICATE] * 3
