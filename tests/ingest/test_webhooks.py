"""Channel order webhooks over real HTTP, with the channels' own payloads where they publish
them (../shared/data/webhooks): signatures, retry horizons, dedup, every status of an order.
Each change of an order goes out as one OrderChanged carrying its whole state."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from pulsestock.fakes import FakeTikTokShop, fake_channel_env
from pulsestock.v1 import ingest_events_pb2 as ev

from tests.helpers.infra import eventually
from tests.helpers.service import RunningService

SHOPIFY_SECRET = "fake-shopify-webhook-secret"
AMAZON_TOKEN = "fake-amazon-bridge-token"
# The channels' own payloads, copied from ../shared/data/webhooks (SOURCES.md says whose).
WEBHOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
PAID = ev.ORDER_PAYMENT_STATE_PAID


@pytest.fixture
async def tiktok() -> FakeTikTokShop:
    fake = FakeTikTokShop()
    await fake.start()
    yield fake  # type: ignore[misc]
    await fake.stop()


@pytest.fixture
def ingest_env(tiktok: FakeTikTokShop) -> dict[str, str]:
    return fake_channel_env(tiktok.url, "http://127.0.0.1:9", "http://127.0.0.1:9")


async def post(
    service: RunningService, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str]]:
    url = f"http://127.0.0.1:{service.settings.http_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as reply,
    ):
        return reply.status, await reply.json()


async def changes_of(bus: NATS, order_id: str) -> list[ev.OrderChanged]:
    """Every OrderChanged of this order on the stream (other tests share the stream)."""
    try:
        info = await bus.jetstream().stream_info("INGEST", subjects_filter="ingest.>")
    except Exception:
        return []
    count = sum((info.state.subjects or {}).values())
    found: list[ev.OrderChanged] = []
    if not count:
        return found
    subscription = await bus.jetstream().subscribe("ingest.>", ordered_consumer=True)
    try:
        for _ in range(count):
            message = await subscription.next_msg(timeout=5)
            if message.subject.startswith("ingest.order_changed."):
                change = ev.OrderChanged.FromString(message.data)
                if change.channel_order_id == order_id:
                    found.append(change)
    finally:
        await subscription.unsubscribe()
    return found


async def wait_changes(bus: NATS, order_id: str, count: int) -> list[ev.OrderChanged]:
    found: list[ev.OrderChanged] = []

    async def enough() -> bool:
        nonlocal found
        found = await changes_of(bus, order_id)
        return len(found) >= count

    await eventually(enough, within=10, what=f"{count} changes of order {order_id}")
    return found


def lines_of(change: ev.OrderChanged) -> dict[str, tuple[int, int, int, int]]:
    return {
        line.sku: (line.ordered, line.cancelled, line.shipped, line.returned)
        for line in change.lines
    }


# --- Shopify ------------------------------------------------------------------------------


def shopify_order() -> dict[str, Any]:
    """Shopify's own Order fixture (financial_status 'authorized', three iPods)."""
    order: dict[str, Any] = json.loads(
        (WEBHOOKS / "shopify_order_shopify-api-ruby.json").read_text()
    )["order"]
    return order


