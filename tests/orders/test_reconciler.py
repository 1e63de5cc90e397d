"""Webhooks get lost: the reconciler pulls recently updated orders from each channel's API (the
fakes, over real HTTP, with their auth, pagination and rate limits) and joins them into the
same lifecycle through the real ingest and inventory-sync (PostgreSQL, JetStream), so the
ledger ends right; a throttled channel is retried, a failing one waits for the next round."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pulsestock.config import Env
from pulsestock.eventstore import EventStore
from pulsestock.eventstore.store import connect_pool
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.ingest.adapters.order_sources import (
    AmazonOrders,
    AmazonOrdersConfig,
    OrderSource,
    Retry,
    ShopifyOrders,
    ShopifyOrdersConfig,
    TikTokOrderSearch,
    TikTokSearchConfig,
    amazon_order,
    next_page_info,
)
from pulsestock.ingest.application.channel_orders import ChannelOrders
from pulsestock.ingest.application.reconciler import Reconciler
from pulsestock.ingest.bootstrap import ReconcileSettings
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import RunningService, running_service
from tests.ingest.test_webhooks import AMAZON_TOKEN, compact, post, shopify_headers, tiktok_request
from tests.inventory_sync.test_service import receive, wait_for_stock

Delivery = tuple[str, bytes, dict[str, str]]
FAST_RETRY = Retry(attempts=8, base_s=0.05, max_s=3.0)
ORDERS_PER_CHANNEL = 3  # with pages of 2: every channel's pull takes two pages


@dataclass
class Fakes:
    tiktok: FakeTikTokShop
    shopify: FakeShopify
    amazon: FakeAmazon


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    # Amazon's getOrders plan (0.0167/s, burst 20) allows a test's few calls in its burst.
    found = Fakes(FakeTikTokShop(), FakeShopify(), FakeAmazon())
    for fake in (found.tiktok, found.shopify, found.amazon):
        await fake.start()
    yield found
    for fake in (found.tiktok, found.shopify, found.amazon):
        await fake.stop()


@dataclass
class Stack:
    ingest: RunningService
    stub: Stub
    channel_orders: ChannelOrders
    store: EventStore


@asynccontextmanager
async def running_stack(
    infra: Infra, nats_url: str, fakes: Fakes, reconcile_seconds: str
) -> AsyncIterator[Stack]:
    channels = fake_channel_env(fakes.tiktok.url, fakes.shopify.url, fakes.amazon.url)
    ingest_env = {**channels, "INGEST_RECONCILE_SECONDS": reconcile_seconds}
    ingest_schema, inventory_schema = unique_name("ing"), unique_name("inv")
    inventory_env = {
        "INVENTORY_SYNC_HOLD_SECONDS": "1",
        "INVENTORY_SYNC_EXPIRY_SWEEP_SECONDS": "0.05",
    }
    async with (
        running_service(
            "ingest", infra.database_url, nats_url, ingest_schema, ingest_env
        ) as ingest,
        running_service(
            "inventory-sync", infra.database_url, nats_url, inventory_schema, inventory_env
        ) as inventory,
    ):
        # The test's reconciler writes ingest's tables; ingest's own relay publishes.
        pool = await connect_pool(infra.database_url, ingest_schema, max_size=4)
        store = EventStore(pool, ingest_schema)
        try:
            yield Stack(
                ingest,
                Stub(inventory.channel),
                ChannelOrders(store, ingest.settings.partitions),
                store,
            )
        finally:
            await pool.close()
    await drop_schema(infra.database_url, ingest_schema)
    await drop_schema(infra.database_url, inventory_schema)


def sources(fakes: Fakes, page_size: int = 2, retry: Retry = FAST_RETRY) -> list[OrderSource]:
    env = fake_channel_env(fakes.tiktok.url, fakes.shopify.url, fakes.amazon.url)
    return [
        TikTokOrderSearch(
            TikTokSearchConfig(
                env["TIKTOK_SHOP_API_URL"],
                env["TIKTOK_SHOP_APP_KEY"],
                env["TIKTOK_SHOP_APP_SECRET"],
                env["TIKTOK_SHOP_ACCESS_TOKEN"],
                env["TIKTOK_SHOP_SHOP_CIPHER"],
                page_size=page_size,
                retry=retry,
            )
        ),
        ShopifyOrders(
            ShopifyOrdersConfig(
                env["SHOPIFY_API_URL"],
                env["SHOPIFY_ACCESS_TOKEN"],
                page_size=page_size,
                retry=retry,
            )
        ),
        AmazonOrders(
            AmazonOrdersConfig(
                env["AMAZON_SP_API_URL"],
                env["AMAZON_LWA_URL"],
                env["AMAZON_CLIENT_ID"],
                env["AMAZON_CLIENT_SECRET"],
                env["AMAZON_REFRESH_TOKEN"],
                env["AMAZON_MARKETPLACE_ID"],
                page_size=page_size,
                retry=retry,
            )
        ),
    ]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- one order per channel: the webhooks of its journey, and the fake left at its end --------


def shopify_journey(fake: FakeShopify, order_id: int, sku: str, start: datetime) -> list[Delivery]:
    """Authorised 3 units; paid; one taken off the order; one fulfilled."""
    base: dict[str, Any] = {
        "id": order_id,
        "created_at": start.isoformat(),
        "financial_status": "authorized",
        "line_items": [{"id": 1, "sku": sku, "quantity": 3, "current_quantity": 3}],
        "fulfillments": [],
    }
    paid = {**base, "financial_status": "paid"}
    edited = {**paid, "line_items": [{**base["line_items"][0], "current_quantity": 2}]}
    shipped = {
        **edited,
        "fulfillments": [{"status": "success", "line_items": [{"sku": sku, "quantity": 1}]}],
    }
    states = [
        ("orders/create", base),
        ("orders/paid", paid),
        ("orders/updated", edited),
        ("orders/updated", shipped),
    ]
    deliveries = []
    for minute, (topic, order) in enumerate(states):
        state = {**order, "updated_at": (start + timedelta(minutes=minute)).isoformat()}
        fake.put_order(state)  # the API shows the latest state
        body = compact(state)
        headers = shopify_headers(body, event_id=uuid.uuid4().hex, topic=topic)
        deliveries.append(("/webhooks/shopify", body, headers))
    return deliveries


def amazon_journey(fake: FakeAmazon, order_id: str, sku: str, start: datetime) -> list[Delivery]:
    """Pending 3 units; Unshipped (paid); PartiallyShipped, one unit out."""
    fake.add_order(order_id, [(sku, 3)], "Pending", at=iso(start))
    deliveries = []
    for minute, (status, shipped) in enumerate(
        [("Pending", 0), ("Unshipped", 0), ("PartiallyShipped", 1)]
    ):
        at = iso(start + timedelta(minutes=minute))
        fake.update_order(order_id, status, shipped={sku: shipped}, at=at)
        body = json.dumps(
            {
                "NotificationVersion": "1.0",
                "NotificationType": "ORDER_CHANGE",
                "PayloadVersion": "1.0",
                "EventTime": at,
                "Payload": {
                    "OrderChangeNotification": {
                        "SellerId": "A1FAKESELLER",
                        "AmazonOrderId": order_id,
                        "OrderChangeType": "OrderStatusChange",
                        "OrderChangeTrigger": {"TimeOfOrderChange": at, "ChangeReason": "Status"},
                        "Summary": {
                            "MarketplaceId": "ATVPDKIKX0DER",
                            "OrderStatus": status,
                            "FulfillmentType": "MFN",
                            "PurchaseDate": iso(start),
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


def tiktok_journey(
    fake: FakeTikTokShop, order_id: str, sku: str, start: datetime
) -> list[Delivery]:
    """UNPAID; AWAITING_SHIPMENT; IN_TRANSIT, one of three units cancelled."""
    begin = int(start.timestamp())
    fake.add_order(order_id, [sku] * 3, "UNPAID", update_time=begin)
    deliveries = []
    for offset, status in enumerate(["UNPAID", "AWAITING_SHIPMENT", "IN_TRANSIT"]):
        fake.set_order_status(
            order_id,
            status,
            cancelled_units=1 if status == "IN_TRANSIT" else 0,
            update_time=begin + 60 * offset,
        )
        notification = {
            "type": 1,
            "tts_notification_id": uuid.uuid4().hex,
            "shop_id": "7494049642642441621",
            "timestamp": int(time.time()),
            "data": {
                "order_id": order_id,
                "order_status": status,
                "is_on_hold_order": False,
                "update_time": begin + 60 * offset,
            },
        }
        deliveries.append(("/webhooks/tiktok-shop", *tiktok_request(notification)))
    return deliveries


async def place_orders(
    fakes: Fakes, stub: Stub, rng: random.Random, count: int
) -> tuple[dict[str, str], list[list[Delivery]]]:
    """`count` orders on each channel, each on that channel's SKU (stock 10 per order)."""
    suffix = uuid.uuid4().hex[:8]
    skus = {name: f"{name}-{suffix}" for name in ("T", "S", "A")}
    for sku in skus.values():
        await receive(stub, sku, 10 * count)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    journeys: list[list[Delivery]] = []
    for index in range(count):
        at = start + timedelta(minutes=index)
        # TikTok's detail API answers the order's current state when a webhook arrives: the
        # webhooks are posted after the fake moved on, as they arrive late in the wild.
        journeys.append(
            tiktok_journey(fakes.tiktok, str(rng.randrange(10**17, 10**18)), skus["T"], at)
        )
        journeys.append(
            shopify_journey(fakes.shopify, rng.randrange(10**15, 10**16), skus["S"], at)
        )
        amazon_id = f"113-{rng.randrange(10**6, 10**7)}-{rng.randrange(10**6, 10**7)}"
        journeys.append(amazon_journey(fakes.amazon, amazon_id, skus["A"], at))
    return skus, journeys


