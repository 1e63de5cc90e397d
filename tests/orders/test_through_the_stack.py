"""An order placed, paid, partly cancelled and shipped on each channel, its webhooks signed as
the channel signs them and delivered out of order, twice, some not at all, through the real
ingest and inventory-sync (PostgreSQL, JetStream): the ledger ends right on every channel."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pulsestock.fakes import FakeTikTokShop, fake_channel_env
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import RunningService, running_service
from tests.ingest.test_webhooks import (
    AMAZON_TOKEN,
    compact,
    post,
    shopify_headers,
    tiktok_request,
)
from tests.inventory_sync.test_service import channel_quantities, receive, wait_for_stock

Delivery = tuple[str, bytes, dict[str, str]]


@pytest.fixture
async def tiktok() -> AsyncIterator[FakeTikTokShop]:
    fake = FakeTikTokShop()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def stack(
    infra: Infra, nats_url: str, tiktok: FakeTikTokShop
) -> AsyncIterator[tuple[RunningService, Stub]]:
    channels = fake_channel_env(tiktok.url, "http://127.0.0.1:9", "http://127.0.0.1:9")
    channels["INGEST_RECONCILE_SECONDS"] = "0"  # webhooks alone here (test_reconciler: the rest)
    ingest_schema, inventory_schema = unique_name("ing"), unique_name("inv")
    inventory_env = {
        # No channel sync here (the fakes' URLs for Shopify/Amazon are closed ports), and a
        # short unpaid hold: a hold that should be firm would run out within the test.
        "INVENTORY_SYNC_HOLD_SECONDS": "1",
        "INVENTORY_SYNC_EXPIRY_SWEEP_SECONDS": "0.05",
    }
    async with (
        running_service("ingest", infra.database_url, nats_url, ingest_schema, channels) as ingest,
        running_service(
            "inventory-sync", infra.database_url, nats_url, inventory_schema, inventory_env
        ) as inventory,
    ):
        yield ingest, Stub(inventory.channel)
    await drop_schema(infra.database_url, ingest_schema)
    await drop_schema(infra.database_url, inventory_schema)


def shopify_deliveries(order_id: int, sku: str) -> list[Delivery]:
    """Authorised 3 units; paid; one taken off the order; one fulfilled."""
    base: dict[str, Any] = {
        "id": order_id,
        "created_at": "2026-12-03T09:00:00-05:00",
        "financial_status": "authorized",
        "line_items": [{"id": 1, "sku": sku, "quantity": 3, "current_quantity": 3}],
        "fulfillments": [],
    }
    states = [
        ("orders/create", base),
        ("orders/paid", {**base, "financial_status": "paid"}),
        (
            "orders/updated",
            {
                **base,
                "financial_status": "paid",
                "line_items": [{**base["line_items"][0], "current_quantity": 2}],
            },
        ),
        (
            "orders/updated",
            {
                **base,
                "financial_status": "paid",
                "line_items": [{**base["line_items"][0], "current_quantity": 2}],
                "fulfillments": [
                    {"status": "success", "line_items": [{"sku": sku, "quantity": 1}]}
                ],
            },
        ),
    ]
    deliveries = []
    for minute, (topic, order) in enumerate(states):
        body = compact({**order, "updated_at": f"2026-12-03T09:0{minute}:00-05:00"})
        deliveries.append(
            (
                "/webhooks/shopify",
                body,
                shopify_headers(body, event_id=uuid.uuid4().hex, topic=topic),
            )
        )
    return deliveries


def amazon_deliveries(order_id: str, sku: str) -> list[Delivery]:
    """Pending 3 units; Unshipped (paid); PartiallyShipped, one unit out."""
    deliveries = []
    start = datetime.now(UTC) - timedelta(minutes=10)
    for minute, (status, shipped) in enumerate(
        [("Pending", 0), ("Unshipped", 0), ("PartiallyShipped", 1)]
    ):
        at = (start + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
        body = json.dumps(
            {
                "NotificationVersion": "1.0",
                "NotificationType": "ORDER_CHANGE",
                "PayloadVersion": "1.0",
                "EventTime": at,
                "Payload": {
                    "OrderChangeNotification": {
                        "NotificationLevel": "OrderLevel",
                        "SellerId": "A1FAKESELLER",
                        "AmazonOrderId": order_id,
                        "OrderChangeType": "OrderStatusChange",
                        "OrderChangeTrigger": {"TimeOfOrderChange": at, "ChangeReason": "Status"},
                        "Summary": {
                            "MarketplaceId": "ATVPDKIKX0DER",
                            "OrderStatus": status,
                            "FulfillmentType": "MFN",
                            "OrderItems": [
                                {
                                    "OrderItemId": "1",
                                    "SellerSKU": sku,
                                    "Quantity": 3,
                                    "QuantityShipped": shipped,
                                }
                            ],
                        },
                    }
                },
                "NotificationMetadata": {
                    "ApplicationId": "amzn1.sellerapps.app.fake",
                    "SubscriptionId": "sub-1",
                    "PublishTime": at,
                    "NotificationId": uuid.uuid4().hex,
                },
            }
        ).encode()
        headers = {"Authorization": f"Bearer {AMAZON_TOKEN}", "Content-Type": "application/json"}
        deliveries.append(("/webhooks/amazon", body, headers))
    return deliveries


def tiktok_deliveries(order_id: str) -> list[Delivery]:
    """UNPAID; AWAITING_SHIPMENT; IN_TRANSIT. The order detail API answers its current state
    (3 units, one cancelled) whenever ingest asks."""
    deliveries = []
    now = int(time.time())
    for offset, status in enumerate(["UNPAID", "AWAITING_SHIPMENT", "IN_TRANSIT"]):
        notification = {
            "type": 1,
            "tts_notification_id": uuid.uuid4().hex,
            "shop_id": "7494049642642441621",
            "timestamp": now,
            "data": {
                "order_id": order_id,
                "order_status": status,
                "is_on_hold_order": False,
                "update_time": now - 600 + 60 * offset,
            },
        }
        deliveries.append(("/webhooks/tiktok-shop", *tiktok_request(notification)))
    return deliveries


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_channels_order_ends_in_the_right_reservation_and_shipment(
    stack: tuple[RunningService, Stub], tiktok: FakeTikTokShop, seed: int
) -> None:
    ingest, stub = stack
    rng = random.Random(seed)
    suffix = uuid.uuid4().hex[:8]
    skus = {name: f"{name}-{suffix}" for name in ("T", "S", "A")}
    for sku in skus.values():
        await receive(stub, sku, 10)
    await wait_for_stock(stub, skus["T"], on_hand=10)
    tiktok_order = str(rng.randrange(10**17, 10**18))
    tiktok.add_order(tiktok_order, [skus["T"]] * 3)
    tiktok.set_order_status(tiktok_order, "IN_TRANSIT", cancelled_units=1)

    journeys = [
        shopify_deliveries(rng.randrange(10**15, 10**16), skus["S"]),
        amazon_deliveries(
            f"113-{rng.randrange(10**6, 10**7)}-{rng.randrange(10**6, 10**7)}", skus["A"]
        ),
        tiktok_deliveries(tiktok_order),
    ]
    deliveries: list[Delivery] = []
    for journey in journeys:
        # Every notification but the last may be lost; some arrive twice; any order.
        kept = [d for d in journey[:-1] if rng.random() > 1 / 3] + [journey[-1]]
        deliveries += kept + rng.sample(kept, k=min(2, len(kept)))
    rng.shuffle(deliveries)
    for path, body, headers in deliveries:
        status, reply = await post(ingest, path, body, headers)
        assert status == 200, reply

    # Shopify: 3 ordered, 1 cancelled, 1 shipped -> 1 still held, 9 on hand.
    await wait_for_stock(stub, skus["S"], on_hand=9, reserved=1, available=8)
    # Amazon: 3 ordered, 1 shipped -> 2 held.
    await wait_for_stock(stub, skus["A"], on_hand=9, reserved=2, available=7)
    # TikTok: 3 ordered, 1 cancelled, the rest shipped.
    await wait_for_stock(stub, skus["T"], on_hand=8, reserved=0, available=8)
    quantities = await channel_quantities(stub, skus["S"])
    assert quantities.get(Channel.CHANNEL_SHOPIFY) == 8