def shopify_headers(
    body: bytes,
    *,
    event_id: str,
    topic: str = "orders/create",
    secret: str = SHOPIFY_SECRET,
    triggered_at: str | None = None,
    age: timedelta = timedelta(),
) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": topic,
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": triggered_at or (datetime.now(UTC) - age).isoformat(),
        "Content-Type": "application/json",
    }


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def test_shopify_order_fixture_through_authorised_paid_part_cancelled_and_shipped(
    ingest: RunningService, bus: NATS
) -> None:
    order = shopify_order()
    order_id = str(order["id"])
    body = compact(order)
    wrong = shopify_headers(body, event_id="e1", secret="wrong")
    assert (await post(ingest, "/webhooks/shopify", body, wrong))[0] == 401
    unsigned = shopify_headers(body, event_id="e1")
    del unsigned["X-Shopify-Hmac-Sha256"]
    assert (await post(ingest, "/webhooks/shopify", body, unsigned))[0] == 401

    # Shopify retries with the original payload and Triggered-At for 4 hours: a retry 3 hours
    # late is taken; 6 hours is past Shopify's horizon (a replay); the future is refused.
    late = shopify_headers(body, event_id="e1", age=timedelta(hours=3))
    assert await post(ingest, "/webhooks/shopify", body, late) == (200, {"result": "changed"})
    assert await post(ingest, "/webhooks/shopify", body, late) == (200, {"result": "duplicate"})
    for refused in (
        shopify_headers(body, event_id="e2", age=timedelta(hours=6)),
        shopify_headers(body, event_id="e3", age=-timedelta(minutes=30)),
        shopify_headers(body, event_id="e4", triggered_at="2026-12-03T10:00:00"),  # no zone
    ):
        status, reply = await post(ingest, "/webhooks/shopify", body, refused)
        assert status == 400, reply
        assert reply["error"]
    [placed] = await wait_changes(bus, order_id, 1)
    assert lines_of(placed) == {
        "IPOD2008GREEN": (1, 0, 0, 0),
        "IPOD2008RED": (1, 0, 0, 0),
        "IPOD2008BLACK": (1, 0, 0, 0),
    }
    assert placed.payment == ev.ORDER_PAYMENT_STATE_AUTHORIZED  # not an unpaid hold
    assert placed.revision == 1

    # orders/paid, then an update: RED taken off the order, GREEN fulfilled.
    paid = {**order, "financial_status": "paid"}
    paid_body = compact(paid)
    assert await post(
        ingest,
        "/webhooks/shopify",
        paid_body,
        shopify_headers(paid_body, event_id="e5", topic="orders/paid"),
    ) == (200, {"result": "changed"})
    updated = {
        **paid,
        "line_items": [
            {**item, "current_quantity": 0 if item["sku"] == "IPOD2008RED" else 1}
            for item in order["line_items"]
        ],
        "fulfillments": [
            {"status": "success", "line_items": [{"sku": "IPOD2008GREEN", "quantity": 1}]}
        ],
    }
    updated_body = compact(updated)
    assert await post(
        ingest,
        "/webhooks/shopify",
        updated_body,
        shopify_headers(updated_body, event_id="e6", topic="orders/updated"),
    ) == (200, {"result": "changed"})
    # The earlier orders/create delivered once more under a new id changes nothing.
    again = shopify_headers(body, event_id="e7")
    assert await post(ingest, "/webhooks/shopify", body, again) == (
        200,
        {"result": "unchanged"},
    )
    changes = await wait_changes(bus, order_id, 3)
    assert [c.revision for c in changes] == [1, 2, 3]
    assert changes[1].payment == PAID
    for latest in changes[2:]:
        assert lines_of(latest) == {
            "IPOD2008GREEN": (1, 0, 1, 0),
            "IPOD2008RED": (1, 1, 0, 0),
            "IPOD2008BLACK": (1, 0, 0, 0),
        }
        assert latest.payment == PAID  # a late 'authorized' does not take payment back

    other = compact({"id": 1})
    assert await post(
        ingest,
        "/webhooks/shopify",
        other,
        shopify_headers(other, event_id="e8", topic="carts/create"),
    ) == (200, {"result": "ignored"})


# --- TikTok Shop ----------------------------------------------------------------------------


