"""The console's pure parts: charts escape what came from outside and stay well-formed SVG,
pulse states, the ranking, figures, signed sessions and CSRF tokens, live-event batching."""

from __future__ import annotations

import asyncio
import itertools
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulsestock.console.application.live import RESYNC, LiveEvent, LiveHub
from pulsestock.console.domain.charts import (
    FanPoint,
    HourPoint,
    MinutePoint,
    PulseMark,
    forecast_fan_chart,
    heat_orders_chart,
    live_chart,
)
from pulsestock.console.domain.session import (
    Session,
    csrf_token,
    csrf_valid,
    decode_session,
    encode_session,
    new_session,
    token_matches,
)
from pulsestock.console.domain.views import (
    DECAYING,
    DETECTED,
    PEAKING,
    RawRanked,
    active_pulses,
    format_age,
    format_number,
    pulse_state,
    rank,
)
from pulsestock.console.entrypoints.http import _next as next_path

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>"\'><img src=x onerror=alert(1)>&'
SVG = "{http://www.w3.org/2000/svg}"


def hours(count: int, orders: float = 2.0) -> list[HourPoint]:
    start = NOW - timedelta(hours=count)
    return [
        HourPoint(start + timedelta(hours=i), orders * (i % 3), 10.0 * i if i % 2 else None)
        for i in range(count)
    ]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything not well-formed (an unescaped value)


def test_the_heat_chart_escapes_hostile_skus_and_pulse_ids_and_marks_each_pulse() -> None:
    pulses = [
        PulseMark(HOSTILE, NOW - timedelta(hours=5), None),
        PulseMark("p-2", NOW - timedelta(hours=20), NOW - timedelta(hours=10)),
        PulseMark("too-old", NOW - timedelta(days=9), NOW - timedelta(days=8)),
    ]
    svg = heat_orders_chart(hours(24), pulses, HOSTILE, NOW)
    assert "<script" not in svg
    assert "<img" not in svg
    assert "&lt;script&gt;" in svg
    root = parse(svg)
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.text == f"Heat and orders of {HOSTILE}"  # shown as the text it is
    markers = [g for g in root.iter(f"{SVG}g") if g.get("data-testid") == "pulse-marker"]
    assert [m.get("data-pulse-id") for m in markers] == [HOSTILE, "p-2"]  # the old one is off
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar orders"]
    assert len(bars) == sum(1 for h in hours(24) if h.orders > 0)
    heat = next(p for p in root.iter(f"{SVG}polyline") if p.get("class") == "line heat")
    assert len((heat.get("points") or "").split()) == sum(1 for h in hours(24) if h.heat)
    assert svg.__html__() == svg  # inserted by templates as it is


def test_the_fan_has_a_band_from_p10_to_p90_a_median_line_and_the_actuals() -> None:
    fan = [FanPoint(NOW + timedelta(hours=i), 1.0 + i, 2.0 + i, 4.0 + i * 2) for i in range(1, 13)]
    actuals = hours(6)
    root = parse(forecast_fan_chart(fan, actuals, HOSTILE, NOW))
    band = next(p for p in root.iter(f"{SVG}polygon") if p.get("data-testid") == "forecast-fan")
    points = [tuple(map(float, p.split(","))) for p in (band.get("points") or "").split()]
    assert len(points) == 2 * len(fan)  # upper edge out, lower edge back
    upper, lower = points[: len(fan)], points[len(fan) :][::-1]
    for (_, y_top), (_, y_bottom) in zip(upper, lower, strict=True):
        assert y_top <= y_bottom  # p90 above p10 (SVG y grows downwards)
    median = next(p for p in root.iter(f"{SVG}polyline") if p.get("data-testid") == "forecast-p50")
    assert len((median.get("points") or "").split()) == len(fan)
    dots = [c for c in root.iter(f"{SVG}circle") if c.get("data-testid") == "actual-orders"]
    assert len(dots) == len(actuals)


def test_charts_survive_empty_and_non_finite_input() -> None:
    for svg in (
        heat_orders_chart([], [], "X", NOW),
        forecast_fan_chart([], [], "X", NOW),
        live_chart([], 0, 0, 0, 0, HOSTILE),
    ):
        root = parse(svg)
        assert any(t.get("class") == "empty" for t in root.iter(f"{SVG}text"))
    weird = [HourPoint(NOW, math.inf, math.nan)]
    parse(heat_orders_chart(weird, [], "X", NOW))
    fan = [FanPoint(NOW, math.nan, math.inf, -math.inf)]
    parse(forecast_fan_chart(fan, weird, "X", NOW))


