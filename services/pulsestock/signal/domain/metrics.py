"""Content metrics of a video from its recent samples, operator rules over them, and the
heat of a SKU from the videos that feature it. Pure: time comes in with the samples."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(hours=2, minutes=10)  # enough for "the last hour against the one before"


@dataclass(frozen=True)
class Sample:
    at: datetime
    views: int
    likes: int
    shares: int
    comments: int


@dataclass(frozen=True)
class VideoMetrics:
    views: int
    view_velocity: float  # views per hour, between the last two samples
    view_growth_1h: float  # views gained in the last hour / in the hour before, minus 1
    like_rate: float
    share_rate: float
    comment_rate: float
    # Trends: the rate among the last hour's new views minus the whole rate an hour ago
    # (> 0: the video engages its new viewers more than its earlier ones); 0 without history.
    like_rate_trend: float = 0.0
    share_rate_trend: float = 0.0
    comment_rate_trend: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "views": float(self.views),
            "view_velocity": self.view_velocity,
            "view_growth_1h": self.view_growth_1h,
            "like_rate": self.like_rate,
            "share_rate": self.share_rate,
            "comment_rate": self.comment_rate,
            "like_rate_trend": self.like_rate_trend,
            "share_rate_trend": self.share_rate_trend,
            "comment_rate_trend": self.comment_rate_trend,
        }


def _at(samples: list[Sample], moment: datetime) -> tuple[float, ...] | None:
    """The cumulative counters (views, likes, shares, comments) at `moment`, interpolated
    between samples (None before the first)."""
    if not samples or moment < samples[0].at:
        return None
    previous = samples[0]
    for sample in samples:
        if sample.at >= moment:
            span = (sample.at - previous.at).total_seconds()
            share = (moment - previous.at).total_seconds() / span if span > 0 else 1.0
            return tuple(
                old + share * (new - old)
                for old, new in zip(_counts(previous), _counts(sample), strict=True)
            )
        previous = sample
    return tuple(float(c) for c in _counts(samples[-1]))


def _counts(sample: Sample) -> tuple[int, int, int, int]:
    return (sample.views, sample.likes, sample.shares, sample.comments)


def metrics_of(samples: list[Sample]) -> VideoMetrics | None:
    """Needs two samples; `samples` in time order, the newest last."""
    if len(samples) < 2:
        return None
    last, before = samples[-1], samples[-2]
    hours = (last.at - before.at).total_seconds() / 3600
    velocity = (last.views - before.views) / hours if hours > 0 else 0.0
    hour_ago = _at(samples, last.at - timedelta(hours=1))
    two_hours_ago = _at(samples, last.at - timedelta(hours=2))
    growth = 0.0
    if hour_ago is not None and two_hours_ago is not None:
        recent, earlier = last.views - hour_ago[0], hour_ago[0] - two_hours_ago[0]
        growth = recent / earlier - 1 if earlier > 0 else (math.inf if recent > 0 else 0.0)
    views = max(last.views, 1)
    now = _counts(last)
    rates = [count / views for count in now[1:]]
    trends = [0.0, 0.0, 0.0]
    if hour_ago is not None and hour_ago[0] > 0 and now[0] > hour_ago[0]:
        new_views = now[0] - hour_ago[0]
        trends = [
            (count - then) / new_views - then / hour_ago[0]
            for count, then in zip(now[1:], hour_ago[1:], strict=True)
        ]
    return VideoMetrics(
        views=last.views,
        view_velocity=velocity,
        view_growth_1h=growth,
        like_rate=rates[0],
        share_rate=rates[1],
        comment_rate=rates[2],
        like_rate_trend=trends[0],
        share_rate_trend=trends[1],
        comment_rate_trend=trends[2],
    )


OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
METRICS = (
    "view_velocity",
    "view_growth_1h",
    "like_rate",
    "share_rate",
    "comment_rate",
    "like_rate_trend",
    "share_rate_trend",
    "comment_rate_trend",
    "views",
)


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str
    threshold: float
    min_views: int = 0

    def fires(self, metrics: VideoMetrics) -> bool:
        if metrics.views < self.min_views:  # tiny bases do not fire
            return False
        return bool(OPERATORS[self.op](metrics.as_dict()[self.metric], self.threshold))


DEFAULT_RULES = (
    Rule("views grew > 500 % within one hour", "view_growth_1h", ">", 5.0, min_views=5_000),
    Rule("like rate > 10 %", "like_rate", ">", 0.10, min_views=5_000),
)


def reach_weight(followers: int) -> float:
    """A creator with more followers carries a pulse further; logarithmically."""
    return 1.0 + math.log10(1 + max(followers, 0)) / 6


def recency_weight(
    published_at: datetime, now: datetime, half_life: timedelta = timedelta(hours=24)
) -> float:
    age = max((now - published_at).total_seconds(), 0.0)
    return float(0.5 ** (age / half_life.total_seconds()))


def video_heat(velocity: float, followers: int, published_at: datetime, now: datetime) -> float:
    return max(velocity, 0.0) * reach_weight(followers) * recency_weight(published_at, now)


@dataclass(frozen=True)
class LiveMetrics:
    viewers: int
    interactions_per_minute: float
    orders_per_minute: float


def live_metrics(
    viewers: int,
    interactions: int,
    orders: int,
    at: datetime,
    previous: tuple[datetime, int, int] | None,
) -> LiveMetrics:
    """From a live sample and the one before (observed_at, interactions, orders so far)."""
    if previous is None:
        return LiveMetrics(viewers, 0.0, 0.0)
    minutes = (at - previous[0]).total_seconds() / 60
    if minutes <= 0:
        return LiveMetrics(viewers, 0.0, 0.0)
    return LiveMetrics(
        viewers,
        max(interactions - previous[1], 0) / minutes,
        max(orders - previous[2], 0) / minutes,
    )


def live_heat(metrics: LiveMetrics) -> float:
    """A live session's heat on the video scale (views per hour): every viewer counts as one,
    an interaction a minute as ten, an order a minute as a hundred (orders are the signal
    the first minutes of a live are judged by)."""
    return metrics.viewers + 10 * metrics.interactions_per_minute + 100 * metrics.orders_per_minute