def tiktok_request(
    body: dict[str, object], secret: str = "fake-app-secret"
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    signature = hmac.new(secret.encode(), b"fake-app-key" + raw, hashlib.sha256).hexdigest()
    return raw, {"Authorization": signature, "Content-Type": "application/json"}


def tiktok_notification(name: str, **data: object) -> dict[str, Any]:
    notification: dict[str, Any] = json.loads((WEBHOOKS / name).read_text())
    now = int(time.time())
    notification["timestamp"] = now
    notification["data"] = {**notification["data"], "update_time": now, **data}
    notification["tts_notification_id"] = uuid.uuid4().hex
    return notification


async def test_tiktok_order_from_unpaid_to_shipped_with_a_cancel_request_between(
    ingest: RunningService, bus: NATS, tiktok: FakeTikTokShop
) -> None:
    order_id = "576461413038785752"
    tiktok.add_order(order_id, ["MUG-1", "MUG-1", "CAP-1"], status="UNPAID")
    unpaid = tiktok_notification("tiktok_order_status_change.json")
    raw, headers = tiktok_request(unpaid, secret="not-the-secret")
    assert (await post(ingest, "/webhooks/tiktok-shop", raw, headers))[0] == 401
    assert (await post(ingest, "/webhooks/tiktok-shop", raw, {}))[0] == 401  # unsigned
    stale = {**unpaid, "timestamp": int(time.time()) - 20 * 3600}  # past TikTok's 12 h retry
    assert (await post(ingest, "/webhooks/tiktok-shop", *tiktok_request(stale)))[0] == 400
    ahead = {**unpaid, "timestamp": int(time.time()) + 3600}
    assert (await post(ingest, "/webhooks/tiktok-shop", *tiktok_request(ahead)))[0] == 400
    raw, headers = tiktok_request(unpaid)
    assert await post(ingest, "/webhooks/tiktok-shop", raw, headers) == (200, {"result": "changed"})
    assert await post(ingest, "/webhooks/tiktok-shop", raw, headers) == (
        200,
        {"result": "duplicate"},
    )

    # Type 27 (inventory status) has no order: answered 2xx and recorded as ignored.
    inventory = {
        "type": 27,
        "tts_notification_id": uuid.uuid4().hex,
        "shop_id": "7494049642642441621",
        "timestamp": int(time.time()),
        "data": {"sku_id": "s-MUG-1", "total": 5},
    }
    assert await post(ingest, "/webhooks/tiktok-shop", *tiktok_request(inventory)) == (
        200,
        {"result": "ignored"},
    )

    tiktok.set_order_status(order_id, "AWAITING_SHIPMENT")
    paid = tiktok_notification("tiktok_order_status_change.json", order_status="AWAITING_SHIPMENT")
    assert (await post(ingest, "/webhooks/tiktok-shop", *tiktok_request(paid)))[1] == {
        "result": "changed"
    }
    request = tiktok_notification("tiktok_cancellation_status_change.json")
    assert (await post(ingest, "/webhooks/tiktok-shop", *tiktok_request(request)))[1] == {
        "result": "changed"
    }
    tiktok.set_order_status(order_id, "IN_TRANSIT")
    shipped = tiktok_notification("tiktok_order_status_change.json", order_status="IN_TRANSIT")
    assert (await post(ingest, "/webhooks/tiktok-shop", *tiktok_request(shipped)))[1] == {
        "result": "changed"
    }
    changes = await wait_changes(bus, order_id, 4)
    assert [c.payment for c in changes] == [ev.ORDER_PAYMENT_STATE_UNPAID, PAID, PAID, PAID]
    assert lines_of(changes[0]) == {"MUG-1": (2, 0, 0, 0), "CAP-1": (1, 0, 0, 0)}
    assert [c.cancel_requested for c in changes] == [False, False, True, False]  # shipped
    assert lines_of(changes[3]) == {"MUG-1": (2, 0, 2, 0), "CAP-1": (1, 0, 1, 0)}


# --- Amazon -----------------------------------------------------------------------------------


def amazon_example(notification_id: str, status: str | None = None) -> bytes:
    """Amazon's documented ORDER_CHANGE example, timestamped now."""
    notification: dict[str, Any] = json.loads((WEBHOOKS / "amazon_order_change.json").read_text())
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    notification["EventTime"] = now
    notification["NotificationMetadata"]["PublishTime"] = now
    notification["NotificationMetadata"]["NotificationId"] = notification_id
    change = notification["Payload"]["OrderChangeNotification"]
    if status is not None:
        change["Summary"]["OrderStatus"] = status
        change["OrderChangeType"] = "OrderStatusChange"
        change["OrderChangeTrigger"]["TimeOfOrderChange"] = now
        for item in change["Summary"]["OrderItems"]:
            item.pop("IsBuyerRequestedCancel")
    return json.dumps(notification).encode()


async def test_amazon_pending_unshipped_then_the_buyers_cancel_request(
    ingest: RunningService, bus: NATS
) -> None:
    order_id = "903-8868176-2219830"
    good = {"Authorization": f"Bearer {AMAZON_TOKEN}", "Content-Type": "application/json"}
    pending = amazon_example("a-1", "Pending")
    assert (await post(ingest, "/webhooks/amazon", pending, {}))[0] == 401
    assert (await post(ingest, "/webhooks/amazon", pending, {"Authorization": "Bearer no"}))[
        0
    ] == 401
    assert await post(ingest, "/webhooks/amazon", pending, good) == (200, {"result": "changed"})
    assert await post(ingest, "/webhooks/amazon", pending, good) == (200, {"result": "duplicate"})
    unshipped = amazon_example("a-2", "Unshipped")  # a status change, not a duplicate
    assert await post(ingest, "/webhooks/amazon", unshipped, good) == (200, {"result": "changed"})
    request = amazon_example("a-3")  # the example itself: Buyer Requested Cancel
    assert await post(ingest, "/webhooks/amazon", request, good) == (200, {"result": "changed"})
    naive = json.loads(amazon_example("a-4", "Unshipped"))
    naive["NotificationMetadata"]["PublishTime"] = "2026-12-03T10:00:00"
    status, reply = await post(ingest, "/webhooks/amazon", json.dumps(naive).encode(), good)
    assert status == 400
    assert "zone" in reply["error"]

    changes = await wait_changes(bus, order_id, 3)
    assert [c.payment for c in changes] == [ev.ORDER_PAYMENT_STATE_UNPAID, PAID, PAID]
    assert all(lines_of(c) == {"SellerSKUID1": (10, 0, 0, 0)} for c in changes)
    assert [c.cancel_requested for c in changes] == [False, False, True]


async def test_a_body_that_is_not_json_changes_nothing(ingest: RunningService, bus: NATS) -> None:
    body = b"not json"
    status, reply = await post(
        ingest, "/webhooks/shopify", body, shopify_headers(body, event_id="x")
    )
    assert status == 400
    assert "JSON" in reply["error"]