def test_the_live_chart_shows_cumulative_orders_against_the_session_forecast() -> None:
    minutes = [MinutePoint(100.0 * i, 5.0, float(i)) for i in range(1, 11)]
    root = parse(live_chart(minutes, 80, 120, 200, 45, HOSTILE))
    orders = next(p for p in root.iter(f"{SVG}polyline") if p.get("data-testid") == "live-orders")
    ys = [float(p.split(",")[1]) for p in (orders.get("points") or "").split()]
    assert len(ys) == 10
    assert ys == sorted(ys, reverse=True)  # cumulative: never down (y grows downwards)
    band = next(r for r in root.iter(f"{SVG}rect") if r.get("data-testid") == "live-forecast-band")
    assert float(band.get("height") or 0) > 0


@given(st.text(max_size=80))
def test_any_text_in_any_chart_stays_text(text: str) -> None:
    # XML 1.0 cannot carry most control characters at all; the services' ids never have them.
    text = "".join(c for c in text if c >= " " or c in "\t\n")
    pulses = [PulseMark(text, NOW - timedelta(hours=2), None)]
    for svg in (
        heat_orders_chart(hours(4), pulses, text, NOW),
        forecast_fan_chart([FanPoint(NOW, 1, 2, 3)], hours(2), text, NOW),
        live_chart([MinutePoint(1, 1, 1)], 1, 2, 3, 10, text),
    ):
        root = parse(svg)
        title = root.find(f"{SVG}title")
        assert title is not None
        assert text in (title.text or "")


@pytest.mark.parametrize(
    ("phase", "heat", "peak", "state"),
    [
        ("detected", 5.0, 5.0, DETECTED),  # signal's word wins
        ("decaying", 9.0, 5.0, DECAYING),
        ("", 10.0, 10.0, PEAKING),  # at its peak
        ("", 12.0, 10.0, PEAKING),  # above it
        ("", 8.5, 10.0, PEAKING),  # within 80 % of it
        ("", 7.9, 10.0, DECAYING),  # past it
        ("", 3.0, 0.0, DETECTED),  # no peak known yet
        ("ended", 3.0, math.nan, DETECTED),  # a phase the page does not show
    ],
)
def test_pulse_state(phase: str, heat: float, peak: float, state: str) -> None:
    assert pulse_state(phase, heat, peak) == state


def ranked(sku: str, heat: float, pulse_at: datetime | None = None) -> RawRanked:
    return RawRanked(
        sku=sku,
        heat=heat,
        view_velocity=0,
        like_rate=0,
        share_rate=0,
        as_of=NOW,
        pulse_id=f"p-{sku}" if pulse_at else "",
        phase="peaking" if pulse_at else "",
        peak_heat=heat,
        detected_at=pulse_at,
        hot_channel="CHANNEL_TIKTOK_SHOP",
        evidence=(("rule:growth", "view_growth_1h > 5.0", {"views": 12345.0, "z": 7.25}),),
    )


def test_ranking_hottest_first_ties_by_sku_numbered_with_pulses_newest_first() -> None:
    rows = rank(
        [
            ranked("B", 5.0),
            ranked("A", 5.0, NOW - timedelta(hours=3)),
            ranked("C", math.nan),
            ranked("D", 50.0, NOW - timedelta(minutes=12)),
        ],
        NOW,
    )
    assert [(r.rank, r.sku) for r in rows] == [(1, "D"), (2, "A"), (3, "B"), (4, "C")]
    pulse = rows[0].pulse
    assert pulse is not None
    assert (pulse.state, pulse.age, pulse.hot_channel) == ("peaking", "12 min", "TikTok Shop")
    assert pulse.evidence[0].metrics == (("views", "12.3k"), ("z", "7.25"))
    assert rows[2].pulse is None
    assert [r.sku for r in active_pulses(rows)] == ["D", "A"]


