"""Adaptive polling (issue 16, item 4): budget, staleness, heat and determinism, as
properties over generated populations and poll histories."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.collect.domain.polling import (
    PollingPolicy,
    PollScheduler,
    VideoSample,
    desired_interval,
    is_rising,
)


@dataclass(frozen=True)
class Population:
    """Videos with a creation time (minutes before the start) and a view rate per minute
    that may jump (an onset) at some minute of the run."""

    ages: list[float]
    base_rates: list[float]
    onsets: list[int | None]
    registered_at: list[int]


@st.composite
def populations(draw: st.DrawFn, max_videos: int = 60) -> Population:
    size = draw(st.integers(1, max_videos))
    return Population(
        ages=draw(st.lists(st.floats(0, 5000), min_size=size, max_size=size)),
        base_rates=draw(st.lists(st.floats(0, 50), min_size=size, max_size=size)),
        onsets=draw(st.lists(st.none() | st.integers(0, 120), min_size=size, max_size=size)),
        registered_at=draw(
            st.lists(st.sampled_from([0, 0, 0, 5, 30]), min_size=size, max_size=size)
        ),
    )


def views_at(population: Population, index: int, minute: float) -> int:
    """Cumulative views: the base rate, times 20 from the onset on."""
    rate = population.base_rates[index]
    onset = population.onsets[index]
    if onset is None or minute <= onset:
        return int(rate * minute)
    return int(rate * onset + 20 * (rate + 1) * (minute - onset))


def run(
    population: Population, calls: int, policy: PollingPolicy, minutes: int
) -> tuple[list[list[list[str]]], dict[str, list[int]]]:
    """Plans of every minute, and the minutes each video was polled."""
    scheduler = PollScheduler(calls, policy)
    polled: dict[str, list[int]] = {}
    plans = []
    for now in range(minutes):
        for i, registered in enumerate(population.registered_at):
            if registered == now:
                scheduler.register(f"v{i:03d}", created_at=-population.ages[i], now=now)
                polled[f"v{i:03d}"] = [registered]
        plan = scheduler.plan(now)
        plans.append(plan)
        for batch in plan:
            for video_id in batch:
                polled[video_id].append(now)
                index = int(video_id[1:])
                scheduler.observe(video_id, VideoSample(now, views_at(population, index, now)))
    return plans, polled


@settings(max_examples=60, deadline=None)
@given(populations(), st.integers(0, 4), st.integers(1, 5))
def test_a_plan_never_exceeds_the_budget(
    population: Population, calls: int, ids_per_call: int
) -> None:
    policy = PollingPolicy(ids_per_call=ids_per_call)
    plans, _ = run(population, calls, policy, minutes=90)
    for plan in plans:
        assert len(plan) <= calls
        assert all(1 <= len(batch) <= ids_per_call for batch in plan)
        ids = [video_id for batch in plan for video_id in batch]
        assert len(ids) == len(set(ids))


@settings(max_examples=60, deadline=None)
@given(populations(max_videos=80), st.integers(1, 3), st.sampled_from([5.0, 10.0, 20.0, 60.0]))
def test_no_video_waits_beyond_the_max_staleness_when_the_budget_covers_everyone(
    population: Population, ids_per_call: int, max_staleness: float
) -> None:
    cold = min(30.0, max_staleness)
    policy = PollingPolicy(
        ids_per_call=ids_per_call, max_staleness=max_staleness, cold_interval=cold
    )
    # The fewest calls that poll every video once per max_staleness minutes.
    videos = len(population.ages)
    calls = math.ceil(videos / (ids_per_call * math.floor(max_staleness)))
    minutes = 150
    _, polled = run(population, calls, policy, minutes)
    for video_id, times in polled.items():
        # from registration, through every poll, to the end of the run
        gaps = [b - a for a, b in zip(times, [*times[1:], minutes - 1], strict=True)]
        assert max(gaps) <= max_staleness, (video_id, times)


def test_the_staleness_guarantee_can_fail_the_check_when_the_budget_is_short() -> None:
    """The check above bites: with half the needed budget some video waits too long."""
    population = Population(
        ages=[3000.0] * 40, base_rates=[1.0] * 40, onsets=[None] * 40, registered_at=[0] * 40
    )
    _, polled = run(population, calls=1, policy=PollingPolicy(ids_per_call=1), minutes=130)
    gaps = [b - a for times in polled.values() for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 60  # 40 videos, 1 per minute, deadline 60: feasible
    _, polled = run(
        population,
        calls=1,
        policy=PollingPolicy(ids_per_call=1, max_staleness=20, cold_interval=20),
        minutes=130,
    )
    gaps = [b - a for times in polled.values() for a, b in itertools.pairwise(times)]
    assert max(gaps) > 20


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0, 10_000),
    st.integers(2, 200),
    st.integers(3, 40),
    st.integers(1, 60),
    st.integers(0, 3),
)
def test_a_rising_video_is_polled_at_least_as_often_as_a_cold_one_of_the_same_age(
    age: float, cold_count: int, base_rate: int, gap: int, calls: int
) -> None:
    policy = PollingPolicy(ids_per_call=1)
    scheduler = PollScheduler(calls, policy)
    scheduler.register("cold", created_at=-age, now=0)
    scheduler.register("rising", created_at=-age, now=0)
    for extra in range(cold_count):  # other videos competing for the budget
        scheduler.register(f"other{extra:03d}", created_at=-age - 1, now=0)
    counts = {"cold": 0, "rising": 0}
    # Both have three samples: the cold one flat, the rising one 10x faster lately.
    for video_id, last_rate in (("cold", base_rate), ("rising", 10 * base_rate)):
        scheduler.observe(video_id, VideoSample(-2 * gap, 0))
        scheduler.observe(video_id, VideoSample(-gap, base_rate * gap))
        scheduler.observe(video_id, VideoSample(0, base_rate * gap + last_rate * gap))
    views = {"cold": 2 * base_rate * gap, "rising": 11 * base_rate * gap}
    last_seen = {"cold": 0, "rising": 0}
    for now in range(1, 120):
        # the cold one keeps its rate, the rising one's rate grows by 10 % a minute
        views["cold"] += base_rate
        views["rising"] += int(10 * base_rate * 1.1**now) + 1
        for batch in scheduler.plan(now):
            for video_id in batch:
                if video_id in counts:
                    counts[video_id] += 1
                    last_seen[video_id] = now
                    scheduler.observe(video_id, VideoSample(now, views[video_id]))
    assert counts["rising"] >= counts["cold"]
    assert scheduler.interval_of("rising") <= scheduler.interval_of("cold")


@settings(max_examples=30, deadline=None)
@given(populations(), st.integers(0, 3))
def test_the_same_inputs_give_the_same_plans(population: Population, calls: int) -> None:
    policy = PollingPolicy(ids_per_call=2)
    first, _ = run(population, calls, policy, minutes=60)
    second, _ = run(population, calls, policy, minutes=60)
    assert first == second


@given(st.floats(0, 100_000), st.booleans())
def test_the_interval_stays_within_the_policy_and_grows_with_age(age: float, pulse: bool) -> None:
    policy = PollingPolicy()
    interval = desired_interval(age, (), pulse, policy)
    assert policy.hot_interval <= interval <= policy.cold_interval
    assert desired_interval(age + 60, (), pulse, policy) >= interval
    if pulse:
        assert interval == policy.hot_interval


def test_noise_on_a_cold_video_is_not_a_rise() -> None:
    policy = PollingPolicy()
    # 1 view, then 3: three times the rate, but within Poisson noise
    noisy = (VideoSample(0, 0), VideoSample(10, 1), VideoSample(20, 4))
    assert not is_rising(noisy, policy)
    real = (VideoSample(0, 0), VideoSample(10, 100), VideoSample(20, 400))
    assert is_rising(real, policy)
    assert desired_interval(10_000, real, False, policy) == policy.hot_interval


def test_new_videos_are_polled_before_old_ones_when_the_budget_is_short() -> None:
    scheduler = PollScheduler(1, PollingPolicy(ids_per_call=1))
    scheduler.register("new", created_at=0, now=0)
    scheduler.register("old", created_at=-10_000, now=0)
    polls = {"new": 0, "old": 0}
    for now in range(60):
        for batch in scheduler.plan(now):
            for video_id in batch:
                polls[video_id] += 1
                scheduler.observe(video_id, VideoSample(now, now))
    assert polls["new"] > 3 * polls["old"] >= 3  # the old one still gets its deadline polls


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="hot_interval"):
        PollingPolicy(cold_interval=90, max_staleness=60)
    with pytest.raises(ValueError, match="calls_per_minute"):
        PollScheduler(-1)
