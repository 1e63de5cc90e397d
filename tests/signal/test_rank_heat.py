"""RankHeat: SKUs by heat, hottest first, each with its active pulse and phase, from one
query; limit and SKU filters; bad requests refused with field violations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from nats.aio.client import Client as NATS
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import signal_pb2
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.signal_pb2_grpc import SignalServiceStub

from tests.forecast.test_service import publish
from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service
from tests.signal.test_end_to_end import stamp

pytestmark = pytest.mark.slow


async def video(bus: NATS, video_id: str, sku: str, start: datetime, increments: list[int]) -> None:
    await publish(
        bus,
        "ingest",
        sku,
        iev.VideoRegistered(
            video_id=video_id,
            skus=[sku],
            creator_id="creator",
            creator_followers=100_000,
            published_at=stamp(start - timedelta(hours=1)),
            channel=Channel.CHANNEL_TIKTOK_SHOP,
        ),
    )
    views = 1000
    for index, increment in enumerate(increments):
        views += increment
        await publish(
            bus,
            "ingest",
            sku,
            iev.VideoSampled(
                video_id=video_id,
                observed_at=stamp(start + timedelta(minutes=10 * index)),
                views=views,
                likes=views // 12,
                shares=views // 60,
            ),
        )


async def test_skus_ranked_by_heat_with_their_active_pulse(
    infra: Infra, nats_url: str, bus: NATS
) -> None:
    schema = unique_name("sig")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    steady = [100, 110, 95, 105, 90, 100, 115, 100, 95, 105, 100, 98]
    try:
        async with running_service("signal", infra.database_url, nats_url, schema) as signal:
            api = SignalServiceStub(signal.channel)
            await video(bus, "hot-video", "HOT-1", start, [*steady, 4000, 9000, 15000])
            await video(bus, "calm-video", "CALM-1", start, steady)

            async def both_ranked() -> bool:
                reply = await api.RankHeat(signal_pb2.RankHeatRequest(), timeout=5)
                return [r.heat.sku for r in reply.skus] == ["HOT-1", "CALM-1"] and bool(
                    reply.skus[0].phase
                )

            await eventually(both_ranked, within=20, what="both SKUs ranked, HOT-1 pulsing")
            reply = await api.RankHeat(signal_pb2.RankHeatRequest(), timeout=5)
            assert reply.total == 2
            hot, calm = reply.skus
            assert hot.heat.heat > calm.heat.heat > 0
            assert hot.phase in ("detected", "peaking", "decaying")
            assert hot.peak_heat >= hot.heat.heat * 0.8
            assert hot.pulse.sku == "HOT-1"
            assert list(hot.pulse.video_ids) == ["hot-video"]
            assert {e.source for e in hot.pulse.evidence} >= {"detector"}
            assert hot.pulse.detected_at.ToDatetime(tzinfo=UTC) > start
            # The same pulse ListPulses knows.
            listed = await api.ListPulses(signal_pb2.ListPulsesRequest(sku="HOT-1"), timeout=5)
            assert [p.pulse_id for p in listed.pulses] == [hot.pulse.pulse_id]
            assert not calm.HasField("pulse")
            assert calm.phase == ""
            assert calm.peak_heat == 0

            top = await api.RankHeat(signal_pb2.RankHeatRequest(limit=1), timeout=5)
            assert [r.heat.sku for r in top.skus] == ["HOT-1"]
            assert top.total == 2
            only = await api.RankHeat(
                signal_pb2.RankHeatRequest(skus=["CALM-1", "NEVER-SEEN"]), timeout=5
            )
            assert [r.heat.sku for r in only.skus] == ["CALM-1"]
            assert only.total == 1

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await api.RankHeat(
                    signal_pb2.RankHeatRequest(limit=5001, skus=["bad sku"]), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert set(field_violations(refused.value)) == {"limit", "skus[0]"}
    finally:
        await drop_schema(infra.database_url, schema)
