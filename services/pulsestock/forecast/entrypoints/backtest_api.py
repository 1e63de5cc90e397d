"""ForecastService.Backtest: our model and every baseline on the same rolling origins of a
SKU's stored hourly demand."""

from __future__ import annotations

import asyncpg
import grpc
from pulsestock.forecast.application.engine import ForecastEngine
from pulsestock.v1 import forecast_pb2 as pb


async def backtest(
    pool: asyncpg.Pool,
    engine: ForecastEngine,
    request: pb.BacktestRequest,
    context: grpc.aio.ServicerContext,
) -> pb.BacktestResponse:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Backtest is not built yet")
    raise AssertionError("abort raises")
