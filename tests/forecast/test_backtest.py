"""Rolling-origin backtests (application/backtest.py): every model scored on the same origins,
the vectorised scores equal metrics.py's per-origin functions, a perfect forecaster scores
zero, no origin's scores depend on data after its horizon; and the Backtest RPC through the
real service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.bus import ensure_stream, service_stream
from pulsestock.forecast.application import backtest as bt
from pulsestock.forecast.domain import metrics
from pulsestock.forecast.domain.baselines import REFERENCES
from pulsestock.forecast.domain.sku_forecast import seed_of
from pulsestock.v1 import forecast_pb2 as pb
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import running_service

LEVELS = (0.1, 0.5, 0.9)


def intermittent(seed: int, n: int) -> np.ndarray:
    """Zero-inflated negative binomial demand, seeded."""
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(1.5, 1.5 / (1.5 + 2.0), n)
    return (counts * (rng.random(n) < 0.4)).astype(float)


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, bt.SeriesBacktest]:
    history = intermittent(7, 90)
    origins = bt.scorable_origins(history.size, 7, min_history=28, every=3)
    return history, bt.backtest_series(history, horizon=7, origins=origins, season=7)


def test_every_model_is_scored_on_the_same_origins_and_scores_are_finite(
    scored: tuple[np.ndarray, bt.SeriesBacktest],
) -> None:
    _, result = scored
    assert list(result.models) == ["ours", *REFERENCES]
    for scores in result.models.values():
        assert np.array_equal(scores.origins, result.origins)
        assert scores.pinball.shape == (result.origins.size, len(LEVELS))
        for values in (scores.pinball, scores.crps, scores.coverage_80, scores.rmsse):
            assert np.all(np.isfinite(values))
        assert np.all((scores.coverage_80 >= 0) & (scores.coverage_80 <= 1))
    document = bt.report(result).as_dict()
    json.dumps(document, allow_nan=False)  # no NaN leaks into the JSON
    assert [m["model"] for m in document["models"]] == ["ours", *REFERENCES]
    assert set(document["ours_minus_baseline"]) == set(REFERENCES)
    for scores in document["ours_minus_baseline"].values():
        assert set(scores) == set(bt.COMPARED)
        for interval in scores.values():
            assert interval["low"] <= interval["mean"] <= interval["high"]


def test_vectorised_scores_equal_the_metrics_functions(
    scored: tuple[np.ndarray, bt.SeriesBacktest],
) -> None:
    history, result = scored
    grid = bt.scoring_levels(LEVELS)
    forecaster = bt.our_forecast()
    ours = result.models["ours"]
    for row, origin in enumerate(result.origins):
        seen, actual = history[: origin + 1], history[origin + 1 : origin + 8]
        made = forecaster(seen, None, 7, grid)
        q = made.quantiles
        at = [grid.index(level) for level in LEVELS]
        crps_at = [grid.index(level) for level in metrics.CRPS_LEVELS]
        low, high = grid.index(0.1), grid.index(0.9)
        assert ours.pinball[row] == pytest.approx(metrics.pinball(actual, q[:, at], LEVELS))
        assert ours.crps[row] == pytest.approx(
            metrics.crps_from_quantiles(actual, q[:, crps_at], metrics.CRPS_LEVELS)
        )
        assert ours.coverage_80[row] == metrics.coverage(actual, q[:, low], q[:, high])
        assert ours.rmsse[row] == pytest.approx(metrics.rmsse(actual, made.means, seen))
        assert ours.mase[row] == pytest.approx(metrics.mase(actual, made.means, seen))
        assert ours.log_ratio[row] == pytest.approx(
            metrics.log_ratio_cumulative(made.means, actual)
        )
        scale = metrics.naive_scale(seen, squared=False)
        assert ours.scaled_pinball[row] == pytest.approx(ours.pinball[row].mean() / scale)


def test_a_perfect_forecaster_scores_zero() -> None:
    history = intermittent(3, 60)

    def oracle(
        seen: np.ndarray, heat: np.ndarray | None, horizon: int, levels: Sequence[float]
    ) -> bt.OriginForecast:
        future = history[seen.size : seen.size + horizon]
        return bt.OriginForecast(future, np.repeat(future[:, None], len(levels), axis=1))

    origins = bt.scorable_origins(history.size, 5, min_history=14)
    result = bt.backtest_series(history, horizon=5, origins=origins, ours=oracle)
    perfect = bt.report(result).ours
    assert perfect.pinball_by_level == {0.1: 0.0, 0.5: 0.0, 0.9: 0.0}
    assert (perfect.crps, perfect.rmsse, perfect.mase, perfect.log_ratio_median_abs) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert perfect.coverage_80 == 1.0
    # ... and beats every baseline, with a bootstrap interval entirely below zero.
    for interval in bt.report(result).differences["ses"].values():
        assert interval.high < 0


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), origin=st.integers(20, 50), horizon=st.integers(1, 6))
def test_no_origin_sees_past_its_horizon(seed: int, origin: int, horizon: int) -> None:
    """The scores of an origin are the same whether the series goes on after its horizon
    or stops there, even when what follows is a burst."""
    history = intermittent(seed, 70)
    history[origin + horizon + 1 :] *= 20.0
    full = bt.backtest_series(history, horizon=horizon, origins=[origin], season=7)
    cut = bt.backtest_series(
        history[: origin + horizon + 1], horizon=horizon, origins=[origin], season=7
    )
    for name, scores in full.models.items():
        other = cut.models[name]
        for field in ("pinball", "crps", "coverage_80", "rmsse", "mase", "log_ratio"):
            assert np.array_equal(getattr(scores, field), getattr(other, field), equal_nan=True)


def test_origins_need_their_whole_horizon_and_pooling_resamples_series() -> None:
    history = intermittent(1, 40)
    with pytest.raises(ValueError, match="horizon"):
        bt.backtest_series(history, horizon=5, origins=[35])
    assert bt.scorable_origins(40, 5, min_history=10, every=4).tolist() == [
        9,
        13,
        17,
        21,
        25,
        29,
        33,
    ]
    # A longer series keeps a shorter one's origins (every:K counts from the start).
    assert set(bt.scorable_origins(30, 5, min_history=10, every=4)) <= set(
        bt.scorable_origins(40, 5, min_history=10, every=4)
    )
    runs = [
        bt.backtest_series(
            intermittent(seed, 50),
            horizon=5,
            origins=bt.scorable_origins(50, 5, min_history=20, every=5),
        )
        for seed in range(4)
    ]
    pooled = bt.pooled_report(runs)
    assert (pooled.units, pooled.unit_count, pooled.origin_count) == ("series", 4, 4 * 6)
    # The pooled mean over every origin of every series.
    crps = np.concatenate([run.models["ours"].crps for run in runs]).mean()
    assert pooled.ours.crps == pytest.approx(crps)


# --- the RPC ---------------------------------------------------------------------------------

START = datetime(2026, 11, 2, tzinfo=UTC)


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


def request(sku: str, start: datetime, end: datetime, horizon: int = 0) -> pb.BacktestRequest:
    out = pb.BacktestRequest(sku=sku, horizon_hours=horizon)
    getattr(out, "from").CopyFrom(stamp(start))
    out.to.CopyFrom(stamp(end))
    return out


@pytest.fixture
async def service(infra: Infra, nats_url: str) -> AsyncIterator[tuple[ForecastServiceStub, str]]:
    """The forecast service as in test_service.py, and its schema."""
    import nats

    client = await nats.connect(nats_url)
    try:
        for producer in ("ingest", "signal", "forecast"):
            await ensure_stream(client.jetstream(), service_stream(producer))
    finally:
        await client.close()
    schema = unique_name("fc")
    try:
        async with running_service(
            "forecast", infra.database_url, nats_url, schema, {"PULSESTOCK_PARTITIONS": "4"}
        ) as running:
            yield ForecastServiceStub(running.channel), schema
    finally:
        await drop_schema(infra.database_url, schema)


@pytest.mark.slow
async def test_the_backtest_rpc_scores_ours_and_every_baseline(
    service: tuple[ForecastServiceStub, str], infra: Infra
) -> None:
    forecast, schema = service
    # Four days of a slow hourly seller written straight into the service's projections
    # (what folding its orders would have stored: every hour, zeros included), then the RPC.
    demand = intermittent(5, 96)
    conn = await asyncpg.connect(infra.database_url)
    try:
        hours = [START + timedelta(hours=i) for i in range(demand.size)]
        await conn.executemany(
            f"INSERT INTO {schema}.demand_hours VALUES ('MUG-9', $1, $2)",
            [(hour, float(q)) for hour, q in zip(hours, demand, strict=True)],
        )
        await conn.execute(
            f"INSERT INTO {schema}.sku_forecasts (sku, as_of) VALUES ('MUG-9', $1)", hours[-1]
        )
    finally:
        await conn.close()
    start, end = START + timedelta(hours=48), START + timedelta(hours=72)
    reply = await forecast.Backtest(request("MUG-9", start, end, 12), timeout=60)
    assert reply.origins == 24  # hours 48..71, each with its next 12 hours stored
    assert [m.model for m in reply.models] == ["ours", *REFERENCES]
    ours = reply.models[0]
    assert set(ours.pinball_by_level) == {"0.1", "0.5", "0.9"}
    assert reply.mean_absolute_scaled_error == ours.mase
    assert reply.pinball_loss_p90 == ours.pinball_by_level["0.9"]
    assert all(np.isfinite(m.crps) and 0 <= m.coverage_80 <= 1 for m in reply.models)
    # The same numbers as the pure backtest on the same hours.
    expected = bt.report(
        bt.backtest_series(
            demand,
            horizon=12,
            origins=list(range(48, 72)),
            heat=np.zeros(96),
            season=24,
            seed=seed_of("MUG-9"),
        )
    ).ours
    assert ours.crps == pytest.approx(expected.crps)

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await forecast.Backtest(request("no spaces!", end, start, -1), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"sku", "horizon_hours", "to"}
    for refused_request, field in (
        (request("NEVER-SOLD", start, end), "sku"),
        (request("MUG-9", start, end, 90), "from"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await forecast.Backtest(refused_request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(refused.value)) == {field}
