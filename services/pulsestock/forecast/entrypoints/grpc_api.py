"""The ForecastService gRPC servicer: forecasts, window quantiles, live sessions, backtests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import numpy as np
from pulsestock.clock import Clock, utc_now
from pulsestock.errors import Validator
from pulsestock.forecast.application.engine import ForecastEngine, hour_of
from pulsestock.forecast.application.history import demand_history, live_sessions
from pulsestock.forecast.domain.demand import DEFAULT_LEVELS
from pulsestock.forecast.domain.sku_forecast import HOUR, SkuInputs
from pulsestock.forecast.entrypoints.backtest_api import backtest
from pulsestock.forecast.entrypoints.live_api import forecast_live_session
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1 import forecast_pb2 as pb
from pulsestock.v1 import forecast_pb2_grpc
from pulsestock.v1.common_pb2 import Quantile

DEFAULT_HISTORY = timedelta(hours=72)
DEFAULT_LIVE_SESSIONS, MAX_LIVE_SESSIONS = 50, 500


def _levels(v: Validator, field: str, levels: Sequence[float]) -> tuple[float, ...]:
    for index, level in enumerate(levels):
        v.check(
            math.isfinite(level) and 0.0 < level < 1.0,
            f"{field}[{index}]",
            "must lie strictly between 0 and 1",
        )
    return tuple(levels) or DEFAULT_LEVELS


class ForecastServiceServicer(forecast_pb2_grpc.ForecastServiceServicer):
    def __init__(self, pool: asyncpg.Pool, engine: ForecastEngine, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.engine = engine
        self.clock = clock

    async def _inputs(self, sku: str) -> SkuInputs:
        """The SKU's history; one never seen gets an empty one (the prior forecast), whose
        origin is now."""
        inputs = await self.engine.load_inputs(self.pool, sku)
        if inputs is None:
            return SkuInputs(sku, hour_of(self.clock()), np.zeros(1), np.zeros(1))
        return inputs

    async def GetForecast(
        self, request: pb.GetForecastRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetForecastResponse:
        settings = self.engine.settings
        v = Validator()
        v.check(valid_id(request.sku), "sku", ID_RULE)
        hours = settings.horizon_hours
        if request.HasField("horizon"):
            seconds = request.horizon.ToTimedelta().total_seconds()
            hours = math.ceil(seconds / 3600)
            v.check(seconds > 0, "horizon", "must be positive")
            v.check(
                hours <= settings.max_horizon_hours,
                "horizon",
                f"must be at most {settings.max_horizon_hours} hours",
            )
        levels = _levels(v, "quantiles", request.quantiles)
        v.raise_if_invalid()
        inputs = await self._inputs(request.sku)
        forecast = self.engine.forecast(inputs)
        as_of = await self._as_of(request.sku, inputs)
        event = self.engine.updated(inputs, forecast, as_of, hours, levels)
        errors = forecast.accuracy
        accuracy = pb.ModelAccuracy(
            scaled_error_by_method=errors,
            coverage_80=forecast.baseline.coverage,
            scored_origins=0 if not errors else max(0, len(inputs.demand) - 14),
        )
        return pb.GetForecastResponse(
            forecast=event, accuracy=accuracy, history_hours=len(inputs.demand)
        )

    async def _as_of(self, sku: str, inputs: SkuInputs) -> datetime:
        as_of = await self.pool.fetchval("SELECT as_of FROM sku_forecasts WHERE sku = $1", sku)
        return as_of if as_of is not None else inputs.origin_hour

    async def GetDemandQuantiles(
        self, request: pb.GetDemandQuantilesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDemandQuantilesResponse:
        settings = self.engine.settings
        v = Validator()
        v.check(valid_id(request.sku), "sku", ID_RULE)
        v.check(request.HasField("from"), "from", "is required")
        v.check(request.HasField("to"), "to", "is required")
        levels = _levels(v, "levels", request.levels)
        v.raise_if_invalid()
        start_at = getattr(request, "from").ToDatetime(tzinfo=UTC)
        end_at = request.to.ToDatetime(tzinfo=UTC)
        v.check(start_at < end_at, "to", "must be after from")
        v.raise_if_invalid()
        inputs = await self._inputs(request.sku)
        first = inputs.first_forecast_hour
        # Whole hours: a window that touches an hour counts all of it. What lies before the
        # forecast's first hour has happened (or is happening) and is not forecast.
        start = max(0, math.floor((start_at - first) / HOUR))
        end = math.ceil((end_at - first) / HOUR)
        v.check(end > 0, "to", f"must be after the forecast's first hour {first.isoformat()}")
        v.check(
            end <= settings.max_horizon_hours,
            "to",
            f"must be within {settings.max_horizon_hours} hours of {first.isoformat()}",
        )
        v.raise_if_invalid()
        forecast = self.engine.forecast(inputs)
        values = forecast.window_quantiles(start, end, levels)
        response = pb.GetDemandQuantilesResponse(
            sku=request.sku,
            mean=forecast.window_mean(start, end),
            quantiles=[Quantile(q=q, value=x) for q, x in zip(levels, values, strict=True)],
            model=forecast.model,
        )
        getattr(response, "from").FromDatetime(first + timedelta(hours=start))
        response.to.FromDatetime(first + timedelta(hours=end))
        response.as_of.FromDatetime(await self._as_of(request.sku, inputs))
        return response

    async def ForecastLiveSession(
        self, request: pb.ForecastLiveSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ForecastLiveSessionResponse:
        return await forecast_live_session(self.pool, request, context, self.clock)

    async def Backtest(
        self, request: pb.BacktestRequest, context: grpc.aio.ServicerContext
    ) -> pb.BacktestResponse:
        return await backtest(self.pool, self.engine, request, context)

    async def GetDemandHistory(
        self, request: pb.GetDemandHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDemandHistoryResponse:
        v = Validator()
        v.check(valid_id(request.sku), "sku", ID_RULE)
        v.raise_if_invalid()
        end = (
            request.to.ToDatetime(tzinfo=UTC)
            if request.HasField("to")
            else hour_of(self.clock()) + HOUR
        )
        start = (
            getattr(request, "from").ToDatetime(tzinfo=UTC)
            if request.HasField("from")
            else end - DEFAULT_HISTORY
        )
        start, end = hour_of(start), hour_of(end - timedelta(microseconds=1)) + HOUR
        limit = self.engine.settings.history_hours
        v.check(start < end, "to", "must be after from")
        v.check(end - start <= HOUR * limit, "from", f"must be at most {limit} hours before to")
        v.raise_if_invalid()
        hours, pulses = await demand_history(self.pool, request.sku, start, end)
        response = pb.GetDemandHistoryResponse(sku=request.sku)
        for figures in hours:
            item = response.hours.add(
                orders=figures.orders,
                heat=figures.heat or 0.0,
                view_velocity=figures.view_velocity,
                has_heat=figures.heat is not None,
            )
            item.hour.FromDatetime(figures.hour)
        for window in pulses:
            span = response.pulses.add(pulse_id=window.pulse_id)
            span.detected_at.FromDatetime(window.detected_at)
            if window.ended_at is not None:
                span.ended_at.FromDatetime(window.ended_at)
        return response

    async def ListLiveSessions(
        self, request: pb.ListLiveSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLiveSessionsResponse:
        v = Validator()
        v.check(
            0 <= request.limit <= MAX_LIVE_SESSIONS,
            "limit",
            f"must be between 0 (default {DEFAULT_LIVE_SESSIONS}) and {MAX_LIVE_SESSIONS}",
        )
        v.raise_if_invalid()
        response = pb.ListLiveSessionsResponse()
        for session in await live_sessions(self.pool, request.limit or DEFAULT_LIVE_SESSIONS):
            item = response.sessions.add(
                live_id=session.live_id,
                samples=session.samples,
                orders_so_far=session.orders_so_far,
                viewers=session.viewers,
            )
            item.first_sample_at.FromDatetime(session.first_sample_at)
            item.last_sample_at.FromDatetime(session.last_sample_at)
        return response
