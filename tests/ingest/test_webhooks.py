"""Channel order webhooks over real HTTP: signatures, dedup, replays, normalisation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from pulsestock.fakes import FakeTikTokShop, fake_channel_env
from pulsestock.v1 import ingest_events_pb2 as ev

from tests.helpers.infra import eventually
from tests.helpers.service import RunningService

SHOPIFY_SECRET = "fake-shopify-webhook-secret"
AMAZON_TOKEN = "fake-amazon-bridge-token"


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


async def published(bus: NATS, subjects: str) -> list[ev.OrderPlaced | ev.OrderCancelled]:
    messages: list[ev.OrderPlaced | ev.OrderCancelled] = []
    try:
        info = await bus.jetstream().stream_info("INGEST", subjects_filter=subjects)
    except Exception:
        return messages
    count = sum((info.state.subjects or {}).values())
    if not count:
        return messages
    subscription = await bus.jetstream().subscribe(subjects, ordered_consumer=True)
    for _ in range(count):
        message = await subscription.next_msg(timeout=5)
        kind = ev.OrderPlaced if "order_placed" in message.subject else ev.OrderCancelled
        messages.append(kind.FromString(message.data))
    await subscription.unsubscribe()
    return messages


async def wait_published(
    bus: NATS, subjects: str, count: int
) -> list[ev.OrderPlaced | ev.OrderCancelled]:
    found: list[ev.OrderPlaced | ev.OrderCancelled] = []

    async def enough() -> bool:
        nonlocal found
        found = await published(bus, subjects)
        return len(found) >= count

    await eventually(enough, within=10, what=f"{count} messages on {subjects}")
    return found


def shopify_headers(
    body: bytes,
    *,
    event_id: str,
    topic: str = "orders/create",
    secret: str = SHOPIFY_SECRET,
    age: timedelta = timedelta(),
) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": topic,
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": (datetime.now(UTC) - age).isoformat(),
        "Content-Type": "application/json",
    }


async def test_shopify_orders_are_verified_deduplicated_and_normalised(
    ingest: RunningService, bus: NATS
) -> None:
    body = json.dumps(
        {
            "id": 820982911946154508,
            "financial_status": "paid",
            "line_items": [
                {"sku": "MUG-1", "quantity": 2},
                {"sku": "CAP-1", "quantity": 1},
                {"sku": "MUG-1", "quantity": 1},
            ],
        }
    ).encode()
    status, _ = await post(
        ingest, "/webhooks/shopify", body, shopify_headers(body, event_id="e1", secret="wrong")
    )
    assert status == 401
    status, reply = await post(
        ingest, "/webhooks/shopify", body, shopify_headers(body, event_id="e1")
    )
    assert (status, reply) == (200, {"result": "placed"})
    status, reply = await post(
        ingest, "/webhooks/shopify", body, shopify_headers(body, event_id="e1")
    )
    assert (status, reply) == (200, {"result": "duplicate"})  # the same delivery again
    status, reply = await post(
        ingest, "/webhooks/shopify", body, shopify_headers(body, event_id="e2")
    )
    assert (status, reply) == (200, {"result": "duplicate"})  # another delivery, same order
    status, _ = await post(
        ingest,
        "/webhooks/shopify",
        body,
        shopify_headers(body, event_id="e3", age=timedelta(hours=2)),
    )
    assert status == 400  # a replayed old delivery
    placed = await wait_published(bus, "ingest.order_placed.>", 1)
    assert len(placed) == 1
    order = placed[0]
    assert isinstance(order, ev.OrderPlaced)
    assert order.channel_order_id == "820982911946154508"
    assert {(line.sku, line.quantity) for line in order.lines} == {("MUG-1", 3), ("CAP-1", 1)}
    assert not order.awaiting_payment

    cancel = json.dumps({"id": 820982911946154508}).encode()
    status, reply = await post(
        ingest,
        "/webhooks/shopify",
        cancel,
        shopify_headers(cancel, event_id="e4", topic="orders/cancelled"),
    )
    assert (status, reply) == (200, {"result": "cancelled"})
    assert len(await wait_published(bus, "ingest.order_cancelled.>", 1)) == 1


def tiktok_request(
    body: dict[str, object], secret: str = "fake-app-secret"
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    signature = hmac.new(secret.encode(), b"fake-app-key" + raw, hashlib.sha256).hexdigest()
    return raw, {"Authorization": signature, "Content-Type": "application/json"}


async def test_tiktok_status_webhook_fetches_the_lines_and_refuses_bad_or_old_deliveries(
    ingest: RunningService, bus: NATS, tiktok: FakeTikTokShop
) -> None:
    tiktok.add_order("5768000000000001", ["MUG-1", "MUG-1", "CAP-1"], status="AWAITING_SHIPMENT")
    notification = {
        "type": 1,
        "tts_notification_id": "n-1",
        "shop_id": "7000000000000000001",
        "timestamp": int(time.time()),
        "data": {
            "order_id": "5768000000000001",
            "order_status": "AWAITING_SHIPMENT",
            "update_time": int(time.time()),
        },
    }
    raw, headers = tiktok_request(notification, secret="not-the-secret")
    assert (await post(ingest, "/webhooks/tiktok-shop", raw, headers))[0] == 401
    stale = {**notification, "tts_notification_id": "n-0", "timestamp": int(time.time()) - 7200}
    raw, headers = tiktok_request(stale)
    assert (await post(ingest, "/webhooks/tiktok-shop", raw, headers))[0] == 400
    raw, headers = tiktok_request(notification)
    assert await post(ingest, "/webhooks/tiktok-shop", raw, headers) == (200, {"result": "placed"})
    assert await post(ingest, "/webhooks/tiktok-shop", raw, headers) == (
        200,
        {"result": "duplicate"},
    )
    placed = await wait_published(bus, "ingest.order_placed.>", 1)
    assert len(placed) == 1
    assert {(line.sku, line.quantity) for line in placed[0].lines} == {("MUG-1", 2), ("CAP-1", 1)}  # type: ignore[union-attr]

    cancellation = {
        **notification,
        "type": 11,
        "tts_notification_id": "n-2",
        "data": {"order_id": "5768000000000001", "order_status": "CANCELLED"},
    }
    raw, headers = tiktok_request(cancellation)
    assert await post(ingest, "/webhooks/tiktok-shop", raw, headers) == (
        200,
        {"result": "cancelled"},
    )


def amazon_notification(
    notification_id: str, status: str, published: datetime | None = None
) -> bytes:
    return json.dumps(
        {
            "NotificationVersion": "1.0",
            "NotificationType": "ORDER_CHANGE",
            "PayloadVersion": "1.0",
            "EventTime": datetime.now(UTC).isoformat(),
            "Payload": {
                "OrderChangeNotification": {
                    "SellerId": "A1FAKESELLER",
                    "AmazonOrderId": "113-1234567-1234567",
                    "OrderChangeType": "OrderStatusChange",
                    "OrderChangeTrigger": {
                        "TimeOfOrderChange": datetime.now(UTC).isoformat(),
                        "ChangeReason": "BuyerRequestedChange",
                    },
                    "Summary": {
                        "MarketplaceId": "ATVPDKIKX0DER",
                        "OrderStatus": status,
                        "FulfillmentType": "MFN",
                        "OrderItems": [
                            {
                                "OrderItemId": "1",
                                "SellerSKU": "MUG-1",
                                "Quantity": 4,
                                "QuantityShipped": 0,
                            }
                        ],
                    },
                }
            },
            "NotificationMetadata": {
                "ApplicationId": "amzn1.sellerapps.app.fake",
                "SubscriptionId": "sub-1",
                "PublishTime": (published or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
                "NotificationId": notification_id,
            },
        }
    ).encode()


async def test_amazon_order_change_notifications(ingest: RunningService, bus: NATS) -> None:
    good = {"Authorization": f"Bearer {AMAZON_TOKEN}", "Content-Type": "application/json"}
    body = amazon_notification("a-1", "Unshipped")
    assert (await post(ingest, "/webhooks/amazon", body, {"Authorization": "Bearer nope"}))[
        0
    ] == 401
    assert await post(ingest, "/webhooks/amazon", body, good) == (200, {"result": "placed"})
    assert await post(ingest, "/webhooks/amazon", body, good) == (200, {"result": "duplicate"})
    old = amazon_notification("a-0", "Unshipped", datetime.now(UTC) - timedelta(days=1))
    assert (await post(ingest, "/webhooks/amazon", old, good))[0] == 400
    assert await post(ingest, "/webhooks/amazon", amazon_notification("a-2", "Canceled"), good) == (
        200,
        {"result": "cancelled"},
    )
    placed = await wait_published(bus, "ingest.order_placed.>", 1)
    assert [(line.sku, line.quantity) for line in placed[0].lines] == [("MUG-1", 4)]  # type: ignore[union-attr]
    assert len(await wait_published(bus, "ingest.order_cancelled.>", 1)) == 1


async def test_a_body_that_is_not_json_changes_nothing(ingest: RunningService, bus: NATS) -> None:
    body = b"not json"
    status, reply = await post(
        ingest, "/webhooks/shopify", body, shopify_headers(body, event_id="x")
    )
    assert status == 400
    assert "JSON" in reply["error"]
    assert await published(bus, "ingest.>") == []
