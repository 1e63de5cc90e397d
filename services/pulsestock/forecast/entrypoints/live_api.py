"""ForecastService.ForecastLiveSession: the whole session's orders from its samples so far."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg
import grpc
from pulsestock.v1 import forecast_pb2 as pb


async def forecast_live_session(
    pool: asyncpg.Pool,
    request: pb.ForecastLiveSessionRequest,
    context: grpc.aio.ServicerContext,
    clock: Callable[[], datetime],
) -> pb.ForecastLiveSessionResponse:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ForecastLiveSession is not built yet")
    raise AssertionError("abort raises")
