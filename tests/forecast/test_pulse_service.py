"""The pulse path through the real forecast service: a slow seller's history, then signal's
PulseDetected and HeatUpdated and the orders that follow on JetStream -> a forecast.updated
whose model carries the pulse, far above the baseline and decaying; PulseEnded -> back to
the baseline alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pulsestock.bus import service_stream
from pulsestock.v1 import forecast_events_pb2 as fev
from pulsestock.v1 import forecast_pb2 as pb
from pulsestock.v1 import signal_events_pb2 as sig
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub

from tests.forecast.test_service import order, publish, stamp
from tests.helpers.infra import eventually
from tests.helpers.waiting import consumer_settled

pytestmark = pytest.mark.slow
START = datetime(2026, 10, 1, tzinfo=UTC)
SKU = "SERUM-3"


async def test_a_pulse_enters_and_leaves_the_forecast(
    forecast: ForecastServiceStub, bus: NATS
) -> None:
    published: list[fev.ForecastUpdated] = []

    async def collect(message: Msg) -> None:
        published.append(fev.ForecastUpdated.FromString(message.data))

    await bus.subscribe("forecast.updated.>", cb=collect)
    counts = np.random.default_rng(3).poisson(0.5, 14 * 24)
    for index, count in enumerate(counts):
        if count:
            at = START + timedelta(hours=index, minutes=10)
            await publish(bus, "ingest", SKU, order(f"b-{index}", SKU, int(count), at))
    onset = START + timedelta(days=14)
    await publish(
        bus,
        "signal",
        SKU,
        sig.PulseDetected(pulse_id="p-1", sku=SKU, detected_at=stamp(onset)),
    )
    # Views per hour climb, and orders follow at about 2 per 1,000 views.
    for hour, views in enumerate((20_000, 60_000, 90_000)):
        at = onset + timedelta(hours=hour, minutes=30)
        await publish(
            bus,
            "signal",
            SKU,
            sig.HeatUpdated(sku=SKU, heat=views / 1000, view_velocity=views, as_of=stamp(at)),
        )
        await publish(bus, "ingest", SKU, order(f"p-{hour}", SKU, views // 500, at))

    async def pulse_published() -> bool:
        return any(
            update.pulse_id == "p-1" and "pulse" in update.model and update.reason
            for update in published
        )

    await eventually(pulse_published, within=60, what="a forecast.updated with the pulse")

    # Orders and signals come through two consumers: wait until both have applied all.
    js = bus.jetstream()
    heads = {
        name: (await js.stream_info(service_stream(name).name)).state.last_seq
        for name in ("ingest", "signal")
    }

    async def folded() -> bool:
        return await consumer_settled(
            js, service_stream("ingest").name, "forecast__orders", heads["ingest"]
        ) and await consumer_settled(
            js, service_stream("signal").name, "forecast__signals", heads["signal"]
        )

    await eventually(folded, within=30, what="every order and signal folded")
    reply = await forecast.GetForecast(
        pb.GetForecastRequest(sku=SKU, horizon=Duration(seconds=72 * 3600)), timeout=10
    )
    assert "pulse" in reply.forecast.model, reply.forecast.model
    assert reply.forecast.pulse_id == "p-1"
    means = [point.mean for point in reply.forecast.points]
    baseline_rate = float(counts.mean())
    assert means[0] > 10 * baseline_rate  # the pulse's next hour, far above 0.5 an hour
    # Decaying (slowly: the shape priors were fitted on daily attention data, so in hourly
    # buckets a pulse fades over days; see the README's pulse figures).
    assert means[71] < means[24] < means[0]
    for point in reply.forecast.points:
        levels = [q.value for q in point.quantiles]
        assert levels == sorted(levels)
        assert levels[0] >= 0

    await publish(
        bus,
        "signal",
        SKU,
        sig.PulseEnded(pulse_id="p-1", sku=SKU, ended_at=stamp(onset + timedelta(hours=3))),
    )

    async def pulse_gone() -> bool:
        reply = await forecast.GetForecast(pb.GetForecastRequest(sku=SKU), timeout=10)
        return reply.forecast.pulse_id == "" and "pulse" not in reply.forecast.model

    await eventually(pulse_gone, within=30, what="the forecast without the ended pulse")
