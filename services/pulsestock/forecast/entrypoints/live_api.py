"""ForecastService.ForecastLiveSession: the whole session's orders from its samples so far.

The session's samples (folded from ingest's `LiveSampled` into `live_samples`) become
per-minute series from its first sample: viewers are the mean of the samples of each minute
(a minute without one keeps the last seen), interactions and orders the increase of their
cumulative counters over the minute (the first sample's counts belong to minute 0). Those
go to domain.live.forecast_live.

- A malformed live_id: INVALID_ARGUMENT with a field violation.
- A live_id with no sample: NOT_FOUND. The session is a resource forecast knows only through
  its samples; none means forecast has never heard of it (a wrong id, or one whose first
  sample has not arrived yet: retrying later is the client's call). FAILED_PRECONDITION
  would say the session exists but is in the wrong state, which nothing here can know.
- A session with no sample for SESSION_OVER_AFTER before now is over: its total is what it
  sold (p10 = p50 = p90 = orders so far, its observed length, model "live_session_over").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import asyncpg
import grpc
import numpy as np
from numpy.typing import NDArray
from pulsestock.errors import NotFound, Validator
from pulsestock.forecast.domain.live import MODEL, forecast_live
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1 import forecast_pb2 as pb

SESSION_OVER_AFTER = timedelta(minutes=10)
MODEL_OVER = "live_session_over"
MINUTE = timedelta(minutes=1)


def per_minute(
    samples: Sequence[tuple[datetime, float, float, float]],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(observed_at, viewers, cumulative interactions, cumulative orders) in time order ->
    viewers, interactions and orders per minute since the first sample."""
    start = samples[0][0]
    minutes = int((samples[-1][0] - start) / MINUTE) + 1
    viewer_sum = np.zeros(minutes)
    viewer_count = np.zeros(minutes)
    interactions_at = np.full(minutes, np.nan)
    orders_at = np.full(minutes, np.nan)
    for observed_at, concurrent, interactions, orders in samples:
        minute = int((observed_at - start) / MINUTE)
        viewer_sum[minute] += concurrent
        viewer_count[minute] += 1
        interactions_at[minute] = interactions  # the minute's last sample: time order
        orders_at[minute] = orders
    viewers = np.full(minutes, np.nan)
    seen = viewer_count > 0
    viewers[seen] = viewer_sum[seen] / viewer_count[seen]
    viewers = _carried(viewers)
    # Cumulative counters never go backwards (ingest refuses it); max guards a reorder.
    interactions_cum = np.maximum.accumulate(_carried(interactions_at))
    orders_cum = np.maximum.accumulate(_carried(orders_at))
    return (
        viewers,
        np.diff(interactions_cum, prepend=0.0),
        np.diff(orders_cum, prepend=0.0),
    )


def _carried(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each NaN replaced by the last value before it (the first minute always has one)."""
    index = np.where(np.isnan(values), 0, np.arange(len(values)))
    return np.asarray(values[np.maximum.accumulate(index)], dtype=float)


async def forecast_live_session(
    pool: asyncpg.Pool,
    request: pb.ForecastLiveSessionRequest,
    context: grpc.aio.ServicerContext,
    clock: Callable[[], datetime],
) -> pb.ForecastLiveSessionResponse:
    v = Validator()
    v.check(valid_id(request.live_id), "live_id", ID_RULE)
    v.raise_if_invalid()
    rows = await pool.fetch(
        "SELECT observed_at, viewers, interactions, orders_so_far FROM live_samples"
        " WHERE live_id = $1 ORDER BY observed_at",
        request.live_id,
    )
    if not rows:
        raise NotFound(f"no samples of live session {request.live_id}")
    samples = [
        (r["observed_at"], r["viewers"], r["interactions"], r["orders_so_far"]) for r in rows
    ]
    viewers, interactions, orders = per_minute(samples)
    minutes = len(viewers)
    seen = float(orders.sum())
    series = [
        pb.LiveMinute(viewers=float(v), interactions=float(i), orders=float(o))
        for v, i, o in zip(viewers, interactions, orders, strict=True)
    ]
    if clock() - samples[-1][0] > SESSION_OVER_AFTER:
        return pb.ForecastLiveSessionResponse(
            minutes=series,
            live_id=request.live_id,
            expected_orders=seen,
            p10=seen,
            p50=seen,
            p90=seen,
            minutes_observed=minutes,
            orders_so_far=seen,
            expected_length_minutes=float(minutes),
            model=MODEL_OVER,
        )
    # A few tens of milliseconds of numpy: off the event loop.
    forecast = await asyncio.to_thread(forecast_live, viewers, interactions, orders)
    return pb.ForecastLiveSessionResponse(
        live_id=request.live_id,
        expected_orders=forecast.expected_orders,
        p10=forecast.quantile(0.1),
        p50=forecast.quantile(0.5),
        p90=forecast.quantile(0.9),
        minutes_observed=forecast.minutes_observed,
        orders_so_far=forecast.orders_so_far,
        expected_length_minutes=forecast.expected_length_minutes,
        model=MODEL,
        minutes=series,
    )