async def ledger_is_right(stub: Stub, skus: dict[str, str], count: int) -> None:
    # Shopify: 3 ordered, 1 cancelled, 1 shipped -> 1 held per order.
    await wait_for_stock(stub, skus["S"], on_hand=9 * count, reserved=count)
    # Amazon: 3 ordered, 1 shipped -> 2 held.
    await wait_for_stock(stub, skus["A"], on_hand=9 * count, reserved=2 * count)
    # TikTok: 3 ordered, 1 cancelled, the rest shipped.
    await wait_for_stock(stub, skus["T"], on_hand=8 * count, reserved=0, available=8 * count)


@pytest.mark.parametrize("seed", [1, 2])
async def test_lost_webhooks_are_made_good_by_a_reconcile_round(
    infra: Infra, nats_url: str, fakes: Fakes, seed: int
) -> None:
    rng = random.Random(seed)
    async with running_stack(infra, nats_url, fakes, reconcile_seconds="0") as stack:
        skus, journeys = await place_orders(fakes, stack.stub, rng, ORDERS_PER_CHANNEL)
        deliveries: list[Delivery] = []
        for index, journey in enumerate(journeys):
            # The first order of each channel loses every webhook; the others a third of
            # theirs (the last one too); some arrive twice; any order.
            kept = [] if index < 3 else [d for d in journey if rng.random() > 1 / 3]
            deliveries += kept + rng.sample(kept, k=min(1, len(kept)))
        rng.shuffle(deliveries)
        for path, body, headers in deliveries:
            status, reply = await post(stack.ingest, path, body, headers)
            assert status == 200, reply

        reconciler = Reconciler(
            stack.channel_orders, stack.store.pool, sources(fakes), lambda: datetime.now(UTC)
        )
        try:
            first = await reconciler.round()
            await ledger_is_right(stack.stub, skus, ORDERS_PER_CHANNEL)
            for name, result in first.items():
                assert result.error is None, (name, result.error)
                assert result.pages == 2, name  # 3 orders in pages of 2
                assert result.pulled == ORDERS_PER_CHANNEL, (name, result.outcomes)
                assert result.outcomes.get("changed", 0) >= 1, (name, result.outcomes)
                assert result.watermark is not None

            # The same snapshots again: duplicates, and asked from the watermark - overlap.
            second = await reconciler.round()
            for name, result in second.items():
                assert result.error is None, (name, result.error)
                assert result.outcomes == {"duplicate": ORDERS_PER_CHANNEL}, name
                assert result.since == first[name].watermark - reconciler.overlap  # type: ignore[operator]
            await ledger_is_right(stack.stub, skus, ORDERS_PER_CHANNEL)
        finally:
            await reconciler.close()

    # Each channel was paged as documented.
    searches = [r for r in fakes.tiktok.requests if r.path.endswith("/orders/search")]
    assert [bool(r.query.get("page_token")) for r in searches[:2]] == [False, True]
    assert json.loads(searches[0].body)["update_time_ge"] > 0
    listings = [r for r in fakes.shopify.requests if r.path.endswith("/orders.json")]
    assert listings[0].query["status"] == "any"
    assert "updated_at_min" in listings[0].query
    assert set(listings[1].query) == {"limit", "page_info"}
    gets = [r for r in fakes.amazon.requests if r.path == "/orders/v0/orders"]
    assert "LastUpdatedAfter" in gets[0].query
    assert "NextToken" in gets[1].query
    assert all(r.status == 200 for r in searches + listings + gets)


