"""Order lines carry the channel's listing id (TikTok Shop sku_id, Shopify variant_id, Amazon
SellerSKU) and Amazon orders their marketplace, for the catalogue to resolve (issue 14).

Lines stay keyed by the seller SKU; a line with a listing id but no seller SKU is no longer
dropped but goes out with an empty SKU; a line with neither still is. Pure mappings first,
then through the running ingest (webhooks and RecordOrder) to the published events."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.aio.client import Client as NATS
from pulsestock.bus.codec import partition_for
from pulsestock.fakes import FakeTikTokShop, fake_channel_env
from pulsestock.ingest.adapters.order_sources import amazon_order
from pulsestock.ingest.application.channel_orders import order_changed
from pulsestock.ingest.application.ingestion import order_partition_key
from pulsestock.ingest.domain import orders
from pulsestock.ingest.domain.orders import LineFacts, OrderFacts, Payment, Stamped
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub

from tests.helpers.infra import eventually
from tests.helpers.service import RunningService

WEBHOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
AMAZON_TOKEN = "fake-amazon-bridge-token"
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TIKTOK = Channel.CHANNEL_TIKTOK_SHOP


def published(facts: OrderFacts, channel: int = TIKTOK) -> dict[tuple[str, str], tuple[int, ...]]:
    """(sku, listing_id) -> (ordered, cancelled, shipped, returned), as OrderChanged says."""
    message = order_changed(channel, "o-1", facts, 1)
    return {
        (line.sku, line.listing_id): (line.ordered, line.cancelled, line.shipped, line.returned)
        for line in message.lines
    }


def key_of(message: ev.OrderChanged | ev.OrderPlaced) -> str:
    return order_partition_key((line.sku, line.listing_id) for line in message.lines)


# --- TikTok Shop ----------------------------------------------------------------------------


def tiktok_detail() -> dict[str, Any]:
    """Order detail: one line item per unit; one unit without a seller SKU, one with neither."""
    return {
        "id": "577000000000000001",
        "status": "AWAITING_SHIPMENT",
        "update_time": int(AT.timestamp()),
        "line_items": [
            {"id": "li-1", "sku_id": "1729000000000000001", "seller_sku": "MUG-1"},
            {"id": "li-2", "sku_id": "1729000000000000001", "seller_sku": "MUG-1"},
            {
                "id": "li-3",
                "sku_id": "1729000000000000002",
                "seller_sku": "",
                "display_status": "CANCELLED",
            },
            {"id": "li-4", "sku_id": "1729000000000000002"},
            {"id": "li-5", "seller_sku": ""},  # neither: cannot be placed
        ],
    }


def test_tiktok_line_without_seller_sku_goes_out_by_its_sku_id() -> None:
    detail = tiktok_detail()
    assert orders.tiktok_lines(detail) == {
        "MUG-1": LineFacts(ordered=2),
        "#1729000000000000002": LineFacts(ordered=2, cancelled=1),
    }
    assert orders.tiktok_listing_ids(detail) == {
        "MUG-1": "1729000000000000001",
        "#1729000000000000002": "1729000000000000002",
    }
    facts = orders.tiktok_status(
        "AWAITING_SHIPMENT",
        AT,
        orders.tiktok_lines(detail),
        orders.tiktok_listing_ids(detail),
    )
    assert published(facts) == {
        ("MUG-1", "1729000000000000001"): (2, 0, 0, 0),
        ("", "1729000000000000002"): (2, 1, 0, 0),
    }
    # Keyed by the first SKU, as before, though the listing-only line sorts first.
    message = order_changed(TIKTOK, "o-1", facts, 1)
    assert message.lines[0].sku == ""
    assert key_of(message) == "MUG-1"


def test_tiktok_order_of_listing_only_lines_is_keyed_by_its_first_listing_id() -> None:
    detail = {"line_items": [{"sku_id": "900"}, {"sku_id": "800"}, {"sku_id": "900"}]}
    facts = orders.tiktok_status(
        "UNPAID", AT, orders.tiktok_lines(detail), orders.tiktok_listing_ids(detail)
    )
    assert published(facts) == {("", "800"): (1, 0, 0, 0), ("", "900"): (2, 0, 0, 0)}
    assert key_of(order_changed(TIKTOK, "o-1", facts, 1)) == "800"  # stable: lines are sorted


def test_a_status_without_lines_keeps_the_listing_ids_already_known() -> None:
    detail = tiktok_detail()
    placed = orders.tiktok_status(
        "UNPAID", AT, orders.tiktok_lines(detail), orders.tiktok_listing_ids(detail)
    )
    cancelled = orders.tiktok_status("CANCELLED", AT, None)  # the detail lookup failed
    request = orders.tiktok_cancellation({"cancel_status": "CANCELLATION_REQUEST_PENDING"}, AT)
    for later in (cancelled, request):
        assert placed.join(later).listing_ids == placed.listing_ids
        assert later.join(placed).listing_ids == placed.listing_ids


def test_unusable_listing_ids_are_left_out_and_seller_skus_keep_their_lines() -> None:
    detail = {
        "line_items": [
            {"sku_id": "x" * 65, "seller_sku": "MUG-1"},  # too long: the SKU alone places it
            {"sku_id": "bad\nid", "seller_sku": ""},  # not printable and no SKU: skipped
            {"sku_id": True, "seller_sku": ""},  # not an id
            {"sku_id": 31337, "seller_sku": "CAP-1"},  # a JSON number is an id
        ]
    }
    assert orders.tiktok_lines(detail) == {"MUG-1": LineFacts(1), "CAP-1": LineFacts(1)}
    assert orders.tiktok_listing_ids(detail) == {"CAP-1": "31337"}


def test_a_seller_sku_that_starts_with_a_hash_is_still_published_as_the_sku() -> None:
    detail = {"line_items": [{"sku_id": "5", "seller_sku": "#RED"}, {"sku_id": "6"}]}
    facts = orders.tiktok_status(
        "UNPAID", AT, orders.tiktok_lines(detail), orders.tiktok_listing_ids(detail)
    )
    assert published(facts) == {("#RED", "5"): (1, 0, 0, 0), ("", "6"): (1, 0, 0, 0)}


# --- Shopify --------------------------------------------------------------------------------


def shopify_fixture() -> dict[str, Any]:
    order: dict[str, Any] = json.loads(
        (WEBHOOKS / "shopify_order_shopify-api-ruby.json").read_text()
    )["order"]
    return order


def test_shopify_lines_keep_their_skus_and_remember_their_variants() -> None:
    order = shopify_fixture()
    facts = orders.shopify_order("orders/create", order, AT)
    assert set(facts.lines_seen) == {"IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"}
    assert facts.listing_ids == {
        str(item["sku"]): str(item["variant_id"]) for item in order["line_items"]
    }
    assert facts.listing_ids["IPOD2008GREEN"] == "39072856"
    assert facts.marketplace_id == ""


def test_shopify_line_without_sku_is_counted_by_variant_through_fulfilment_and_refund() -> None:
    order = shopify_fixture()
    custom = {
        **order["line_items"][0],
        "id": 466157050,
        "sku": "",
        "variant_id": 808950810,
        "quantity": 2,
    }
    no_variant = {**custom, "id": 466157051, "sku": None, "variant_id": None}  # skipped
    shipped = {
        **order,
        "line_items": [*order["line_items"], custom, no_variant],
        "fulfillments": [
            {"status": "success", "line_items": [{**custom, "quantity": 2}]},
        ],
    }
    facts = orders.shopify_order("orders/fulfilled", shipped, AT)
    assert facts.lines_seen["#808950810"] == LineFacts(ordered=2, shipped=2)
    assert len(facts.lines_seen) == 4

    # refunds/create: the Refund resource, its line items under refund_line_items[].line_item.
    refund = {
        "id": 509562969,
        "order_id": order["id"],
        "refund_line_items": [
            {
                "line_item_id": custom["id"],
                "quantity": 1,
                "restock_type": "return",
                "line_item": {"id": custom["id"], "sku": "", "variant_id": 808950810},
            },
            {
                "line_item_id": order["line_items"][1]["id"],
                "quantity": 1,
                "restock_type": "cancel",
                "line_item": order["line_items"][1],
            },
        ],
    }
    refunded = orders.shopify_order("refunds/create", refund, AT)
    assert refunded.lines_seen == {
        "#808950810": LineFacts(returned=1),
        str(order["line_items"][1]["sku"]): LineFacts(cancelled=1),
    }
    assert refunded.listing_ids == {
        "#808950810": "808950810",
        str(order["line_items"][1]["sku"]): str(order["line_items"][1]["variant_id"]),
    }
    for joined in (facts.join(refunded), refunded.join(facts)):
        lines = published(joined, Channel.CHANNEL_SHOPIFY)
        assert lines[("", "808950810")] == (2, 0, 2, 1)
        assert lines[("IPOD2008RED", "49148385")] == (1, 1, 0, 0)
        assert key_of(order_changed(Channel.CHANNEL_SHOPIFY, "o", joined, 1)) == "IPOD2008BLACK"


# --- Amazon ---------------------------------------------------------------------------------


def amazon_change() -> dict[str, Any]:
    notification = json.loads((WEBHOOKS / "amazon_order_change.json").read_text())
    change: dict[str, Any] = notification["Payload"]["OrderChangeNotification"]
    return change


def test_amazon_listing_is_the_seller_sku_in_the_orders_marketplace() -> None:
    facts = orders.amazon_order_change(amazon_change(), AT)
    assert facts.marketplace_id == "ATVPDKIKX0DER"
    assert facts.listing_ids == {"SellerSKUID1": "SellerSKUID1"}
    message = order_changed(Channel.CHANNEL_AMAZON, "903-8868176-2219830", facts, 1)
    assert message.marketplace_id == "ATVPDKIKX0DER"
    assert [(line.sku, line.listing_id, line.ordered) for line in message.lines] == [
        ("SellerSKUID1", "SellerSKUID1", 10)
    ]
    # A later notification without the marketplace does not lose it.
    change = amazon_change()
    del change["Summary"]["MarketplaceId"]
    later = orders.amazon_order_change(change, AT)
    assert later.marketplace_id == ""
    assert later.join(facts).marketplace_id == facts.join(later).marketplace_id == "ATVPDKIKX0DER"


def test_amazon_orders_api_marketplace_reaches_the_facts() -> None:
    order = {
        "AmazonOrderId": "114-3941689-8772232",
        "PurchaseDate": "2026-12-01T10:00:00Z",
        "LastUpdateDate": "2026-12-01T11:00:00Z",
        "OrderStatus": "Unshipped",
        "MarketplaceId": "A1F83G8C2ARO7P",
    }
    items: list[Mapping[str, Any]] = [
        {"SellerSKU": "UK-MUG-2PK", "QuantityOrdered": 2, "QuantityShipped": 0}
    ]
    facts = amazon_order(order, items)
    assert facts.marketplace_id == "A1F83G8C2ARO7P"
    assert facts.listing_ids == {"UK-MUG-2PK": "UK-MUG-2PK"}
    assert amazon_order({**order, "MarketplaceId": None}, items).marketplace_id == ""


# --- the join and the stored JSON -------------------------------------------------------------


def test_conflicting_listing_ids_join_the_same_in_any_order() -> None:
    a = OrderFacts(lines_seen={"MUG-1": LineFacts(1)}, listing_ids={"MUG-1": "111"})
    b = OrderFacts(lines_seen={"MUG-1": LineFacts(1)}, listing_ids={"MUG-1": "222", "#9": "9"})
    c = OrderFacts(marketplace_id="A1PA6795UKMFR9")
    assert a.join(b) == b.join(a)
    assert a.join(b).listing_ids == {"MUG-1": "222", "#9": "9"}
    assert a.join(b).join(c) == c.join(b.join(a)) == a.join(b.join(c))
    assert a.join(a) == a


def test_facts_round_trip_through_json_and_old_json_still_reads() -> None:
    facts = OrderFacts(
        lines_seen={"MUG-1": LineFacts(2, 1, 1, 0), "#77": LineFacts(1)},
        payment=Payment.PAID,
        status=Stamped(AT, "Unshipped"),
        placed_at=AT,
        updated_at=AT,
        listing_ids={"MUG-1": "MUG-1", "#77": "77"},
        marketplace_id="ATVPDKIKX0DER",
    )
    stored = json.loads(json.dumps(orders.facts_to_json(facts)))
    assert orders.facts_from_json(stored) == facts

    # What an earlier ingest stored: no listing ids, no marketplace.
    old = {
        "lines": {"MUG-1": [2, 0, 0, 0]},
        "payment": 3,
        "cancelled_whole": False,
        "shipped_whole": False,
        "cancel_request": None,
        "status": [AT.isoformat(), "AWAITING_SHIPMENT"],
        "placed_at": None,
        "updated_at": AT.isoformat(),
    }
    read = orders.facts_from_json(old)
    assert read.lines_seen == {"MUG-1": LineFacts(2)}
    assert (read.listing_ids, read.marketplace_id) == ({}, "")
    assert published(read) == {("MUG-1", ""): (2, 0, 0, 0)}
    # The next notification brings the listing id in.
    seen = OrderFacts(lines_seen={"MUG-1": LineFacts(2)}, listing_ids={"MUG-1": "s-MUG-1"})
    assert published(read.join(seen)) == {("MUG-1", "s-MUG-1"): (2, 0, 0, 0)}


# --- through the running ingest ---------------------------------------------------------------


@pytest.fixture
async def tiktok() -> AsyncIterator[FakeTikTokShop]:
    fake = FakeTikTokShop()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def ingest_env(tiktok: FakeTikTokShop) -> dict[str, str]:
    return fake_channel_env(tiktok.url, "http://127.0.0.1:9", "http://127.0.0.1:9")


async def post(service: RunningService, path: str, body: bytes, headers: dict[str, str]) -> Any:
    url = f"http://127.0.0.1:{service.settings.http_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as reply,
    ):
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def published_of(
    bus: NATS, kind: type[ev.OrderChanged] | type[ev.OrderPlaced], order_id: str
) -> list[tuple[str, Any]]:
    """(subject, event) of every event of this kind and order on the stream."""
    event = "order_changed" if kind is ev.OrderChanged else "order_placed"
    try:
        info = await bus.jetstream().stream_info("INGEST", subjects_filter=f"ingest.{event}.>")
    except Exception:
        return []
    count = sum((info.state.subjects or {}).values())
    found: list[tuple[str, Any]] = []
    if not count:
        return found
    subscription = await bus.jetstream().subscribe(f"ingest.{event}.>", ordered_consumer=True)
    try:
        for _ in range(count):
            message = await subscription.next_msg(timeout=5)
            decoded: Message = kind.FromString(message.data)
            if decoded.channel_order_id == order_id:  # type: ignore[attr-defined]
                found.append((message.subject, decoded))
    finally:
        await subscription.unsubscribe()
    return found


async def wait_published(
    bus: NATS, kind: type[ev.OrderChanged] | type[ev.OrderPlaced], order_id: str
) -> tuple[str, Any]:
    found: list[tuple[str, Any]] = []

    async def arrived() -> bool:
        nonlocal found
        found = await published_of(bus, kind, order_id)
        return bool(found)

    await eventually(arrived, within=10, what=f"{kind.__name__} of {order_id}")
    [only] = found
    return only


async def test_tiktok_webhook_publishes_listing_ids_and_a_line_without_seller_sku(
    ingest: RunningService, bus: NATS, tiktok: FakeTikTokShop
) -> None:
    order_id = f"5764{uuid.uuid4().int % 10**14:014d}"
    tiktok.add_order(order_id, ["MUG-1", "MUG-1", "CAP-1"])
    # The seller never gave CAP-1's listing a seller SKU: TikTok sends only its sku_id.
    items: list[dict[str, str]] = tiktok.orders[order_id]["line_items"]  # type: ignore[assignment]
    del items[2]["seller_sku"]
    now = int(time.time())
    notification = {
        "type": 1,
        "tts_notification_id": uuid.uuid4().hex,
        "shop_id": "7494049642642441621",
        "timestamp": now,
        "data": {"order_id": order_id, "order_status": "AWAITING_SHIPMENT", "update_time": now},
    }
    raw = json.dumps(notification).encode()
    signature = hmac.new(b"fake-app-secret", b"fake-app-key" + raw, hashlib.sha256).hexdigest()
    assert await post(ingest, "/webhooks/tiktok-shop", raw, {"Authorization": signature}) == {
        "result": "changed"
    }

    subject, change = await wait_published(bus, ev.OrderChanged, order_id)
    assert {(line.sku, line.listing_id, line.ordered) for line in change.lines} == {
        ("MUG-1", "s-MUG-1", 2),
        ("", "s-CAP-1", 1),
    }
    assert change.marketplace_id == ""
    partitions = ingest.settings.partitions
    assert partition_for("MUG-1", partitions) != partition_for("s-CAP-1", partitions)
    assert subject == f"ingest.order_changed.{partition_for('MUG-1', partitions)}"


async def test_amazon_webhook_publishes_the_marketplace_and_seller_sku_listing(
    ingest: RunningService, bus: NATS
) -> None:
    notification: dict[str, Any] = json.loads((WEBHOOKS / "amazon_order_change.json").read_text())
    order_id = f"903-{uuid.uuid4().int % 10**7:07d}-{uuid.uuid4().int % 10**7:07d}"
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    notification["EventTime"] = now
    notification["NotificationMetadata"]["PublishTime"] = now
    notification["NotificationMetadata"]["NotificationId"] = str(uuid.uuid4())
    change = notification["Payload"]["OrderChangeNotification"]
    change["AmazonOrderId"] = order_id
    change["Summary"]["MarketplaceId"] = "A1PA6795UKMFR9"  # amazon.de
    body = json.dumps(notification).encode()
    headers = {"Authorization": f"Bearer {AMAZON_TOKEN}", "Content-Type": "application/json"}
    assert await post(ingest, "/webhooks/amazon", body, headers) == {"result": "changed"}

    _, published_change = await wait_published(bus, ev.OrderChanged, order_id)
    assert published_change.marketplace_id == "A1PA6795UKMFR9"
    assert [(line.sku, line.listing_id) for line in published_change.lines] == [
        ("SellerSKUID1", "SellerSKUID1")
    ]


async def test_record_order_passes_listing_ids_and_marketplace_through(
    ingest: RunningService, bus: NATS
) -> None:
    stub = IngestServiceStub(ingest.channel)
    order_id = f"amz-{uuid.uuid4().hex[:12]}"
    order = ev.OrderPlaced(
        channel=Channel.CHANNEL_AMAZON,
        channel_order_id=order_id,
        lines=[
            OrderLine(quantity=1, listing_id="LST-9"),  # no SKU: the catalogue places it
            OrderLine(sku="MUG-1", quantity=2, listing_id="MUG 1 / 2-pack"),
        ],
        marketplace_id="ATVPDKIKX0DER",
    )
    reply = await stub.RecordOrder(pb.RecordOrderRequest(order=order), timeout=10)
    assert not reply.duplicate
    subject, placed = await wait_published(bus, ev.OrderPlaced, order_id)
    assert placed == order
    assert subject == f"ingest.order_placed.{partition_for('MUG-1', ingest.settings.partitions)}"

    listing_only = ev.OrderPlaced(
        channel=Channel.CHANNEL_AMAZON,
        channel_order_id=f"{order_id}-b",
        lines=[OrderLine(quantity=1, listing_id="LST-9")],
    )
    await stub.RecordOrder(pb.RecordOrderRequest(order=listing_only), timeout=10)
    subject, _ = await wait_published(bus, ev.OrderPlaced, f"{order_id}-b")
    assert subject == f"ingest.order_placed.{partition_for('LST-9', ingest.settings.partitions)}"


async def test_record_order_refuses_a_line_with_neither_sku_nor_listing_id(
    ingest: RunningService,
) -> None:
    stub = IngestServiceStub(ingest.channel)
    bad = ev.OrderPlaced(
        channel=Channel.CHANNEL_AMAZON,
        channel_order_id="amz-bad-1",
        lines=[
            OrderLine(quantity=1),
            OrderLine(sku="MUG-1", quantity=1, listing_id="x" * 65),
            OrderLine(quantity=1, listing_id="tab\there"),
            OrderLine(sku="bad sku", quantity=1, listing_id="fine"),
        ],
        marketplace_id="not a marketplace",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordOrder(pb.RecordOrderRequest(order=bad), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    assert [(v.field, v.description) for v in details.field_violations] == [
        ("order.lines[0].sku", "a line needs a sku or a listing_id"),
        ("order.lines[1].listing_id", "must be 1-64 printable characters (or empty)"),
        ("order.lines[2].listing_id", "must be 1-64 printable characters (or empty)"),
        ("order.lines[3].sku", "malformed SKU"),
        ("order.marketplace_id", "must be 1-128 letters, digits or _.:- (or empty)"),
    ]