def test_figures_and_ages_read_well() -> None:
    assert [format_number(v) for v in (0, 7, 0.0834, 123.4, 12345, 1234567, math.inf)] == [
        "0",
        "7",
        "0.0834",
        "123",
        "12.3k",
        "1.23M",
        "∞",
    ]
    assert [format_age(s) for s in (-3, 45, 600, 3 * 3600 + 240, 3 * 86400 + 7200)] == [
        "0 s",
        "45 s",
        "10 min",
        "3 h 4 min",
        "3 d 2 h",
    ]


KEY = b"k" * 32


def test_a_session_round_trips_and_a_tampered_or_expired_one_is_refused() -> None:
    session = new_session(True, now=1000.0, lifetime_s=60)
    cookie = encode_session(KEY, session)
    assert decode_session(KEY, cookie, 1030.0) == session
    assert decode_session(KEY, cookie, 1061.0) is None  # expired
    assert decode_session(b"other" * 8, cookie, 1030.0) is None  # another key
    payload, signature = cookie.split(".")
    forged = encode_session(b"guess", Session(session.nonce, True, 9e9)).split(".")[0]
    assert decode_session(KEY, f"{forged}.{signature}", 1030.0) is None
    assert decode_session(KEY, f"{payload}x.{signature}", 1030.0) is None
    assert decode_session(KEY, "not a cookie", 1030.0) is None
    assert decode_session(KEY, None, 1030.0) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    one, two = new_session(False, 0, 60), new_session(False, 0, 60)
    token = csrf_token(KEY, one)
    assert csrf_valid(KEY, one, token)
    assert not csrf_valid(KEY, two, token)
    assert not csrf_valid(KEY, one, "")
    assert not csrf_valid(KEY, one, None)
    assert not csrf_valid(KEY, None, token)
    assert token_matches("s3cret-token-0123", "s3cret-token-0123")
    assert not token_matches("s3cret-token-0123", "s3cret-token-0124")
    assert not token_matches(None, "anything")
    assert not token_matches("s3cret-token-0123", "")


async def test_live_events_are_batched_deduplicated_and_an_overflow_resyncs() -> None:
    hub = LiveHub()
    with hub.listen() as listener:
        assert await listener.next_batch(0.01, idle_s=0.01) == []  # nothing: idle
        for _ in range(3):
            hub.publish(LiveEvent("stock", "A"))
        hub.publish(LiveEvent("heat", "B"))
        assert await listener.next_batch(0.01) == [LiveEvent("stock", "A"), LiveEvent("heat", "B")]
        for index in range(listener.queue.maxsize + 5):
            hub.publish(LiveEvent("heat", f"S{index}"))
        assert await listener.next_batch(0.01) == [LiveEvent(RESYNC)]
        assert listener.queue.empty()
        waiting = asyncio.create_task(listener.next_batch(0.01))
        hub.wake_all()
        assert [event.kind for event in await waiting] == ["wake"]
    assert hub.listeners == 0


@pytest.mark.parametrize("span_hours", [3, 24, 72, 120, 24 * 30])
def test_time_labels_are_few_enough_never_to_overlap(span_hours: int) -> None:
    root = parse(heat_orders_chart(hours(span_hours), [], "X", NOW))
    labels = [t for t in root.iter(f"{SVG}text") if ":" in (t.text or "")]
    assert 1 <= len(labels) <= 8
    xs = [float(t.get("x") or 0) for t in labels]
    assert all(b - a >= 60 for a, b in itertools.pairwise(xs))


def test_non_ascii_cookies_and_tokens_are_invalid_not_errors() -> None:
    key = b"k" * 32
    session = new_session(True, 1_000.0, 3_600.0)
    cookie = encode_session(key, session)
    payload, _ = cookie.split(".")
    assert decode_session(key, f"{payload}.ümlaut", 1_000.0) is None
    assert not csrf_valid(key, session, "tökén")
    assert decode_session(key, cookie, 1_000.0) == session


@pytest.mark.parametrize(
    "target", ["/\t/evil.example", "/\n/evil.example", "//evil.example", "/\\evil", "https://x"]
)
def test_sign_in_never_sends_the_operator_to_another_host(target: str) -> None:
    assert next_path({"next": target}) == "/"
    assert next_path({"next": "/sku/LAMP-7?x=1"}) == "/sku/LAMP-7?x=1"
