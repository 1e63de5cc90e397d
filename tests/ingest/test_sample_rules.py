"""Every rule that rejects a content sample, as pure domain code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pulsestock.ingest.domain.samples import (
    LiveSample,
    Verdict,
    Video,
    VideoSample,
    judge_live_sample,
    judge_video_sample,
)

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
VIDEO = Video("v1", NOW - timedelta(hours=3))
LAST = VideoSample("v1", NOW - timedelta(minutes=10), 1000, 100, 10, 5)


def sample(**changes: object) -> VideoSample:
    values: dict[str, object] = {
        "video_id": "v1",
        "observed_at": NOW - timedelta(minutes=5),
        "views": 2000,
        "likes": 150,
        "shares": 12,
        "comments": 6,
    }
    values.update(changes)
    return VideoSample(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidate", "video", "previous", "reason"),
    [
        (sample(video_id="bad id!"), VIDEO, None, "malformed video_id"),
        (sample(video_id="v2"), None, None, "unknown video v2"),
        (sample(views=-1), VIDEO, None, "must not be negative"),
        (sample(observed_at=NOW + timedelta(minutes=6)), VIDEO, None, "in the future"),
        (
            sample(observed_at=NOW - timedelta(hours=4)),
            VIDEO,
            None,
            "before the video was published",
        ),
        (sample(observed_at=LAST.observed_at - timedelta(seconds=1)), VIDEO, LAST, "older than"),
        (sample(observed_at=LAST.observed_at), VIDEO, LAST, "already accepted at this observed_at"),
        (sample(views=999), VIDEO, LAST, "cumulative views went backwards (1000 -> 999)"),
        (sample(likes=99), VIDEO, LAST, "cumulative likes went backwards"),
        (sample(shares=9), VIDEO, LAST, "cumulative shares went backwards"),
        (sample(comments=4), VIDEO, LAST, "cumulative comments went backwards"),
    ],
)
def test_video_sample_rejections(
    candidate: VideoSample, video: Video | None, previous: VideoSample | None, reason: str
) -> None:
    verdict = judge_video_sample(candidate, video, previous, NOW)
    assert verdict not in (Verdict.ACCEPT, Verdict.DUPLICATE)
    assert reason in verdict


def test_a_good_sample_is_accepted_and_its_repeat_is_a_duplicate() -> None:
    assert judge_video_sample(sample(), VIDEO, LAST, NOW) == Verdict.ACCEPT
    assert (
        judge_video_sample(sample(observed_at=NOW + timedelta(minutes=4)), VIDEO, LAST, NOW)
        == Verdict.ACCEPT
    )
    assert judge_video_sample(LAST, VIDEO, LAST, NOW) == Verdict.DUPLICATE


LIVE_LAST = LiveSample("live1", ("SKU-1",), NOW - timedelta(minutes=1), 500, 80, 7)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (LiveSample("no spaces", ("S",), NOW, 1, 1, 1), "malformed live_id"),
        (LiveSample("live1", (), NOW, 1, 100, 10), "at least one well-formed SKU"),
        (LiveSample("live1", ("S",), NOW, -1, 100, 10), "must not be negative"),
        (LiveSample("live1", ("S",), NOW + timedelta(hours=1), 1, 100, 10), "in the future"),
        (LiveSample("live1", ("S",), NOW - timedelta(hours=1), 1, 100, 10), "older than"),
        (LiveSample("live1", ("S",), NOW, 1, 79, 10), "interactions went backwards"),
        (LiveSample("live1", ("S",), NOW, 1, 100, 6), "orders_so_far went backwards"),
    ],
)
def test_live_sample_rejections(candidate: LiveSample, reason: str) -> None:
    verdict = judge_live_sample(candidate, LIVE_LAST, NOW)
    assert reason in verdict


def test_live_sample_accepted_and_duplicate() -> None:
    assert (
        judge_live_sample(LiveSample("live1", ("S",), NOW, 900, 120, 9), LIVE_LAST, NOW)
        == Verdict.ACCEPT
    )
    assert judge_live_sample(LIVE_LAST, LIVE_LAST, NOW) == Verdict.DUPLICATE


def test_a_resent_older_live_sample_is_recognised_only_with_the_same_counts() -> None:
    older = LiveSample("live1", ("S",), NOW - timedelta(minutes=3), 400, 60, 5)
    assert judge_live_sample(older, LIVE_LAST, NOW, accepted_then=older) == Verdict.DUPLICATE
    changed = LiveSample("live1", ("S",), older.observed_at, 401, 60, 5)
    assert "older than" in judge_live_sample(changed, LIVE_LAST, NOW, accepted_then=older)
    assert "older than" in judge_live_sample(older, LIVE_LAST, NOW)
    same_time_other_viewers = LiveSample("live1", ("S",), LIVE_LAST.observed_at, 501, 80, 7)
    assert "already accepted" in judge_live_sample(same_time_other_viewers, LIVE_LAST, NOW)
