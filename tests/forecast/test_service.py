"""The forecast service through the real stack: ingest's and signal's events on JetStream in,
`forecast.updated` out, GetForecast / GetDemandQuantiles answering from the folded history,
bad requests refused with field details, and a restart recomputing identical forecasts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from pulsestock.bus import ensure_stream, service_stream
from pulsestock.bus.codec import cloudevent_headers, subject_for
from pulsestock.messages import event_type_of
from pulsestock.v1 import forecast_events_pb2 as fev
from pulsestock.v1 import forecast_pb2 as pb
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service

pytestmark = pytest.mark.slow
START = datetime(2026, 11, 2, tzinfo=UTC)


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


async def publish(
    bus: NATS, producer: str, key: str, message: Message, *, event_id: str | None = None
) -> None:
    """An event as its producer's outbox relay publishes it: subject and CloudEvents headers.
    The same `event_id` again is a redelivery: a fresh Nats-Msg-Id gets it past JetStream's
    duplicate window, so only the consumer's own idempotency stands between it and a
    second count."""
    event_type = event_type_of(message)
    headers = cloudevent_headers(
        event_id=event_id or str(uuid.uuid4()),
        event_type=event_type,
        source=f"/pulsestock/{producer}",
        subject=key,
    )
    headers["Nats-Msg-Id"] = str(uuid.uuid4())
    js = bus.jetstream()
    await js.publish(
        subject_for(producer, event_type, key, 4), message.SerializeToString(), headers=headers
    )


def order(order_id: str, sku: str, quantity: int, at: datetime) -> iev.OrderPlaced:
    return iev.OrderPlaced(
        channel=Channel.CHANNEL_SHOPIFY,
        channel_order_id=order_id,
        lines=[OrderLine(sku=sku, quantity=quantity)],
        placed_at=stamp(at),
    )


async def test_orders_and_heat_in_forecast_updated_out(
    forecast: ForecastServiceStub, bus: NATS
) -> None:
    updates = await bus.subscribe("forecast.updated.>")
    # Three weeks of a slow seller: a mug every four hours on average (Poisson, seeded);
    # the last hour has one, so the forecast's origin is known.
    counts = np.random.default_rng(11).poisson(0.25, 21 * 24)
    counts[-4] = max(counts[-4], 1)
    counts[-3:] = 0
    for index, count in enumerate(counts):
        if count:
            at = START + timedelta(hours=index)
            await publish(bus, "ingest", "MUG-1", order(f"o-{index}", "MUG-1", int(count), at))

    async def latest_origin() -> bool:
        reply = await forecast.GetForecast(pb.GetForecastRequest(sku="MUG-1"), timeout=10)
        return reply.forecast.as_of.ToDatetime(tzinfo=UTC) >= START + timedelta(hours=21 * 24 - 4)

    await eventually(latest_origin, within=30, what="every order folded")
    reply = await forecast.GetForecast(
        pb.GetForecastRequest(
            sku="MUG-1", horizon=Duration(seconds=48 * 3600), quantiles=[0.05, 0.5, 0.95]
        ),
        timeout=10,
    )
    points = reply.forecast.points
    assert len(points) == 48
    assert reply.forecast.model in {"ses", "croston_sba", "tsb", "adida"}
    # The true rate is 0.25 an hour; a smoother's estimate from one series wanders round it.
    assert 0.12 < points[0].mean < 0.38
    assert [q.q for q in points[0].quantiles] == [0.05, 0.5, 0.95]
    first = points[0].period_start.ToDatetime(tzinfo=UTC)
    assert first == START + timedelta(hours=21 * 24 - 3)  # the hour after the last order's
    day = await forecast.GetDemandQuantiles(
        pb.GetDemandQuantilesRequest(
            sku="MUG-1", **{"from": stamp(first)}, to=stamp(first + timedelta(days=1))
        ),
        timeout=10,
    )
    low, mid, high = (q.value for q in day.quantiles)
    assert low <= mid <= high
    assert low < 6 <= high  # 24 h at 0.25 an hour
    assert 3.0 < day.mean < 9.0

    # Something was published, and its numbers are the service's answer.
    published = fev.ForecastUpdated.FromString((await updates.next_msg(timeout=10)).data)
    assert published.sku == "MUG-1"
    assert len(published.points) == 72


async def test_a_new_sku_gets_the_prior_and_bad_requests_name_their_fields(
    forecast: ForecastServiceStub,
) -> None:
    reply = await forecast.GetForecast(pb.GetForecastRequest(sku="NEVER-SOLD"), timeout=10)
    assert reply.forecast.model == "prior"
    assert len(reply.forecast.points) == 72
    assert all(point.mean < 0.05 for point in reply.forecast.points)

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await forecast.GetForecast(
            pb.GetForecastRequest(
                sku="no spaces!", horizon=Duration(seconds=-5), quantiles=[0.5, 1.5]
            ),
            timeout=10,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"sku", "horizon", "quantiles[1]"}

    with pytest.raises(grpc.aio.AioRpcError) as too_far:
        await forecast.GetForecast(
            pb.GetForecastRequest(sku="MUG-1", horizon=Duration(seconds=3000 * 3600)), timeout=10
        )
    assert set(field_violations(too_far.value)) == {"horizon"}

    now = datetime.now(UTC)
    with pytest.raises(grpc.aio.AioRpcError) as backwards:
        await forecast.GetDemandQuantiles(
            pb.GetDemandQuantilesRequest(
                sku="MUG-1", **{"from": stamp(now + timedelta(days=2))}, to=stamp(now)
            ),
            timeout=10,
        )
    assert backwards.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(backwards.value)) == {"to"}
    assert "Traceback" not in (backwards.value.details() or "")


async def test_a_restart_recomputes_identical_forecasts_and_redeliveries_change_nothing(
    infra: Infra, nats_url: str, bus: NATS
) -> None:
    js = bus.jetstream()
    for producer in ("ingest", "signal", "forecast"):
        await ensure_stream(js, service_stream(producer))
    schema = unique_name("fc")
    env = {"PULSESTOCK_PARTITIONS": "4"}
    counts = np.random.default_rng(3).poisson(0.6, 10 * 24)
    sent: list[tuple[str, str, str, Message]] = []  # (producer, key, event id, message)
    for index, count in enumerate(counts):
        if count:
            at = START + timedelta(hours=index)
            sent.append(
                ("ingest", "CUP-2", str(uuid.uuid4()), order(f"c-{index}", "CUP-2", int(count), at))
            )
    cancelled = iev.OrderCancelled(
        channel=Channel.CHANNEL_SHOPIFY,
        channel_order_id=next(
            m.channel_order_id for *_, m in sent if isinstance(m, iev.OrderPlaced)
        ),
        cancelled_at=stamp(START + timedelta(hours=10 * 24 - 1)),
    )
    sent.append(("ingest", "CUP-2", str(uuid.uuid4()), cancelled))
    request = pb.GetForecastRequest(sku="CUP-2", horizon=Duration(seconds=24 * 3600))
    try:
        async with running_service("forecast", infra.database_url, nats_url, schema, env) as first:
            stub = ForecastServiceStub(first.channel)
            for producer, key, event_id, message in sent:
                await publish(bus, producer, key, message, event_id=event_id)
            # Demand per hour is what was sent, less the cancelled order's units.
            first_order = next(m for *_, m in sent if isinstance(m, iev.OrderPlaced))
            expected = int(counts.sum()) - first_order.lines[0].quantity
            conn = await asyncpg.connect(infra.database_url)
            try:

                async def folded() -> bool:
                    total = await conn.fetchval(f"SELECT sum(quantity) FROM {schema}.demand_hours")
                    return total == expected

                await eventually(folded, within=30, what="every order and the cancellation")
            finally:
                await conn.close()
            before = await stub.GetForecast(request, timeout=10)

        async with running_service("forecast", infra.database_url, nats_url, schema, env) as second:
            stub = ForecastServiceStub(second.channel)
            after = await stub.GetForecast(request, timeout=10)
            assert after.SerializeToString(deterministic=True) == before.SerializeToString(
                deterministic=True
            )
            # The same events again (same ids, as a redelivery or a replay brings them).
            for producer, key, event_id, message in sent:
                await publish(bus, producer, key, message, event_id=event_id)
            marker = order("marker", "OTHER-1", 1, START)
            await publish(bus, "ingest", "OTHER-1", marker)

            async def marker_folded() -> bool:
                reply = await stub.GetForecast(pb.GetForecastRequest(sku="OTHER-1"), timeout=10)
                return reply.history_hours == 1 and reply.forecast.points[0].mean == 1.0

            await eventually(marker_folded, within=30, what="the marker after the replay")
            replayed = await stub.GetForecast(request, timeout=10)
            assert replayed.SerializeToString(deterministic=True) == before.SerializeToString(
                deterministic=True
            )

        # The projection equals the log: each SKU's stored forecast is its stream's last event.
        conn = await asyncpg.connect(infra.database_url)
        try:
            rows = await conn.fetch(f"SELECT sku, version, forecast FROM {schema}.sku_forecasts")
            for row in rows:
                last = await conn.fetchrow(
                    f"SELECT stream_version, data FROM {schema}.events WHERE stream_id = $1"
                    " ORDER BY stream_version DESC LIMIT 1",
                    f"sku-{row['sku']}",
                )
                assert (last["stream_version"], bytes(last["data"])) == (
                    row["version"],
                    bytes(row["forecast"]),
                )
        finally:
            await conn.close()
    finally:
        await drop_schema(infra.database_url, schema)