async def test_a_throttled_channel_is_retried_and_a_failing_one_waits_for_the_next_round(
    infra: Infra, nats_url: str, fakes: Fakes
) -> None:
    async with running_stack(infra, nats_url, fakes, reconcile_seconds="0") as stack:
        skus, _ = await place_orders(fakes, stack.stub, random.Random(7), 1)
        reconciler = Reconciler(
            stack.channel_orders,
            stack.store.pool,
            sources(fakes, retry=Retry(attempts=3, base_s=0.05, max_s=3.0)),
            lambda: datetime.now(UTC),
        )
        try:
            # Shopify's REST bucket is full (429 with Retry-After); TikTok throttles the next
            # call; Amazon fails every call of this round.
            fakes.shopify.rest_bucket.tokens = -4.0  # ~2.5 s until a request fits
            fakes.tiktok.faults.throttle_next = 1
            fakes.amazon.faults.fail_next, fakes.amazon.faults.fail_status = 1000, 503
            first = await reconciler.round()
            assert first["amazon"].error is not None
            assert "503" in first["amazon"].error
            assert first["amazon"].watermark is None
            assert await reconciler.watermark(reconciler.sources[2]) is None
            for name in ("tiktok_shop", "shopify"):
                assert first[name].error is None, (name, first[name].error)
                assert first[name].pulled == 1, name
            await wait_for_stock(stack.stub, skus["S"], on_hand=9, reserved=1)
            await wait_for_stock(stack.stub, skus["T"], on_hand=8, reserved=0)

            # Next round, Amazon answers again and its order is made good.
            fakes.amazon.faults.fail_next = 0
            second = await reconciler.round()
            assert second["amazon"].error is None, second["amazon"].error
            assert second["amazon"].outcomes.get("changed") == 1
            await ledger_is_right(stack.stub, skus, 1)
        finally:
            await reconciler.close()

    # The throttled calls were made again, Shopify's no sooner than it said.
    orders = [r for r in fakes.shopify.requests if r.path.endswith("/orders.json")]
    assert [r.status for r in orders[:2]] == [429, 200]
    # (a backoff of the client's own would have tried again after 0.05 s)
    said = float(orders[0].answer_headers["Retry-After"])
    assert said >= 0.5
    waited = orders[1].at - orders[0].answered_at
    assert waited >= said - 0.01, (waited, said)
    searches = [r for r in fakes.tiktok.requests if r.path.endswith("/orders/search")]
    assert [r.status for r in searches[:2]] == [429, 200]
    amazon_failed = [r for r in fakes.amazon.requests if r.status == 503]
    assert len(amazon_failed) == 3  # the token call, three attempts; then the round gave up


