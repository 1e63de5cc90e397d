"""signal's state survives a restart: the detector resumes from its snapshot, and samples
delivered again change nothing twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus import cloudevent_headers, subject_for
from pulsestock.eventstore import NewEvent
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import signal_events_pb2 as sev
from pulsestock.v1.common_pb2 import Channel

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service


async def publish(bus: NATS, message: iev.VideoRegistered | iev.VideoSampled) -> None:
    event = NewEvent.of(message)
    headers = cloudevent_headers(
        event_id=str(uuid.uuid4()), event_type=event.type, source="/test", subject="v"
    )
    await bus.jetstream().publish(
        subject_for("ingest", event.type, "v", 16), event.data, headers=headers
    )


@pytest.mark.slow
async def test_a_restart_resumes_from_the_snapshot(infra: Infra, nats_url: str, bus: NATS) -> None:
    schema = unique_name("sig")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    registered = iev.VideoRegistered(
        video_id="v",
        skus=["SKU-R"],
        creator_id="c",
        creator_followers=1000,
        channel=Channel.CHANNEL_TIKTOK_SHOP,
    )
    registered.published_at.FromDatetime(start - timedelta(hours=1))
    views = [1000 + 100 * i for i in range(12)]
    views += [views[-1] + 6000, views[-1] + 20_000, views[-1] + 40_000]

    def sample(index: int) -> iev.VideoSampled:
        message = iev.VideoSampled(video_id="v", views=views[index], likes=10, shares=1, comments=1)
        message.observed_at.FromDatetime(start + timedelta(minutes=10 * index))
        return message

    pulses = await bus.subscribe("signal.pulse_detected.>")
    try:
        async with running_service("signal", infra.database_url, nats_url, schema) as _first:
            await publish(bus, registered)
            for index in range(12):  # the baseline: the detector learns, nothing fires
                await publish(bus, sample(index))

            async def folded() -> bool:
                import asyncpg

                conn = await asyncpg.connect(infra.database_url)
                try:
                    seen = await conn.fetchval(
                        f"SELECT detector->>'seen' FROM {schema}.video_state"
                    )
                finally:
                    await conn.close()
                return seen == "11"

            await eventually(folded, within=15, what="the baseline folded")
        async with running_service("signal", infra.database_url, nats_url, schema):
            for index in range(8, 12):  # delivered again after the restart: no effect
                await publish(bus, sample(index))
            for index in range(12, 15):
                await publish(bus, sample(index))
            message = await pulses.next_msg(timeout=20)
            pulse = sev.PulseDetected.FromString(message.data)
            assert pulse.sku == "SKU-R"
            detected = pulse.detected_at.ToDatetime(tzinfo=UTC)
            assert detected >= start + timedelta(minutes=120)  # only the surge made it
    finally:
        await drop_schema(infra.database_url, schema)
