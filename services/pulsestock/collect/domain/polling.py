"""Adaptive polling: which videos to ask the TikTok Display API about, minute by minute.

The budget is a number of `/v2/video/query/` calls per minute, each naming at most 20 video
ids, so at most `calls_per_minute x 20` videos can be sampled per minute. Time comes in as
minutes (a float, any epoch); nothing here reads a clock or does I/O.

The rule, from principles rather than fitted to any data file:

1. What a poll is for: to see a video take off soon after it does. If onsets of a video
   arrive at rate h (its hazard) and it is sampled every I minutes, the expected delay to
   the first sample after an onset is about I / 2. Minimising the summed delay
   sum(h_i * I_i / 2) under the budget sum(1 / I_i) <= capacity gives I_i ~ 1 / sqrt(h_i):
   the square-root rule. Each video's *desired interval* is therefore a relative weight
   from its heat and age, clamped to [hot_interval, cold_interval]:
   - rising (its last sampled view rate is at least `rising_ratio` times the one before,
     and the rise is well outside Poisson noise: z >= `rising_z`; it stays rising while its
     rate keeps climbing) or a pulse is active: `hot_interval` (1 minute): the onset is
     happening, every sample counts;
   - otherwise by age: a new video's chance of taking off is highest in its first hours and
     falls roughly as 1 / (1 + age / youth_minutes)^2, so I = hot_interval * (1 + age /
     youth_minutes): about every minute at upload, every 4 minutes at 3 h, every 25 at a
     day, and `cold_interval` (60 minutes) for old, flat videos.
   The interval is decided when a sample arrives (and at registration).
2. Deadlines first: no video goes longer than `max_staleness` minutes without a poll when the
   budget allows. Each video's deadline is its last poll (or registration) plus
   `max_staleness`; sorted by deadline, if the k-th deadline falls within m whole minutes,
   at least k - capacity * m of them must be polled now (earliest deadline first): that is
   the least this minute must take for every deadline to stay reachable, and earliest-
   deadline-first meets all of them whenever any schedule can (unit-size polls).
3. The rest of the capacity goes by *overdue-ness*: (now - last poll) / desired interval,
   highest first (never-polled videos first of all), ties by video id. Overdue-ness grows
   fastest for the hottest videos, so when the budget is short every video's real interval
   stretches by the same factor (proportional share) and when it is ample the spare calls
   still go where the next sample is most likely to show something. The planner is
   work-conserving: it never leaves a call of the budget unused while there are videos.

Deterministic: the same registrations, samples and `now`s give the same plans.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

# `/v2/video/query/` accepts at most 20 video ids per call.
TIKTOK_MAX_IDS_PER_QUERY = 20


@dataclass(frozen=True, slots=True)
class VideoSample:
    """Cumulative counts of one video as one poll saw them, at `at` (minutes)."""

    at: float
    views: int
    likes: int = 0
    shares: int = 0


@dataclass(frozen=True, slots=True)
class PollingPolicy:
    ids_per_call: int = TIKTOK_MAX_IDS_PER_QUERY
    max_staleness: float = 60.0
    hot_interval: float = 1.0
    cold_interval: float = 60.0
    youth_minutes: float = 60.0
    rising_ratio: float = 1.5
    rising_z: float = 3.0

    def __post_init__(self) -> None:
        if self.ids_per_call < 1:
            raise ValueError("ids_per_call must be at least 1")
        if not 0 < self.hot_interval <= self.cold_interval <= self.max_staleness:
            raise ValueError("need 0 < hot_interval <= cold_interval <= max_staleness")
        if self.youth_minutes <= 0 or self.rising_ratio <= 1 or self.rising_z < 0:
            raise ValueError("need youth_minutes > 0, rising_ratio > 1, rising_z >= 0")


def is_rising(
    samples: tuple[VideoSample, ...], policy: PollingPolicy, was_rising: bool = False
) -> bool:
    """The view rate between the last two samples is `rising_ratio` times the rate between
    the two before, and the excess is at least `rising_z` Poisson deviations (so a cold
    video going from 1 view to 3 does not count). A video already rising stays so while
    its rate still climbs at all: polled every minute, a steep rise gains little from one
    minute to the next."""
    if len(samples) < 3:
        return False
    first, middle, last = samples[-3], samples[-2], samples[-1]
    earlier_minutes, later_minutes = middle.at - first.at, last.at - middle.at
    if earlier_minutes <= 0 or later_minutes <= 0:
        return False
    earlier_rate = max(middle.views - first.views, 0) / earlier_minutes
    gained = max(last.views - middle.views, 0)
    expected = earlier_rate * later_minutes
    z = (gained - expected) / math.sqrt(max(expected, 1.0))
    if was_rising:
        return gained > expected
    return gained >= policy.rising_ratio * expected and z >= policy.rising_z


def desired_interval(
    age_minutes: float,
    samples: tuple[VideoSample, ...],
    pulse_active: bool,
    policy: PollingPolicy,
    was_rising: bool = False,
) -> float:
    """Minutes between polls this video deserves (see the module docstring, rule 1)."""
    if pulse_active or is_rising(samples, policy, was_rising):
        return policy.hot_interval
    by_age = policy.hot_interval * (1.0 + max(age_minutes, 0.0) / policy.youth_minutes)
    return min(max(by_age, policy.hot_interval), policy.cold_interval)


@dataclass(slots=True)
class _Video:
    created_at: float
    registered_at: float
    last_polled_at: float | None = None
    samples: tuple[VideoSample, ...] = ()
    pulse_active: bool = False
    rising: bool = False
    interval: float = 1.0

    @property
    def hot(self) -> bool:
        return self.rising or self.pulse_active


class PollScheduler:
    """Per-video polling state and the minute-by-minute plan (rules 2 and 3).

    Call `plan(now)` once a minute: it returns the batches to query (each at most
    `ids_per_call` ids, at most `calls_per_minute` batches) and counts them as polled at
    `now`. Feed what each poll returned with `observe`, and pulse starts and ends with
    `set_pulse`.
    """

    def __init__(self, calls_per_minute: int, policy: PollingPolicy | None = None) -> None:
        if calls_per_minute < 0:
            raise ValueError("calls_per_minute must not be negative")
        self.policy = policy or PollingPolicy()
        self.calls_per_minute = calls_per_minute
        self._videos: dict[str, _Video] = {}

    @property
    def capacity(self) -> int:
        """Videos that can be sampled per minute."""
        return self.calls_per_minute * self.policy.ids_per_call

    def __len__(self) -> int:
        return len(self._videos)

    def register(self, video_id: str, created_at: float, now: float) -> None:
        """Start polling a video (idempotent: a known video keeps its state)."""
        if video_id in self._videos:
            return
        video = _Video(created_at=created_at, registered_at=now)
        video.interval = desired_interval(now - created_at, (), False, self.policy)
        self._videos[video_id] = video

    def forget(self, video_id: str) -> None:
        self._videos.pop(video_id, None)

    def set_pulse(self, video_id: str, active: bool, now: float) -> None:
        video = self._videos[video_id]
        video.pulse_active = active
        video.interval = self._interval(video, now)

    def observe(self, video_id: str, sample: VideoSample) -> None:
        """What a poll returned; keeps the last three samples, decides the next interval."""
        video = self._videos.get(video_id)
        if video is None:
            return
        if video.samples and sample.at <= video.samples[-1].at:
            return  # a stale or repeated answer: the newer state stands
        video.samples = (*video.samples[-2:], sample)
        # a sample is news as of its time, however it came (a poll, a backfill)
        if video.last_polled_at is None or video.last_polled_at < sample.at:
            video.last_polled_at = sample.at
        video.rising = is_rising(video.samples, self.policy, was_rising=video.rising)
        video.interval = self._interval(video, sample.at)

    def is_rising(self, video_id: str) -> bool:
        return self._videos[video_id].rising

    def interval_of(self, video_id: str) -> float:
        return self._videos[video_id].interval

    def last_polled_at(self, video_id: str) -> float | None:
        return self._videos[video_id].last_polled_at

    def plan(self, now: float) -> list[list[str]]:
        """The ids to query this minute, in batches; they count as polled at `now`."""
        chosen = self._choose(now)
        for video_id in chosen:
            self._videos[video_id].last_polled_at = now
        size = self.policy.ids_per_call
        return [chosen[i : i + size] for i in range(0, len(chosen), size)]

    def _interval(self, video: _Video, now: float) -> float:
        return desired_interval(
            now - video.created_at,
            video.samples,
            video.pulse_active,
            self.policy,
            was_rising=video.rising,
        )

    def _choose(self, now: float) -> list[str]:
        capacity = self.capacity
        if capacity <= 0 or not self._videos:
            return []
        if len(self._videos) <= capacity:
            return sorted(self._videos)
        forced = self._forced_by_deadlines(now, capacity)
        taken = set(forced)
        rest = capacity - len(forced)
        if rest <= 0:
            return forced
        # Rule 3: by overdue-ness; never-polled videos rank above every polled one.
        ranked = heapq.nlargest(
            rest,
            (
                (
                    math.inf
                    if video.last_polled_at is None
                    else (now - video.last_polled_at) / video.interval,
                    # ties: the hot one, the earlier registration, the id (determinism)
                    video.hot,
                    -video.registered_at,
                    _Descending(video_id),
                )
                for video_id, video in self._videos.items()
                if video_id not in taken
            ),
        )
        return forced + [key[-1].value for key in ranked]

    def _forced_by_deadlines(self, now: float, capacity: int) -> list[str]:
        """Rule 2: the fewest polls this minute that keep every deadline reachable,
        earliest deadline first."""
        staleness = self.policy.max_staleness
        # Equal deadlines: the more overdue video first, then the hot one, then the id.
        deadlines = sorted(
            (
                video.registered_at + staleness,
                -math.inf,
                not video.hot,
                video_id,
            )
            if video.last_polled_at is None
            else (
                video.last_polled_at + staleness,
                -(now - video.last_polled_at) / video.interval,
                not video.hot,
                video_id,
            )
            for video_id, video in self._videos.items()
        )
        must = 0
        for k, (deadline, *_) in enumerate(deadlines, start=1):
            # minutes after this one that are still in time for the k-th deadline
            later_minutes = max(math.floor(deadline - now + 1e-9), 0)
            if later_minutes * capacity >= len(deadlines):
                break  # this and every later deadline leave room for everyone
            must = max(must, k - later_minutes * capacity)
        must = min(must, capacity)
        return [key[-1] for key in deadlines[:must]]


@dataclass(frozen=True, slots=True)
class _Descending:
    """Orders ids so that, under `heapq.nlargest`, the smaller id wins a tie."""

    value: str

    def __lt__(self, other: _Descending) -> bool:
        return self.value > other.value
