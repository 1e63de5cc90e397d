"""Samples streamed into ingest over gRPC become a `signal.pulse_detected` event on NATS and
show up in signal's GetHeat and ListPulses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from pulsestock.signal.domain.detector import DetectorConfig
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import ingest_pb2, signal_pb2
from pulsestock.v1 import signal_events_pb2 as sev
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub
from pulsestock.v1.signal_pb2_grpc import SignalServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


@pytest.mark.slow
async def test_a_video_taking_off_becomes_a_pulse(infra: Infra, nats_url: str, bus: NATS) -> None:
    detected = await bus.subscribe("signal.pulse_detected.>")
    ingest_schema, signal_schema = unique_name("ing"), unique_name("sig")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=4)
    try:
        async with (
            running_service("signal", infra.database_url, nats_url, signal_schema) as signal,
            running_service("ingest", infra.database_url, nats_url, ingest_schema) as ingest,
        ):
            ingest_stub = IngestServiceStub(ingest.channel)
            await ingest_stub.RegisterVideo(
                ingest_pb2.RegisterVideoRequest(
                    video_id="viral-1",
                    skus=["LAMP-7"],
                    creator_id="creator-1",
                    creator_followers=250_000,
                    published_at=stamp(now - timedelta(hours=5)),
                    channel=Channel.CHANNEL_TIKTOK_SHOP,
                ),
                timeout=10,
            )
            increments = [100, 110, 95, 105, 90, 100, 115, 100, 95, 105, 100, 98]
            increments += [4000, 9000, 15000, 14000]

            async def requests() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
                views = 1000
                for index, increment in enumerate(increments):
                    views += increment
                    sample = iev.VideoSampled(
                        video_id="viral-1",
                        observed_at=stamp(start + timedelta(minutes=10 * index)),
                        views=views,
                        likes=views // 12,
                        shares=views // 60,
                        comments=views // 90,
                    )
                    yield ingest_pb2.PushVideoSamplesRequest(samples=[sample])

            reply = await ingest_stub.PushVideoSamples(requests(), timeout=30)
            assert (reply.accepted, reply.rejected) == (len(increments), 0)

            message = await detected.next_msg(timeout=20)
            pulse = sev.PulseDetected.FromString(message.data)
            assert pulse.sku == "LAMP-7"
            assert pulse.hot_channel == "CHANNEL_TIKTOK_SHOP"
            assert list(pulse.video_ids) == ["viral-1"]
            # The first surge sample (index 12: +4000 views in 10 minutes against ~100) fires
            # both the detector and the default growth rule, so the pulse starts there and
            # carries exactly those two pieces of evidence.
            surge = 12
            surge_start = start + timedelta(minutes=10 * surge)
            assert pulse.detected_at.ToDatetime(tzinfo=UTC) == surge_start
            evidence = {e.source: e for e in pulse.evidence}
            growth_rule = "rule:views grew > 500 % within one hour"
            assert sorted(evidence) == ["detector", growth_rule]
            views = [1000 + sum(increments[: i + 1]) for i in range(len(increments))]
            velocity = increments[surge] * 6  # views per hour over the last 10 minutes
            # The detector alarms when its CUSUM crosses h (score 0.5); one jump adds at
            # most z_cap - k = 9 > h = 6, so the alarm needs z above h + k = 7.
            detector = evidence["detector"].metrics
            assert detector["view_velocity"] == pytest.approx(velocity)
            assert detector["views"] == views[surge]
            assert detector["z"] > DetectorConfig().h + DetectorConfig().k
            assert detector["score"] > 0.5
            # views in the last hour (samples 6..12) against the hour before (0..6), minus 1
            growth = (views[surge] - views[surge - 6]) / (views[surge - 6] - views[surge - 12]) - 1
            rule = evidence[growth_rule]
            assert rule.description == "view_growth_1h > 5.0"
            assert rule.metrics["view_growth_1h"] == pytest.approx(growth)
            assert growth > 5.0
            assert rule.metrics["views"] == views[surge] >= 5_000  # the rule's min_views

            signal_stub = SignalServiceStub(signal.channel)

            async def heat_known() -> bool:
                try:
                    heat = await signal_stub.GetHeat(
                        signal_pb2.GetHeatRequest(sku="LAMP-7"), timeout=5
                    )
                except Exception:
                    return False
                return heat.heat.heat > 1000 and heat.heat.view_velocity > 10_000

            await eventually(heat_known, within=10, what="GetHeat to show the heat")
            heat = await signal_stub.GetHeat(signal_pb2.GetHeatRequest(sku="LAMP-7"), timeout=5)
            assert round(heat.heat.like_rate, 2) == round(1 / 12, 2)
            listed = await signal_stub.ListPulses(
                signal_pb2.ListPulsesRequest(sku="LAMP-7"), timeout=5
            )
            assert [p.pulse_id for p in listed.pulses] == [pulse.pulse_id]
    finally:
        for schema in (ingest_schema, signal_schema):
            await drop_schema(infra.database_url, schema)


@pytest.mark.slow
async def test_live_sessions_heat_their_skus_and_pulses_can_be_watched(
    infra: Infra, nats_url: str
) -> None:
    ingest_schema, signal_schema = unique_name("ing"), unique_name("sig")
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        async with (
            running_service("signal", infra.database_url, nats_url, signal_schema) as signal,
            running_service("ingest", infra.database_url, nats_url, ingest_schema) as ingest,
        ):
            signal_stub = SignalServiceStub(signal.channel)
            watch = signal_stub.WatchPulses(signal_pb2.WatchPulsesRequest(skus=["GLOW-2"]))

            async def live() -> AsyncIterator[ingest_pb2.PushLiveSamplesRequest]:
                for minute, (viewers, interactions, orders) in enumerate(
                    [(500, 100, 2), (1500, 400, 12), (3000, 1000, 40)]
                ):
                    sample = iev.LiveSampled(
                        live_id="live-9",
                        skus=["GLOW-2"],
                        observed_at=stamp(now - timedelta(minutes=10 - minute)),
                        concurrent_viewers=viewers,
                        interactions=interactions,
                        orders_so_far=orders,
                    )
                    yield ingest_pb2.PushLiveSamplesRequest(samples=[sample])

            ingest_stub = IngestServiceStub(ingest.channel)
            reply = await ingest_stub.PushLiveSamples(live(), timeout=10)
            assert reply.accepted == 3

            async def live_heat() -> bool:
                try:
                    heat = await signal_stub.GetHeat(
                        signal_pb2.GetHeatRequest(sku="GLOW-2"), timeout=5
                    )
                except Exception:
                    return False
                # 3000 viewers + 10 x 600 interactions/min + 100 x 28 orders/min
                return round(heat.heat.heat) == 3000 + 6000 + 2800

            await eventually(live_heat, within=10, what="the live session's heat")

            await ingest_stub.RegisterVideo(
                ingest_pb2.RegisterVideoRequest(
                    video_id="glow-video",
                    skus=["GLOW-2"],
                    creator_id="c",
                    creator_followers=10,
                    published_at=stamp(now - timedelta(hours=5)),
                    channel=Channel.CHANNEL_SHOPIFY,
                ),
                timeout=10,
            )

            async def surge() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
                views = 0
                for index, increment in enumerate([50] * 12 + [6000, 20000]):
                    views += increment
                    yield ingest_pb2.PushVideoSamplesRequest(
                        samples=[
                            iev.VideoSampled(
                                video_id="glow-video",
                                observed_at=stamp(
                                    now - timedelta(hours=3) + timedelta(minutes=10 * index)
                                ),
                                views=views,
                            )
                        ]
                    )

            await ingest_stub.PushVideoSamples(surge(), timeout=30)
            watched = await asyncio.wait_for(watch.read(), 20)
            assert watched.sku == "GLOW-2"
            assert watched.hot_channel == "CHANNEL_SHOPIFY"
            watch.cancel()
    finally:
        for schema in (ingest_schema, signal_schema):
            await drop_schema(infra.database_url, schema)
