"""Operator rules over gRPC: per seller or per SKU, validated, and what they change in pulse
detection (signal as a process, its input published on JetStream as ingest would)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.aio.client import Client as NATS
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import signal_events_pb2 as sev
from pulsestock.v1 import signal_pb2 as pb
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.signal_pb2_grpc import SignalServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import RunningService, running_service
from tests.signal.test_restart import publish

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
LIKES_OVER_5 = pb.Rule(name="likes", metric="like_rate", op=">", threshold=0.05, min_views=0)


@pytest.fixture
def schema() -> str:
    return unique_name("sig_rules")


@pytest.fixture
async def signal(infra: Infra, nats_url: str, schema: str) -> AsyncIterator[RunningService]:
    async with running_service("signal", infra.database_url, nats_url, schema) as service:
        yield service
    await drop_schema(infra.database_url, schema)


async def steady_video(bus: NATS, video_id: str, sku: str, seller_id: str) -> None:
    """Steady views with an 8 % like rate: the defaults (like rate > 10 %) and the detector
    stay quiet; a rule 'like rate > 5 %' fires."""
    registered = iev.VideoRegistered(
        video_id=video_id,
        skus=[sku],
        creator_id="c",
        creator_followers=1000,
        channel=Channel.CHANNEL_TIKTOK_SHOP,
        seller_id=seller_id,
    )
    registered.published_at.FromDatetime(START - timedelta(hours=1))
    await publish(bus, registered)
    for index in range(6):
        views = 10_000 + 500 * index
        sample = iev.VideoSampled(video_id=video_id, views=views, likes=views * 8 // 100)
        sample.observed_at.FromDatetime(START + timedelta(minutes=10 * index))
        await publish(bus, sample)


async def test_seller_rules_apply_to_its_skus_and_a_sku_rule_overrides_them(
    signal: RunningService, bus: NATS
) -> None:
    stub = SignalServiceStub(signal.channel)
    await stub.SetRules(pb.SetRulesRequest(seller_id="seller-1", rules=[LIKES_OVER_5]), timeout=5)
    strict = pb.Rule(name="likes", metric="like_rate", op=">", threshold=0.5)
    await stub.SetRules(pb.SetRulesRequest(sku="SKU-STRICT", rules=[strict]), timeout=5)
    detected = await bus.subscribe("signal.pulse_detected.>")
    await steady_video(bus, "v-other", "SKU-OTHER", "seller-2")  # defaults: quiet
    await steady_video(bus, "v-strict", "SKU-STRICT", "seller-1")  # its own rule: quiet
    await steady_video(bus, "v-fires", "SKU-FIRES", "seller-1")  # the seller's rule fires

    pulse = sev.PulseDetected.FromString((await detected.next_msg(timeout=20)).data)
    assert pulse.sku == "SKU-FIRES"  # the others' samples were folded before (one stream)
    assert [e.source for e in pulse.evidence] == ["rule:likes"]
    assert pulse.evidence[0].metrics["like_rate"] == pytest.approx(0.08, abs=0.001)
    for sku in ("SKU-OTHER", "SKU-STRICT"):
        listed = await stub.ListPulses(pb.ListPulsesRequest(sku=sku), timeout=5)
        assert list(listed.pulses) == []


async def test_a_sku_rule_set_later_takes_effect(signal: RunningService, bus: NATS) -> None:
    stub = SignalServiceStub(signal.channel)
    await steady_video(bus, "v-1", "SKU-1", "")
    await stub.SetRules(pb.SetRulesRequest(sku="SKU-1", rules=[LIKES_OVER_5]), timeout=5)
    sample = iev.VideoSampled(video_id="v-1", views=20_000, likes=1_700)
    sample.observed_at.FromDatetime(START + timedelta(minutes=70))
    await publish(bus, sample)

    async def pulse_listed() -> bool:
        listed = await stub.ListPulses(pb.ListPulsesRequest(sku="SKU-1"), timeout=5)
        return len(listed.pulses) == 1

    await eventually(pulse_listed, within=15, what="a pulse from the new rule")


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        (pb.SetRulesRequest(rules=[LIKES_OVER_5]), "seller_id", "exactly one"),
        (pb.SetRulesRequest(sku="S", seller_id="x", rules=[LIKES_OVER_5]), "sku", "exactly one"),
        (pb.SetRulesRequest(sku="bad sku", rules=[]), "sku", "letters, digits"),
        (
            pb.SetRulesRequest(sku="S", rules=[pb.Rule(name="n", metric="nope", op=">")]),
            "rules[0].metric",
            "must be one of",
        ),
        (
            pb.SetRulesRequest(sku="S", rules=[pb.Rule(name="n", metric="like_rate", op="!=")]),
            "rules[0].op",
            ">, >=, < or <=",
        ),
        (
            pb.SetRulesRequest(
                sku="S",
                rules=[pb.Rule(name="n", metric="like_rate", op=">", threshold=float("nan"))],
            ),
            "rules[0].threshold",
            "finite",
        ),
        (
            pb.SetRulesRequest(sku="S", rules=[LIKES_OVER_5, LIKES_OVER_5]),
            "rules[1].name",
            "unique",
        ),
    ],
)
async def test_bad_rules_are_refused_with_the_field_and_change_nothing(
    signal: RunningService,
    infra: Infra,
    schema: str,
    request_: pb.SetRulesRequest,
    field: str,
    words: str,
) -> None:
    stub = SignalServiceStub(signal.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SetRules(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    violations = {v.field: v.description for v in details.field_violations}
    assert field in violations, violations
    assert words in violations[field]
    conn = await asyncpg.connect(infra.database_url)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.rules") == 0
    finally:
        await conn.close()
