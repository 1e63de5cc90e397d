"""GetDemandHistory (a SKU's hourly orders and heat as folded, with its pulses),
ListLiveSessions, and a live session's per-minute series in ForecastLiveSession: what the
console draws, through the running service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from nats.aio.client import Client as NATS
from pulsestock.v1 import forecast_pb2 as pb
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import signal_events_pb2 as sev
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub

from tests.forecast.test_service import order, publish, stamp
from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import eventually

pytestmark = pytest.mark.slow


async def test_hourly_orders_heat_and_pulses_of_a_sku(
    forecast: ForecastServiceStub, bus: NATS
) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=5)
    await publish(bus, "ingest", "LAMP-1", order("o-1", "LAMP-1", 2, start + timedelta(minutes=5)))
    await publish(bus, "ingest", "LAMP-1", order("o-2", "LAMP-1", 3, start + timedelta(minutes=50)))
    await publish(
        bus, "ingest", "LAMP-1", order("o-3", "LAMP-1", 7, start + timedelta(hours=3, minutes=1))
    )
    heat = sev.HeatUpdated(
        sku="LAMP-1", heat=420.5, view_velocity=9000, as_of=stamp(start + timedelta(hours=2))
    )
    await publish(bus, "signal", "LAMP-1", heat)
    pulse_at = start + timedelta(hours=2, minutes=30)
    detected = sev.PulseDetected(pulse_id="p-1", sku="LAMP-1", detected_at=stamp(pulse_at))
    await publish(bus, "signal", "LAMP-1", detected)
    request = pb.GetDemandHistoryRequest(sku="LAMP-1", to=stamp(hour))
    getattr(request, "from").CopyFrom(stamp(start))

    async def folded() -> bool:
        reply = await forecast.GetDemandHistory(request, timeout=10)
        return sum(h.orders for h in reply.hours) == 12 and len(reply.pulses) == 1

    await eventually(folded, within=30, what="orders, heat and the pulse folded")
    reply = await forecast.GetDemandHistory(request, timeout=10)
    assert reply.sku == "LAMP-1"
    assert [h.hour.ToDatetime(tzinfo=UTC) for h in reply.hours] == [
        start + timedelta(hours=i) for i in range(5)
    ]
    assert [h.orders for h in reply.hours] == [5, 0, 0, 7, 0]
    assert [h.has_heat for h in reply.hours] == [False, False, True, False, False]
    assert reply.hours[2].heat == 420.5
    assert reply.hours[2].view_velocity == 9000
    (span,) = reply.pulses
    assert span.pulse_id == "p-1"
    assert span.detected_at.ToDatetime(tzinfo=UTC) == pulse_at
    assert not span.HasField("ended_at")
    # Without bounds: the 72 hours up to the current hour, inclusive.
    default = await forecast.GetDemandHistory(pb.GetDemandHistoryRequest(sku="LAMP-1"))
    assert len(default.hours) == 72
    assert default.hours[-1].hour.ToDatetime(tzinfo=UTC) == hour
    assert sum(h.orders for h in default.hours) == 12

    bad = pb.GetDemandHistoryRequest(sku="no such sku!", to=stamp(start))
    getattr(bad, "from").CopyFrom(stamp(hour))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await forecast.GetDemandHistory(bad, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(refused.value)) == {"sku"}
    backwards = pb.GetDemandHistoryRequest(sku="LAMP-1", to=stamp(start))
    getattr(backwards, "from").CopyFrom(stamp(hour))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await forecast.GetDemandHistory(backwards, timeout=10)
    assert set(field_violations(refused.value)) == {"to"}


async def test_live_sessions_listed_newest_first_with_their_minutes(
    forecast: ForecastServiceStub, bus: NATS
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    samples = {
        "LIVE-A": [(now - timedelta(minutes=30 - m), 100 * (m + 1), 10 * m, m) for m in range(3)],
        "LIVE-B": [(now - timedelta(minutes=3 - m), 50, 0, 2 * m) for m in range(3)],
    }
    for live_id, rows in samples.items():
        for at, viewers, interactions, orders in rows:
            sample = iev.LiveSampled(
                live_id=live_id,
                skus=["MUG-1"],
                observed_at=stamp(at),
                concurrent_viewers=viewers,
                interactions=interactions,
                orders_so_far=orders,
            )
            await publish(bus, "ingest", live_id, sample)

    async def listed() -> bool:
        reply = await forecast.ListLiveSessions(pb.ListLiveSessionsRequest(), timeout=10)
        return sum(s.samples for s in reply.sessions) == 6

    await eventually(listed, within=30, what="both sessions' samples folded")
    reply = await forecast.ListLiveSessions(pb.ListLiveSessionsRequest(), timeout=10)
    assert [s.live_id for s in reply.sessions] == ["LIVE-B", "LIVE-A"]
    b, a = reply.sessions
    assert b.last_sample_at.ToDatetime(tzinfo=UTC) == now - timedelta(minutes=1)
    assert a.first_sample_at.ToDatetime(tzinfo=UTC) == now - timedelta(minutes=30)
    assert (a.orders_so_far, a.viewers, a.samples) == (2, 300, 3)
    one = await forecast.ListLiveSessions(pb.ListLiveSessionsRequest(limit=1), timeout=10)
    assert [s.live_id for s in one.sessions] == ["LIVE-B"]

    session = await forecast.ForecastLiveSession(
        pb.ForecastLiveSessionRequest(live_id="LIVE-A"), timeout=10
    )
    assert [(m.viewers, m.interactions, m.orders) for m in session.minutes] == [
        (100, 0, 0),
        (200, 10, 1),
        (300, 10, 1),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await forecast.ListLiveSessions(pb.ListLiveSessionsRequest(limit=501), timeout=10)
    assert set(field_violations(refused.value)) == {"limit"}
