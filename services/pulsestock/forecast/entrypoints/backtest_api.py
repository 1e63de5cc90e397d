"""ForecastService.Backtest: our model and every baseline on the same rolling origins of a
SKU's stored hourly demand (application/backtest.py, the code `pulsestock backtest` runs).

Origins are the hours H with `from` <= H < `to` (H the last hour a forecast sees) that have
at least MIN_HISTORY_HOURS of stored history up to them and whose next `horizon_hours` hours
are known (no later than the SKU's latest event). The history is what the engine loads: at
most ForecastSettings.history_hours hours before the last hour scored.

Refusals, all INVALID_ARGUMENT with field violations (the issue's contract for bad input):
a malformed sku, a missing or backwards window, a horizon outside 1..max_horizon_hours
(0 is proto3's "unset" and means the documented default, 24), a SKU the service has never
seen ("sku": no stored demand history), and a window in which no hour qualifies as an
origin ("from": the message says which hours the SKU's stored demand covers).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import asyncpg
import grpc
from pulsestock.errors import InvalidArgument, Validator
from pulsestock.forecast.application.backtest import BacktestReport, backtest_series, report
from pulsestock.forecast.application.engine import ForecastEngine, hour_of
from pulsestock.forecast.domain.baselines import SEASONS
from pulsestock.forecast.domain.demand import DEFAULT_LEVELS
from pulsestock.forecast.domain.sku_forecast import HOUR, seed_of
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1 import forecast_pb2 as pb

DEFAULT_HORIZON_HOURS = 24
MIN_HISTORY_HOURS = 24


async def backtest(
    pool: asyncpg.Pool,
    engine: ForecastEngine,
    request: pb.BacktestRequest,
    context: grpc.aio.ServicerContext,
) -> pb.BacktestResponse:
    settings = engine.settings
    v = Validator()
    v.check(valid_id(request.sku), "sku", ID_RULE)
    has_from = v.check(request.HasField("from"), "from", "is required")
    has_to = v.check(request.HasField("to"), "to", "is required")
    horizon = request.horizon_hours or DEFAULT_HORIZON_HOURS
    v.check(horizon > 0, "horizon_hours", "must be positive (0 means the default, 24)")
    v.check(
        horizon <= settings.max_horizon_hours,
        "horizon_hours",
        f"must be at most {settings.max_horizon_hours}",
    )
    start_at = getattr(request, "from").ToDatetime(tzinfo=UTC) if has_from else None
    end_at = request.to.ToDatetime(tzinfo=UTC) if has_to else None
    if start_at is not None and end_at is not None:
        v.check(start_at < end_at, "to", "must be after from")
    v.raise_if_invalid()
    assert start_at is not None
    assert end_at is not None

    latest = await engine.load_inputs(pool, request.sku)
    if latest is None:
        raise InvalidArgument.single(
            "sku", f"{request.sku} has no stored demand history (no event for it was seen)"
        )
    # Load only what the window needs, so the engine's history limit counts back from the
    # last hour scored, not from the SKU's latest event.
    last_needed = hour_of(end_at - timedelta(microseconds=1)) + HOUR * horizon
    inputs = latest
    if last_needed < latest.origin_hour:
        loaded = await engine.load_inputs(pool, request.sku, last_needed)
        assert loaded is not None  # the SKU exists: it had inputs a moment ago
        inputs = loaded
    size = len(inputs.demand)
    origins = [
        index
        for index in range(MIN_HISTORY_HOURS - 1, size - horizon)
        if start_at <= inputs.start_hour + HOUR * index < end_at
    ]
    if not origins:
        raise InvalidArgument.single(
            "from",
            f"no hour in [from, to) has {MIN_HISTORY_HOURS} hours of stored demand up to it"
            f" and the {horizon} hours after it known; {request.sku}'s demand is stored for"
            f" {latest.start_hour.isoformat()} .. {latest.origin_hour.isoformat()}, and a"
            f" backtest sees at most {settings.history_hours} hours before its last hour",
        )
    # Refitting at every origin is CPU work: off the event loop.
    result = await asyncio.to_thread(
        backtest_series,
        inputs.demand,
        horizon=horizon,
        origins=origins,
        levels=DEFAULT_LEVELS,
        heat=inputs.reach,
        season=SEASONS["hourly"],
        seed=seed_of(request.sku),
    )
    return response_of(report(result))


def response_of(scored: BacktestReport) -> pb.BacktestResponse:
    """Ours first, then each baseline; the legacy fields carry ours."""
    models = [
        pb.ModelScore(
            model=summary.model,
            rmsse=summary.rmsse,
            mase=summary.mase,
            pinball_by_level={f"{level:g}": v for level, v in summary.pinball_by_level.items()},
            crps=summary.crps,
            coverage_80=summary.coverage_80,
            cumulative_log_ratio=summary.log_ratio_median_abs,
        )
        for summary in scored.models
    ]
    ours = scored.ours
    return pb.BacktestResponse(
        mean_absolute_scaled_error=ours.mase,
        pinball_loss_p90=ours.pinball_by_level.get(0.9, float("nan")),
        origins=scored.origin_count,
        models=models,
    )