async def test_ingest_reconciles_on_its_interval_without_any_webhook(
    infra: Infra, nats_url: str, fakes: Fakes
) -> None:
    async with running_stack(infra, nats_url, fakes, reconcile_seconds="0.2") as stack:
        skus, _ = await place_orders(fakes, stack.stub, random.Random(11), 1)
        await ledger_is_right(stack.stub, skus, 1)  # no webhook posted at all


async def test_only_channels_with_all_their_api_settings_are_reconciled() -> None:
    env = fake_channel_env("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
    everything = ReconcileSettings.from_env(Env(env))
    assert everything.interval_s == 300
    assert everything.shopify is not None
    assert everything.shopify.api_version == "2024-10"
    partial = ReconcileSettings.from_env(
        Env(
            {
                **{k: v for k, v in env.items() if k != "AMAZON_REFRESH_TOKEN"},
                "SHOPIFY_API_URL": "",
                "INGEST_RECONCILE_SECONDS": "30",
            }
        )
    )
    assert partial.interval_s == 30
    assert partial.shopify is None
    assert partial.amazon is None
    opened = partial.sources()
    try:
        assert [source.name for source in opened] == ["tiktok_shop"]
    finally:
        for source in opened:
            await source.close()


def test_an_amazon_buyers_cancel_request_and_shopify_cursors_are_read_as_documented() -> None:
    order = {
        "AmazonOrderId": "113-1-1",
        "PurchaseDate": "2026-12-03T09:00:00Z",
        "LastUpdateDate": "2026-12-03T09:05:00Z",
        "OrderStatus": "Unshipped",
    }
    item = {"SellerSKU": "A", "QuantityOrdered": 2, "QuantityShipped": 0}
    requested = amazon_order(
        order, [{**item, "BuyerRequestedCancel": {"IsBuyerRequestedCancel": "true"}}]
    )
    assert requested.cancel_requested
    assert requested.lines["A"].ordered == 2
    answered = amazon_order(
        order, [{**item, "BuyerRequestedCancel": {"IsBuyerRequestedCancel": "false"}}]
    )
    assert not answered.cancel_requested
    assert amazon_order(order, [item]).cancel_request is None
    link = (
        "<https://s.myshopify.com/admin/api/2024-10/orders.json?limit=2&page_info=abc>;"
        ' rel="previous", <https://s.myshopify.com/admin/api/2024-10/orders.json?limit=2'
        '&page_info=def>; rel="next"'
    )
    assert next_page_info(link) == "def"
    assert next_page_info(link.split(", ")[0]) is None
    assert next_page_info(None) is None
