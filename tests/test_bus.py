"""JetStream provisioning, the consumer loop (ack, retry, dead letter) and idempotent handlers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pulsestock import telemetry
from pulsestock.bus import (
    ConsumerSpec,
    DurableConsumer,
    Envelope,
    StreamSpec,
    cloudevent_headers,
    dead_letter_subject,
    ensure_consumer,
    ensure_stream,
    idempotent,
    partition_for,
    subject_for,
)
from pulsestock.bus.codec import header_block, parse_header_block
from pulsestock.telemetry import configure_telemetry, tracing_enabled
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.helpers.infra import EFFECTS_TABLE, count_effect, eventually, unique_name


def test_subjects_follow_service_event_partition() -> None:
    subject = subject_for("inventory-sync", "pulsestock.v1.ChannelQuantityChanged", "SKU-1", 16)
    assert subject == f"inventory_sync.channel_quantity_changed.{partition_for('SKU-1', 16)}"
    assert all(0 <= partition_for(f"S{i}", 16) < 16 for i in range(100))
    assert len({partition_for(f"S{i}", 16) for i in range(100)}) > 8  # spreads


async def make_stream(nc: NATS) -> tuple[StreamSpec, str]:
    token = unique_name("t").lower()
    spec = StreamSpec(token.upper(), [f"{token}.>"])
    await ensure_stream(nc.jetstream(), spec)
    await ensure_stream(nc.jetstream(), StreamSpec("DEAD_LETTERS", ["dead_letters.>"]))
    return spec, token


async def publish(nc: NATS, subject: str, event_id: str | None = None) -> str:
    event_id = event_id or str(uuid.uuid4())
    headers = cloudevent_headers(
        event_id=event_id, event_type="pulsestock.v1.StockReceived", source="/t", subject="s"
    )
    payload = ev.StockReceived(sku="S", quantity=1).SerializeToString()
    await nc.jetstream().publish(subject, payload, headers=headers)
    return event_id


header_names = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"))
header_values = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"))


@given(st.dictionaries(header_names.filter(bool), header_values))
def test_a_header_block_reads_back_as_the_headers_it_was_made_of(
    headers: dict[str, str],
) -> None:
    assert parse_header_block(header_block(headers)) == headers


async def test_provisioning_is_idempotent_and_updates_in_place(nc: NATS) -> None:
    spec, token = await make_stream(nc)
    await ensure_stream(nc.jetstream(), spec)  # again: no error
    consumer = ConsumerSpec(spec.name, f"{token}__test", max_ack_pending=100)
    await ensure_consumer(nc.jetstream(), consumer)
    await ensure_consumer(
        nc.jetstream(), ConsumerSpec(spec.name, f"{token}__test", max_ack_pending=200)
    )
    info = await nc.jetstream().consumer_info(spec.name, f"{token}__test")
    assert info.config.max_ack_pending == 200


async def test_failing_handler_goes_to_dead_letters_after_max_deliveries(nc: NATS) -> None:
    spec, token = await make_stream(nc)
    consumer_spec = ConsumerSpec(spec.name, f"{token}__dlq", max_deliver=3, ack_wait_s=5)
    await ensure_consumer(nc.jetstream(), consumer_spec)
    calls: list[str] = []

    async def always_fails(envelope: Envelope) -> None:
        calls.append(envelope.event_id)
        raise RuntimeError("downstream refused")

    dead = await nc.jetstream().subscribe(dead_letter_subject(consumer_spec.durable))
    event_id = await publish(nc, f"{token}.stock_received.0")
    stop = asyncio.Event()
    consumer = DurableConsumer(
        nc, consumer_spec, always_fails, fetch_timeout_s=0.2, backoff=lambda _n: 0.05
    )
    running = asyncio.create_task(consumer.run(stop))
    try:
        letter = await dead.next_msg(timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
    assert letter.headers is not None
    assert letter.headers["ce-id"] == event_id
    assert letter.headers["dead-letter-deliveries"] == "3"
    assert "downstream refused" in letter.headers["dead-letter-reason"]
    assert calls == [event_id] * 3
    info = await nc.jetstream().consumer_info(spec.name, consumer_spec.durable)
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_idempotent_handler_applies_a_redelivered_event_once(
    nc: NATS, pool: asyncpg.Pool
) -> None:
    await pool.execute(EFFECTS_TABLE)

    spec, token = await make_stream(nc)
    consumer_spec = ConsumerSpec(spec.name, f"{token}__idem")
    await ensure_consumer(nc.jetstream(), consumer_spec)
    event_id = str(uuid.uuid4())
    # The same event reaching the stream twice (e.g. re-published after the dedup window).
    for _ in range(2):
        headers = cloudevent_headers(
            event_id=event_id, event_type="pulsestock.v1.StockReceived", source="/t", subject="s"
        )
        headers["Nats-Msg-Id"] = str(uuid.uuid4())
        await nc.jetstream().publish(f"{token}.x.0", b"", headers=headers)
    handler = idempotent(pool, consumer_spec.durable, count_effect)
    stop = asyncio.Event()
    consumer = DurableConsumer(nc, consumer_spec, handler, fetch_timeout_s=0.2)
    running = asyncio.create_task(consumer.run(stop))

    async def both_acked() -> bool:
        info = await nc.jetstream().consumer_info(spec.name, consumer_spec.durable)
        return info.delivered.stream_seq == 2 and info.num_ack_pending == 0

    try:
        await eventually(both_acked, what="both deliveries acked")
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
    assert await pool.fetchval("SELECT times FROM effects WHERE event_id = $1", event_id) == 1


async def test_malformed_message_is_dead_lettered_at_once(nc: NATS) -> None:
    spec, token = await make_stream(nc)
    consumer_spec = ConsumerSpec(spec.name, f"{token}__bad", max_deliver=5)
    await ensure_consumer(nc.jetstream(), consumer_spec)
    dead = await nc.jetstream().subscribe(dead_letter_subject(consumer_spec.durable))
    await nc.jetstream().publish(f"{token}.x.0", b"no headers")
    calls: list[Envelope] = []

    async def handler(envelope: Envelope) -> None:
        calls.append(envelope)

    stop = asyncio.Event()
    running = asyncio.create_task(
        DurableConsumer(nc, consumer_spec, handler, fetch_timeout_s=0.2).run(stop)
    )
    try:
        letter = await dead.next_msg(timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
    assert letter.headers is not None
    assert "malformed" in letter.headers["dead-letter-reason"]
    assert calls == []


@pytest.fixture
def sdk_tracing() -> Iterator[None]:
    """The SDK's providers for one test only. OpenTelemetry's global providers can be set once
    per process, so a test that installs them would record spans in every later test: put
    back what was there (OpenTelemetry's own test utilities reset the same globals)."""
    saved = (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE._done,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE._done,
        telemetry._configured_service,
    )
    configure_telemetry("pulsestock-tests", None, force=True)
    installed_tracer, installed_meter = trace.get_tracer_provider(), metrics.get_meter_provider()
    try:
        yield
    finally:
        (
            trace._TRACER_PROVIDER,
            trace._TRACER_PROVIDER_SET_ONCE._done,
            metrics_internal._METER_PROVIDER,
            metrics_internal._METER_PROVIDER_SET_ONCE._done,
            telemetry._configured_service,
        ) = saved
        if isinstance(installed_tracer, TracerProvider):
            installed_tracer.shutdown()
        if isinstance(installed_meter, MeterProvider):
            installed_meter.shutdown()
    assert not tracing_enabled()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with trace.get_tracer("after").start_as_current_span("later test") as span:
        assert not span.is_recording()  # later tests record nothing


@pytest.mark.usefixtures("sdk_tracing")
async def test_trace_context_crosses_nats_from_producer_to_consumer(nc: NATS) -> None:
    assert tracing_enabled()
    spec, token = await make_stream(nc)
    consumer_spec = ConsumerSpec(spec.name, f"{token}__trace")
    await ensure_consumer(nc.jetstream(), consumer_spec)
    with trace.get_tracer("test").start_as_current_span("produce") as producer:
        producer_trace = producer.get_span_context().trace_id
        headers = cloudevent_headers(
            event_id=str(uuid.uuid4()), event_type="t", source="/t", subject="s"
        )
    assert headers["traceparent"].split("-")[1] == format(producer_trace, "032x")
    await nc.jetstream().publish(f"{token}.x.0", b"", headers=headers)
    consumer_traces: list[int] = []

    async def handler(_envelope: Envelope) -> None:
        consumer_traces.append(trace.get_current_span().get_span_context().trace_id)

    stop = asyncio.Event()
    running = asyncio.create_task(
        DurableConsumer(nc, consumer_spec, handler, fetch_timeout_s=0.2).run(stop)
    )

    async def handled() -> bool:
        return bool(consumer_traces)

    try:
        await eventually(handled, what="the consumer to handle the message")
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
    assert consumer_traces == [producer_trace]
