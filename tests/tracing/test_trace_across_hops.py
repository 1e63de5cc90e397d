"""One order recorded through ingest's gRPC API, reserved by inventory-sync and pushed to the
(fake) TikTok Shop: every span on the way is in the trace the gRPC call started, each one's
parent in that trace, and log lines carry the trace and span ids."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, MutableMapping, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pulsestock.fakes import FakeTikTokShop, fake_channel_env
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2 as ingest_pb
from pulsestock.v1 import inventory_sync_pb2 as inventory_pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service

RECORD_ORDER = "/pulsestock.v1.IngestService/RecordOrder"
SKU = "TRACED-MUG"
# From the channel call back to the gRPC call that started it: (span name, kind).
CHAIN = [
    ("channel set_quantity", SpanKind.CLIENT),
    ("inventory_sync__channel_sync process", SpanKind.CONSUMER),
    ("outbox publish", SpanKind.PRODUCER),  # inventory-sync's relay: the quantity change
    ("ledger decide", SpanKind.INTERNAL),
    ("inventory_sync__orders process", SpanKind.CONSUMER),
    ("outbox publish", SpanKind.PRODUCER),  # ingest's relay: the order
    ("outbox enqueue", SpanKind.INTERNAL),
    (RECORD_ORDER, SpanKind.SERVER),
]

Stack = tuple[IngestServiceStub, InventorySyncServiceStub, FakeTikTokShop]


@pytest.fixture
async def tiktok() -> AsyncIterator[FakeTikTokShop]:
    fake = FakeTikTokShop()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def stack(
    spans: InMemorySpanExporter, infra: Infra, nats_url: str, tiktok: FakeTikTokShop
) -> AsyncIterator[Stack]:
    """ingest and inventory-sync in this process (after `spans`: they record into it), with
    TikTok Shop the one connected channel."""
    tiktok_env = {
        name: value
        for name, value in fake_channel_env(tiktok.url, "", "").items()
        if name.startswith("TIKTOK_SHOP_")
    }
    ingest_schema, inventory_schema = unique_name("ing"), unique_name("inv")
    async with (
        running_service(
            "ingest", infra.database_url, nats_url, ingest_schema, {"INGEST_RECONCILE_SECONDS": "0"}
        ) as ingest,
        running_service(
            "inventory-sync", infra.database_url, nats_url, inventory_schema, tiktok_env
        ) as inventory,
    ):
        yield IngestServiceStub(ingest.channel), InventorySyncServiceStub(inventory.channel), tiktok
    await drop_schema(infra.database_url, ingest_schema)
    await drop_schema(infra.database_url, inventory_schema)


def hex_id(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def ancestry(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """The span, its parent, its parent's parent, ... as far as the exported spans go."""
    path = [span]
    while path[-1].parent is not None and path[-1].parent.span_id in by_id:
        path.append(by_id[path[-1].parent.span_id])
    return path


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def described(spans: Sequence[ReadableSpan]) -> list[tuple[str, SpanKind]]:
    return [(span.name, span.kind) for span in spans]


async def test_one_order_is_one_trace_from_the_grpc_call_to_the_channel(
    stack: Stack, spans: InMemorySpanExporter, logs: list[MutableMapping[str, Any]]
) -> None:
    ingest, inventory, tiktok = stack
    await inventory.Receive(
        inventory_pb.ReceiveRequest(sku=SKU, warehouse_id="W1", quantity=10), timeout=10
    )

    async def shows(quantity: int) -> bool:
        return tiktok.quantity_of(SKU) == quantity

    await eventually(lambda: shows(10), within=20, what="TikTok Shop to show the stock")

    order = ev.OrderPlaced(
        channel=Channel.CHANNEL_TIKTOK_SHOP,
        channel_order_id="tt-traced-1",
        lines=[OrderLine(sku=SKU, quantity=3)],
    )
    reply = await ingest.RecordOrder(ingest_pb.RecordOrderRequest(order=order), timeout=10)
    assert not reply.duplicate

    async def reserved() -> bool:
        stock = await inventory.GetStock(inventory_pb.GetStockRequest(sku=SKU), timeout=10)
        return int(sum(w.reserved for w in stock.warehouses)) == 3

    await eventually(reserved, within=20, what="inventory-sync to reserve the order")
    await eventually(lambda: shows(7), within=20, what="TikTok Shop to show the reservation")

    servers = [
        s
        for s in spans.get_finished_spans()
        if s.name == RECORD_ORDER and s.kind == SpanKind.SERVER
    ]
    assert len(servers) == 1, described(spans.get_finished_spans())
    server = servers[0]
    assert server.parent is None  # the test's client sent no trace: the call starts one
    trace_id = server.context.trace_id

    def of_the_order() -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]

    def pushes() -> list[ReadableSpan]:
        """The channel calls that sent the quantity the order left (in whatever trace)."""
        return [
            s
            for s in spans.get_finished_spans()
            if s.name == "channel set_quantity" and attributes(s).get("pulsestock.quantity") == 7
        ]

    async def channel_call_ended() -> bool:
        return bool(pushes())

    await eventually(channel_call_ended, within=10, what="the channel call's span to end")
    assert len(pushes()) == 1
    push = pushes()[0]
    assert push.kind == SpanKind.CLIENT
    assert attributes(push)["pulsestock.channel"] == "CHANNEL_TIKTOK_SHOP"
    assert hex_id(push.context.trace_id, 32) == hex_id(trace_id, 32), "another trace"
    by_id = {s.context.span_id: s for s in of_the_order()}

    # Every span between the gRPC call and the channel call, each the parent of the next.
    path = ancestry(push, by_id)
    assert described(path) == CHAIN
    assert path[-1] is server
    published, ordered = path[2], path[5]
    assert str(attributes(published)["messaging.destination.name"]).startswith(
        "inventory_sync.channel_quantity_changed."
    )
    assert str(attributes(ordered)["messaging.destination.name"]).startswith("ingest.order_placed.")

    # The ledger's batch commit: in the order's trace under its consumer span, linked to the
    # command it served, with the append under it.
    consumed = path[4]
    commits = [s for s in by_id.values() if s.name == "ledger commit"]
    assert len(commits) == 1
    commit = commits[0]
    assert commit.parent is not None
    assert commit.parent.span_id == consumed.context.span_id
    assert [link.context.span_id for link in commit.links] == [consumed.context.span_id]
    appends = [s for s in by_id.values() if s.name == "eventstore append"]
    assert [a.parent.span_id for a in appends if a.parent] == [commit.context.span_id]

    # Nothing in the trace hangs off a span outside it.
    async def all_parents_exported() -> bool:
        spans_of_order = {s.context.span_id: s for s in of_the_order()}
        return all(
            s.parent is None or s.parent.span_id in spans_of_order for s in spans_of_order.values()
        )

    await eventually(all_parents_exported, within=10, what="every parent span to end")
    assert [s for s in of_the_order() if s.parent is None] == [server]

    # The access log line of the call carries the server span's ids.
    lines = [
        line for line in logs if line.get("event") == "rpc" and line.get("method") == RECORD_ORDER
    ]
    assert len(lines) == 1, lines
    assert lines[0]["trace_id"] == hex_id(trace_id, 32)
    assert lines[0]["span_id"] == hex_id(server.context.span_id, 16)
