"""The pulse detector, metrics, rules and pulse lifecycle: pure domain code."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pulsestock.signal.domain.detector import PulseDetector
from pulsestock.signal.domain.metrics import Rule, Sample, metrics_of
from pulsestock.signal.domain.pulses import DECAYING, ENDED, PEAKING, Pulse, advance

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def noisy(level: float, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0, rng.gauss(level, level * 0.25)) for _ in range(count)]


def test_noise_without_a_pulse_never_alerts() -> None:
    for seed in range(20):
        detector = PulseDetector()
        steps = [detector.update(v) for v in noisy(200, 300, seed)]
        assert not any(s.alert for s in steps), seed
        assert all(0.0 <= s.score < 1.0 for s in steps)


def test_a_surge_alerts_once_soon_after_it_starts() -> None:
    detector = PulseDetector()
    series = (
        noisy(200, 40, seed=1)
        + [200 * 20 * (1 + i / 5) for i in range(10)]
        + noisy(200, 30, seed=2)
    )
    steps = [detector.update(v) for v in series]
    alerts = [i for i, s in enumerate(steps) if s.alert]
    assert len(alerts) == 1
    assert 40 <= alerts[0] <= 42  # within two observations of the surge
    assert steps[alerts[0]].score >= 0.5


def test_detector_state_survives_a_snapshot() -> None:
    live, series = PulseDetector(), noisy(100, 30, seed=3)
    for value in series:
        live.update(value)
    restored = PulseDetector.restore(live.snapshot(), live.config)
    assert [live.update(v) for v in (5000, 6000)] == [restored.update(v) for v in (5000, 6000)]


def samples(views: list[int], every: timedelta = timedelta(minutes=10)) -> list[Sample]:
    return [Sample(T0 + i * every, v, v // 8, v // 50, v // 100) for i, v in enumerate(views)]


def test_metrics_growth_of_the_last_hour_against_the_hour_before() -> None:
    # 100 views per 10 min for the first hour, then 700 per 10 min.
    views = [100 * i for i in range(7)] + [600 + 700 * i for i in range(1, 7)]
    metrics = metrics_of(samples(views))
    assert metrics is not None
    assert round(metrics.view_growth_1h, 6) == 6.0  # +600 %
    assert round(metrics.view_velocity) == 4200  # 700 per 10 minutes
    assert round(metrics.like_rate, 3) == 0.125


def test_rate_trends_compare_the_last_hours_new_viewers_with_the_earlier_ones() -> None:
    # An hour at 1 like per 8 views, then an hour whose 6,000 new views bring 1,500 likes
    # (1 per 4) and the same share and comment rates as before.
    first = [Sample(T0 + i * timedelta(minutes=10), 800 * i, 100 * i, 8 * i, 0) for i in range(7)]
    second = [
        Sample(T0 + (6 + i) * timedelta(minutes=10), 4800 + 1000 * i, 600 + 250 * i, 48 + 10 * i, 0)
        for i in range(1, 7)
    ]
    metrics = metrics_of(first + second)
    assert metrics is not None
    assert metrics.like_rate_trend == pytest.approx(0.25 - 0.125)
    assert metrics.share_rate_trend == pytest.approx(0.01 - 0.01)
    assert metrics.comment_rate_trend == 0.0
    rule = Rule("engages new viewers more", "like_rate_trend", ">", 0.1)
    assert rule.fires(metrics)
    young = metrics_of(first[:2])  # not an hour of history yet
    assert young is not None
    assert young.like_rate_trend == 0.0


def test_rules_fire_only_above_their_minimum_views() -> None:
    growth = Rule("views grew > 500 % within one hour", "view_growth_1h", ">", 5.0, min_views=5_000)
    small = metrics_of(samples([1 * i for i in range(7)] + [6 + 7 * i for i in range(1, 7)]))
    big = metrics_of(samples([1000 * i for i in range(7)] + [6000 + 7000 * i for i in range(1, 7)]))
    assert small is not None
    assert big is not None
    assert not growth.fires(small)  # +600 %, but from a tiny base
    assert growth.fires(big)


def test_a_pulse_peaks_decays_and_ends_with_its_heat() -> None:
    pulse = Pulse("p1", "MUG", T0, "CHANNEL_TIKTOK_SHOP", peak_heat=10)
    assert not advance(pulse, 50, T0)
    assert pulse.phase == PEAKING
    assert not advance(pulse, 30, T0)
    assert pulse.phase == DECAYING
    assert advance(pulse, 9, T0 + timedelta(hours=5))
    assert (pulse.phase, pulse.ended_at) == (ENDED, T0 + timedelta(hours=5))
    assert not advance(pulse, 100, T0)  # an ended pulse stays ended
