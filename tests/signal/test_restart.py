"""signal's state survives a restart: the detector resumes from its snapshot, and samples
delivered again change nothing twice.

"Delivered again" is the real thing: the very messages JetStream stored (same CloudEvents
ids, same bytes) handed to signal a second time. Between two runs the durable consumer is
deleted, so the next run recreates it and JetStream delivers the whole stream again, as it
does when a consumer's state is lost, or a batch's acks never reach it. signal deduplicates
a video's samples by `observed_at` (one not after the video's last changes nothing), not by
event id; re-publishing with the same id never even reaches it (JetStream drops it within
its window).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus import cloudevent_headers, subject_for
from pulsestock.eventstore import NewEvent
from pulsestock.signal.bootstrap import CONTENT
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import signal_events_pb2 as sev
from pulsestock.v1.common_pb2 import Channel

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service
from tests.helpers.waiting import consumer_settled

Message = iev.VideoRegistered | iev.VideoSampled


async def publish(bus: NATS, message: Message) -> None:
    """Publish once as ingest would, with a fresh event id (other signal tests use it)."""
    event = NewEvent.of(message)
    headers = cloudevent_headers(
        event_id=str(uuid.uuid4()), event_type=event.type, source="/test", subject="v"
    )
    await bus.jetstream().publish(
        subject_for("ingest", event.type, "v", 16), event.data, headers=headers
    )


class Publisher:
    """Publishes as ingest would, and keeps each message's headers (its event id) so it can
    be published again unchanged."""

    def __init__(self, bus: NATS) -> None:
        self.js = bus.jetstream()
        self.headers: dict[bytes, dict[str, str]] = {}
        self.last_seq = 0

    async def publish(self, message: Message, key: str = "v") -> bool:
        """True when JetStream stored it, False when it dropped it as a duplicate."""
        event = NewEvent.of(message)
        headers = self.headers.setdefault(
            event.data,
            cloudevent_headers(
                event_id=str(uuid.uuid4()), event_type=event.type, source="/test", subject=key
            ),
        )
        ack = await self.js.publish(
            subject_for("ingest", event.type, key, 16), event.data, headers=headers
        )
        if not ack.duplicate:
            self.last_seq = ack.seq
        return not ack.duplicate


async def state_of(database_url: str, schema: str) -> dict[str, Any]:
    """What signal has persisted of its video, SKU and pulses (heat's `published_at` left
    out: a heat folded before a stop is legitimately sent, once, after the restart)."""
    conn = await asyncpg.connect(database_url)
    try:
        video = await conn.fetchrow(f"SELECT * FROM {schema}.video_state WHERE video_id = 'v'")
        heat = await conn.fetchrow(
            "SELECT heat, view_velocity, like_rate, share_rate, as_of"
            f" FROM {schema}.sku_heat WHERE sku = 'SKU-R'"
        )
        pulses = await conn.fetch(f"SELECT * FROM {schema}.pulses ORDER BY pulse_id")
    finally:
        await conn.close()
    assert video is not None
    assert heat is not None
    return {"video": dict(video), "heat": dict(heat), "pulses": [dict(p) for p in pulses]}


def seen(state: dict[str, Any]) -> int:
    """Observations the video's detector has folded (one per sample after the first)."""
    return int(json.loads(state["video"]["detector"])["seen"])


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
    surge_at = start + timedelta(minutes=10 * 12)

    def sample(index: int, video_id: str = "v") -> iev.VideoSampled:
        message = iev.VideoSampled(
            video_id=video_id, views=views[index], likes=10, shares=1, comments=1
        )
        message.observed_at.FromDatetime(start + timedelta(minutes=10 * index))
        return message

    publisher = Publisher(bus)
    js = bus.jetstream()
    everything = await bus.subscribe("signal.>")  # every publish, JetStream's duplicates too

    async def settled() -> bool:
        return await consumer_settled(js, CONTENT.stream, CONTENT.durable, publisher.last_seq)

    async def restart_delivers_everything_again() -> None:
        await js.delete_consumer(CONTENT.stream, CONTENT.durable)

    try:
        async with running_service("signal", infra.database_url, nats_url, schema):
            assert await publisher.publish(registered)
            for index in range(12):  # the baseline: the detector learns, nothing fires
                assert await publisher.publish(sample(index))
            await eventually(settled, within=15, what="the baseline folded")
        baseline = await state_of(infra.database_url, schema)
        assert seen(baseline) == 11
        assert baseline["video"]["last_observed_at"] == start + timedelta(minutes=110)
        assert baseline["pulses"] == []

        # The publisher's retry of samples 8-11, same ids: JetStream drops them.
        for index in range(8, 12):
            assert not await publisher.publish(sample(index))
        await restart_delivers_everything_again()
        async with running_service("signal", infra.database_url, nats_url, schema):
            # The registration and samples 0-11 are delivered again: they change nothing.
            await eventually(settled, within=15, what="the redelivered baseline settled")
            assert await state_of(infra.database_url, schema) == baseline
            for index in range(12, 15):
                assert await publisher.publish(sample(index))
            message = await everything.next_msg(timeout=20)
            while not message.subject.startswith("signal.pulse_detected."):
                message = await everything.next_msg(timeout=20)
            pulse = sev.PulseDetected.FromString(message.data)
            assert pulse.sku == "SKU-R"
            # The first surge sample fired it: the redelivered baseline fed the detector
            # nothing more (eleven observations again would have moved its baseline).
            assert pulse.detected_at.ToDatetime(tzinfo=UTC) == surge_at
            await eventually(settled, within=15, what="the surge folded")
        surged = await state_of(infra.database_url, schema)
        assert seen(surged) == 14
        assert [p["pulse_id"] for p in surged["pulses"]] == [pulse.pulse_id]

        await restart_delivers_everything_again()
        async with running_service("signal", infra.database_url, nats_url, schema):
            # Everything, the surge included, is delivered again: no second pulse.
            await eventually(settled, within=15, what="the redelivered surge settled")
            assert await state_of(infra.database_url, schema) == surged
            # A marker behind the redelivery: another video's first heat. The outbox relay
            # publishes in commit order, so once the marker is here any pulse the
            # redelivery had produced would be here before it.
            marker = iev.VideoRegistered(
                video_id="marker", skus=["SKU-M"], creator_id="c", creator_followers=1
            )
            marker.published_at.FromDatetime(start)
            assert await publisher.publish(marker, "marker")
            assert await publisher.publish(sample(0, "marker"), "marker")
            assert await publisher.publish(sample(1, "marker"), "marker")

            async def marker_arrived() -> bool:
                message = await everything.next_msg(timeout=15)
                if message.subject.startswith("signal.pulse_detected."):
                    received.append(sev.PulseDetected.FromString(message.data))
                    return False
                if not message.subject.startswith("signal.heat_updated."):
                    return False
                return bool(sev.HeatUpdated.FromString(message.data).sku == "SKU-M")

            received: list[sev.PulseDetected] = []
            await eventually(marker_arrived, within=20, what="the marker's heat")
            assert received == []  # between the first pulse and the marker: none
    finally:
        await drop_schema(infra.database_url, schema)
