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
   highest first (never-polled videos first of all), ties: the hot one, then the earlier
   registered. Overdue-ness grows
   fastest for the hottest videos, so when the budget is short every video's real interval
   stretches by the same factor (proportional share) and when it is ample the spare calls
   still go where the next sample is most likely to show something. The planner is
   work-conserving: it never leaves a call of the budget unused while there are videos.

Deterministic: the same registrations, samples and `now`s give the same plans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
    slot: int
    created_at: float
    samples: tuple[VideoSample, ...] = ()
    pulse_active: bool = False
    rising: bool = False


class PollScheduler:
    """Per-video polling state and the minute-by-minute plan (rules 2 and 3).

    Call `plan(now)` once a minute: it returns the batches to query (each at most
    `ids_per_call` ids, at most `calls_per_minute` batches) and counts them as polled at
    `now`. Feed what each poll returned with `observe`, and pulse starts and ends with
    `set_pulse`. The per-minute ranking runs over arrays (one slot per video, in
    registration order), so planning for 10,000 videos takes about a millisecond.
    """

    def __init__(self, calls_per_minute: int, policy: PollingPolicy | None = None) -> None:
        if calls_per_minute < 0:
            raise ValueError("calls_per_minute must not be negative")
        self.policy = policy or PollingPolicy()
        self.calls_per_minute = calls_per_minute
        self._videos: dict[str, _Video] = {}
        self._ids: list[str] = []
        self._size = 0
        self._registered = np.zeros(16)
        self._last = np.full(16, np.nan)  # NaN: never polled
        self._interval = np.ones(16)
        self._hot = np.zeros(16, dtype=bool)
        self._active = np.zeros(16, dtype=bool)

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
        slot = self._size
        if slot == self._registered.size:
            self._grow()
        self._size += 1
        self._ids.append(video_id)
        self._videos[video_id] = _Video(slot=slot, created_at=created_at)
        self._registered[slot] = now
        self._last[slot] = np.nan
        self._interval[slot] = desired_interval(now - created_at, (), False, self.policy)
        self._hot[slot] = False
        self._active[slot] = True

    def forget(self, video_id: str) -> None:
        video = self._videos.pop(video_id, None)
        if video is not None:
            self._active[video.slot] = False

    def set_pulse(self, video_id: str, active: bool, now: float) -> None:
        video = self._videos[video_id]
        video.pulse_active = active
        self._decide(video, now)

    def observe(self, video_id: str, sample: VideoSample) -> None:
        """What a poll returned; keeps the last three samples, decides the next interval."""
        video = self._videos.get(video_id)
        if video is None:
            return
        if video.samples and sample.at <= video.samples[-1].at:
            return  # a stale or repeated answer: the newer state stands
        video.samples = (*video.samples[-2:], sample)
        # a sample is news as of its time, however it came (a poll, a backfill)
        last = self._last[video.slot]
        if np.isnan(last) or last < sample.at:
            self._last[video.slot] = sample.at
        video.rising = is_rising(video.samples, self.policy, was_rising=video.rising)
        self._decide(video, sample.at)

    def follows(self, video_id: str) -> bool:
        return video_id in self._videos

    def is_rising(self, video_id: str) -> bool:
        return self._videos[video_id].rising

    def interval_of(self, video_id: str) -> float:
        return float(self._interval[self._videos[video_id].slot])

    def last_polled_at(self, video_id: str) -> float | None:
        last = float(self._last[self._videos[video_id].slot])
        return None if math.isnan(last) else last

    def plan(self, now: float) -> list[list[str]]:
        """The ids to query this minute, in batches; they count as polled at `now`."""
        chosen = self._choose(now)
        self._last[chosen] = now
        ids = [self._ids[slot] for slot in chosen.tolist()]
        size = self.policy.ids_per_call
        return [ids[i : i + size] for i in range(0, len(ids), size)]

    def _decide(self, video: _Video, now: float) -> None:
        self._hot[video.slot] = video.rising or video.pulse_active
        self._interval[video.slot] = desired_interval(
            now - video.created_at,
            video.samples,
            video.pulse_active,
            self.policy,
            was_rising=video.rising,
        )

    def _grow(self) -> None:
        extra = self._registered.size
        self._registered = np.concatenate([self._registered, np.zeros(extra)])
        self._last = np.concatenate([self._last, np.full(extra, np.nan)])
        self._interval = np.concatenate([self._interval, np.ones(extra)])
        self._hot = np.concatenate([self._hot, np.zeros(extra, dtype=bool)])
        self._active = np.concatenate([self._active, np.zeros(extra, dtype=bool)])

    def _choose(self, now: float) -> np.ndarray:
        """Slots to poll now: deadline-forced ones first, then by overdue-ness."""
        capacity = self.capacity
        size = self._size
        active = self._active[:size]
        slots = np.flatnonzero(active)
        if capacity <= 0 or slots.size == 0:
            return slots[:0]
        if slots.size <= capacity:
            return slots
        last = self._last[:size]
        never = np.isnan(last)
        deadline = np.where(never, self._registered[:size], last) + self.policy.max_staleness
        with np.errstate(invalid="ignore"):
            overdue = np.where(never, np.inf, (now - last) / self._interval[:size])
        overdue[~active] = -np.inf
        hot = self._hot[:size]
        forced = self._forced(now, deadline, overdue, hot, active, capacity, slots.size)
        rest = capacity - forced.size
        if rest <= 0:
            return forced
        # Rule 3: by overdue-ness (never-polled videos first); ties: the hot one, then
        # the earlier registered, so the same inputs give the same plan.
        overdue[forced] = -np.inf
        order = np.lexsort((np.arange(size), ~hot, -overdue))
        return np.concatenate([forced, order[:rest]])

    @staticmethod
    def _forced(
        now: float,
        deadline: np.ndarray,
        overdue: np.ndarray,
        hot: np.ndarray,
        active: np.ndarray,
        capacity: int,
        count: int,
    ) -> np.ndarray:
        """Rule 2: the fewest polls this minute that keep every deadline reachable: if the
        k-th earliest deadline leaves m whole minutes after this one, k - capacity * m of
        them must go now; earliest deadline first (equal ones: the more overdue, the hot
        one, the earlier registered)."""
        # Whole minutes after this one still in time; past ceil(count / capacity) minutes
        # a deadline leaves room for everyone and forces nothing.
        horizon = -(-count // capacity)
        later = np.maximum(np.floor(deadline - now + 1e-9), 0)
        near = active & (later <= horizon)
        per_minute = np.bincount(later[near].astype(np.int64), minlength=horizon + 1)
        must = int(max(0, np.max(np.cumsum(per_minute) - np.arange(per_minute.size) * capacity)))
        must = min(must, capacity)
        if must == 0:
            return np.flatnonzero(near)[:0]
        candidates = np.flatnonzero(near)
        order = np.lexsort(
            (candidates, ~hot[candidates], -overdue[candidates], deadline[candidates])
        )
        return candidates[order[:must]]
