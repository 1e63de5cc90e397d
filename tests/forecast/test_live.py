"""The live-session forecast: its invariants (Hypothesis), its accuracy on generated
sessions it was not fitted on, the generator's calibration against the real attention
series, and ForecastLiveSession through the real stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from pulsestock.forecast.domain.live import (
    DEFAULT_PRIORS,
    MODEL,
    fit_priors,
    forecast_live,
)
from pulsestock.forecast.domain.live_generator import (
    REAL_SHAPES,
    SessionRanges,
    ShapeSummary,
    attention_curve,
    attention_integral,
    generate_sessions,
    session_shape,
    tail_ratio,
)
from pulsestock.forecast.entrypoints.live_api import per_minute
from pulsestock.v1 import forecast_pb2 as pb
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub

from tests.bench.bench_forecast_live import TRAIN_SEED, wikipedia_shapes, youtube_shapes
from tests.forecast.test_service import publish, stamp
from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import eventually

counts = st.integers(min_value=0, max_value=3000)


@st.composite
def early_minutes(draw: st.DrawFn) -> tuple[list[float], list[float], list[float]]:
    minutes = draw(st.integers(min_value=1, max_value=40))
    viewers = draw(st.lists(counts, min_size=minutes, max_size=minutes))
    interactions = draw(st.lists(st.integers(0, 300), min_size=minutes, max_size=minutes))
    orders = draw(st.lists(st.integers(0, 40), min_size=minutes, max_size=minutes))
    return [float(x) for x in viewers], [float(x) for x in interactions], [float(x) for x in orders]


@settings(max_examples=40, deadline=None)
@given(early_minutes())
def test_quantiles_are_ordered_never_below_what_was_sold_and_deterministic(
    session: tuple[list[float], list[float], list[float]],
) -> None:
    viewers, interactions, orders = session
    first = forecast_live(viewers, interactions, orders)
    p10, p50, p90 = (first.quantile(q) for q in (0.1, 0.5, 0.9))
    assert sum(orders) == first.orders_so_far <= p10 <= p50 <= p90
    assert first.expected_orders >= first.orders_so_far
    assert first.expected_length_minutes >= len(viewers)
    assert first.minutes_observed == len(viewers)
    assert forecast_live(viewers, interactions, orders) == first


def test_a_session_longer_than_any_prior_still_gets_a_forecast_past_its_present() -> None:
    minutes = 5000  # a reused live id: still bounded work, still a sensible answer
    f = forecast_live(np.full(minutes, 300.0), np.full(minutes, 10.0), np.full(minutes, 1.0))
    assert f.expected_length_minutes >= minutes
    assert minutes <= f.quantile(0.1) <= f.quantile(0.9)


def test_it_recovers_the_session_total_at_minute_15_better_than_scaling_by_length() -> None:
    """60 sessions of a seed no prior was fitted on (within the training ranges): the
    median absolute % error of p50 below 50 % (the bench measures 40 % on 300), and below
    the naive 'orders so far x mean length / 15' on the same sessions; the 10-90 %
    interval covers 80 % ± 15 points (60 sessions: ± 3 binomial sd)."""
    sessions = [s for s in generate_sessions(60, 31) if s.length > 15 and s.total_orders > 0]
    ours, naive, covered = [], [], []
    for s in sessions:
        f = forecast_live(s.viewers[:15], s.interactions[:15], s.orders[:15])
        ours.append(abs(f.quantile(0.5) - s.total_orders) / s.total_orders)
        scaled = s.orders[:15].sum() * DEFAULT_PRIORS.length_median / 15
        naive.append(abs(scaled - s.total_orders) / s.total_orders)
        covered.append(f.quantile(0.1) <= s.total_orders <= f.quantile(0.9))
    assert float(np.median(ours)) < 0.5
    assert float(np.median(ours)) < float(np.median(naive))
    assert 0.65 <= float(np.mean(covered)) <= 0.95


def test_it_forecasts_from_the_first_minute_and_narrows_as_minutes_pass() -> None:
    sessions = [s for s in generate_sessions(30, 5) if s.length > 30 and s.total_orders > 0]
    widths: dict[int, list[float]] = {1: [], 5: [], 30: []}
    for s in sessions:
        for minute in widths:
            f = forecast_live(s.viewers[:minute], s.interactions[:minute], s.orders[:minute])
            widths[minute].append((f.quantile(0.9) - f.quantile(0.1)) / s.total_orders)
    assert np.median(widths[30]) < np.median(widths[5]) < np.median(widths[1])


def test_the_default_priors_are_what_fit_priors_gives_on_the_training_sessions() -> None:
    fitted = fit_priors(generate_sessions(2000, TRAIN_SEED))
    assert fitted.length_median == pytest.approx(DEFAULT_PRIORS.length_median, rel=0.01)
    assert fitted.length_sd == pytest.approx(DEFAULT_PRIORS.length_sd, rel=0.02)
    assert fitted.log_conversion_at_median == pytest.approx(
        DEFAULT_PRIORS.log_conversion_at_median, abs=0.01
    )
    assert fitted.conversion_engagement_slope == pytest.approx(
        DEFAULT_PRIORS.conversion_engagement_slope, abs=0.01
    )
    assert fitted.log_conversion_sd == pytest.approx(DEFAULT_PRIORS.log_conversion_sd, abs=0.01)
    assert fitted.order_dispersion == pytest.approx(DEFAULT_PRIORS.order_dispersion, rel=0.02)
    # ... and they recover what generated them (engagement slope 0.5, conversion 0.002).
    assert fitted.conversion_engagement_slope == pytest.approx(0.5, abs=0.05)
    assert np.exp(fitted.log_conversion_at_median) == pytest.approx(0.002, rel=0.1)


def test_the_documented_real_shapes_are_what_the_data_measures() -> None:
    wiki = ShapeSummary.of(wikipedia_shapes())
    assert wiki.pulses == REAL_SHAPES.pulses
    assert wiki.rise_to_lifetime == pytest.approx(REAL_SHAPES.rise_to_lifetime, abs=0.001)
    assert wiki.half_life_to_lifetime == pytest.approx(REAL_SHAPES.half_life_to_lifetime, abs=0.001)
    assert wiki.peak_to_baseline == pytest.approx(REAL_SHAPES.peak_to_baseline, abs=0.05)
    pooled = [s.tail_ratio for s in wikipedia_shapes() + youtube_shapes()]
    assert float(np.median(pooled)) == pytest.approx(REAL_SHAPES.tail_ratio, abs=0.01)


def test_generated_sessions_have_the_calibrated_shapes() -> None:
    """Generated sessions measured as the real series are: medians within the documented
    gaps (the bench: rise -4 %, tail ratio -1 %, peak/baseline +6 %, half-life/lifetime
    +14 %, the family's rise/decay coupling)."""
    shapes = [s for s in map(session_shape, generate_sessions(300, 4242)) if s is not None]
    assert len(shapes) >= 290
    ours = ShapeSummary.of(shapes)
    assert ours.rise_to_lifetime == pytest.approx(REAL_SHAPES.rise_to_lifetime, rel=0.1)
    assert ours.tail_ratio == pytest.approx(REAL_SHAPES.tail_ratio, rel=0.05)
    assert ours.peak_to_baseline == pytest.approx(REAL_SHAPES.peak_to_baseline, rel=0.15)
    assert ours.half_life_to_lifetime == pytest.approx(REAL_SHAPES.half_life_to_lifetime, rel=0.2)
    # Wider ranges are wider: the held-out sessions' lengths spread more.
    narrow = np.std(np.log([s.length for s in generate_sessions(300, 1)]))
    wide = np.std(
        np.log([s.length for s in generate_sessions(300, 1, SessionRanges().widened(1.5))])
    )
    assert wide > 1.2 * narrow


@settings(max_examples=30, deadline=None)
@given(
    st.floats(1.0, 60.0),
    st.floats(1.0, 60.0),
    st.floats(0.0, 1.5),
    st.integers(0, 100),
)
# Tail heaviness at the exponential limit's threshold and just above it: the tail ratio and
# the curve once took different sides of it (a fresh CI run found 1e-6).
@example(1.0, 1.0, 1e-6, 0)
@example(1.0, 1.0, 1.5e-6, 0)
def test_the_curve_peaks_at_its_rise_halves_at_its_half_life_and_integrates_to_its_sum(
    rise: float, half_life: float, kappa: float, start: int
) -> None:
    assert attention_curve(np.array([rise]), rise, half_life, kappa)[0] == pytest.approx(1.0)
    assert attention_curve(np.array([rise + half_life]), rise, half_life, kappa)[
        0
    ] == pytest.approx(0.5)
    tenth = rise + tail_ratio(kappa) * half_life
    assert attention_curve(np.array([tenth]), rise, half_life, kappa)[0] == pytest.approx(0.1)
    minutes = np.arange(start, start + 400, dtype=float)
    summed = attention_curve(minutes, rise, half_life, kappa).sum()
    integral = attention_integral(start + 399.5, rise, half_life, kappa) - attention_integral(
        max(start - 0.5, 0.0), rise, half_life, kappa
    )
    # The midpoint rule: exact for straight stretches, a few % off at the sharp peak.
    assert float(integral) == pytest.approx(summed, rel=0.03, abs=0.05)


def test_samples_become_per_minute_series() -> None:
    at = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    samples = [
        (at, 100.0, 5.0, 1.0),  # minute 0
        (at + timedelta(seconds=30), 300.0, 9.0, 2.0),  # minute 0 again
        (at + timedelta(seconds=70), 400.0, 15.0, 2.0),  # minute 1
        # minute 2: no sample
        (at + timedelta(seconds=185), 200.0, 20.0, 7.0),  # minute 3
    ]
    viewers, interactions, orders = per_minute(samples)
    assert viewers.tolist() == [200.0, 400.0, 400.0, 200.0]
    assert interactions.tolist() == [9.0, 6.0, 0.0, 5.0]
    assert orders.tolist() == [2.0, 0.0, 0.0, 5.0]


# --- through the real stack ----------------------------------------------------------------


@pytest.mark.slow
async def test_forecast_live_session_through_the_stack(
    forecast: ForecastServiceStub, bus: NATS
) -> None:
    session = next(s for s in generate_sessions(20, 77) if s.length > 40 and s.orders[:15].sum())
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=14, seconds=30)
    interactions = np.cumsum(session.interactions[:15])
    orders = np.cumsum(session.orders[:15])
    # LIVE-7 is on (its last sample 30 s ago); LIVE-OLD fell silent 45 minutes ago.
    over = start - timedelta(minutes=60)
    for live_id, began in (("LIVE-7", start), ("LIVE-OLD", over)):
        for minute in range(15):
            sample = iev.LiveSampled(
                live_id=live_id,
                skus=["MUG-1"],
                observed_at=stamp(began + timedelta(minutes=minute)),
                concurrent_viewers=int(session.viewers[minute]),
                interactions=int(interactions[minute]),
                orders_so_far=int(orders[minute]),
            )
            await publish(bus, "ingest", live_id, sample)
    request = pb.ForecastLiveSessionRequest(live_id="LIVE-7")

    async def all_folded() -> bool:
        for live_id in ("LIVE-7", "LIVE-OLD"):
            try:
                reply = await forecast.ForecastLiveSession(
                    pb.ForecastLiveSessionRequest(live_id=live_id), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return False
                raise
            if reply.minutes_observed != 15 or reply.orders_so_far != orders[-1]:
                return False
        return True

    await eventually(all_folded, within=30, what="both sessions' 15 samples folded")
    reply = await forecast.ForecastLiveSession(request, timeout=10)
    expected = forecast_live(
        session.viewers[:15], session.interactions[:15], session.orders[:15]
    )  # the stored samples are exactly these minutes: the same numbers
    assert reply.live_id == "LIVE-7"
    assert reply.model == MODEL
    assert reply.orders_so_far == float(orders[-1])
    assert reply.orders_so_far <= reply.p10 <= reply.p50 <= reply.p90
    assert reply.p50 == pytest.approx(expected.quantile(0.5))
    assert reply.expected_orders == pytest.approx(expected.expected_orders)
    assert reply.expected_length_minutes > 15
    assert reply.p10 <= session.total_orders * 3
    assert reply.p90 >= session.total_orders / 3

    ended = await forecast.ForecastLiveSession(
        pb.ForecastLiveSessionRequest(live_id="LIVE-OLD"), timeout=10
    )
    assert ended.model == "live_session_over"
    assert ended.p10 == ended.p50 == ended.p90 == ended.expected_orders == float(orders[-1])
    assert ended.expected_length_minutes == 15

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await forecast.ForecastLiveSession(
            pb.ForecastLiveSessionRequest(live_id="not a live id!"), timeout=10
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"live_id"}
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await forecast.ForecastLiveSession(
            pb.ForecastLiveSessionRequest(live_id="LIVE-NEVER"), timeout=10
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
