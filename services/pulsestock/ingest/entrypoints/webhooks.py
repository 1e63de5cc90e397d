"""HTTP webhooks for channel orders (aiohttp): every notification joins its order's state.

Each channel's signature is checked over the raw body before anything is parsed; a bad or
missing signature gets 401 and nothing is stored. A delivery seen before answers 200 and
changes nothing. A delivery is refused (400) when it was sent longer ago than its channel
retries deliveries (a replay: each channel's horizon is configurable) or later than a few
minutes from now. A notification we do not act on is answered 200 and recorded as ignored,
so the channel stops retrying; a malformed one gets 400 with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pulsestock.clock import Clock
from pulsestock.ids import valid_id
from pulsestock.ingest.adapters.tiktok_orders import TikTokOrderLookupFailed, TikTokOrders
from pulsestock.ingest.application.channel_orders import ChannelOrders, Delivery
from pulsestock.ingest.domain import orders
from pulsestock.runtime import ServiceContext
from pulsestock.telemetry import get_logger
from pulsestock.v1.common_pb2 import Channel

log = get_logger(__name__)

# How long each channel keeps retrying a delivery it sent (the replay window must not refuse
# those): Shopify 8 times over 4 hours; TikTok Shop at 2 min, 30 min, 3 h and 12 h; Amazon's
# notifications wait in the seller's SQS queue (4 days by default) for the bridge.
RETRY_HORIZONS = {
    "tiktok_shop": timedelta(hours=16),
    "shopify": timedelta(hours=5),
    "amazon": timedelta(days=4),
}
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class WebhookSecrets:
    tiktok_app_key: str | None
    # Hidden from repr: a settings object printed in a log must not carry them.
    tiktok_app_secret: str | None = field(repr=False)
    shopify_secret: str | None = field(repr=False)
    amazon_token: str | None = field(repr=False)
    max_age: dict[str, timedelta] = field(default_factory=lambda: dict(RETRY_HORIZONS))
    clock_skew: timedelta = CLOCK_SKEW


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _equal(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


class Webhooks:
    def __init__(
        self,
        channel_orders: ChannelOrders,
        secrets: WebhookSecrets,
        clock: Clock,
        tiktok_orders: TikTokOrders | None,
    ) -> None:
        self.orders = channel_orders
        self.secrets = secrets
        self.clock = clock
        self.tiktok_orders = tiktok_orders

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/healthz", healthz)
        app.router.add_post("/webhooks/tiktok-shop", self._guard(self.tiktok_shop))
        app.router.add_post("/webhooks/shopify", self._guard(self.shopify))
        app.router.add_post("/webhooks/amazon", self._guard(self.amazon))
        return app

    def _guard(
        self, handler: Callable[[web.Request, bytes], Awaitable[str]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                outcome = await handler(request, body)
            except Refused as refusal:
                log.warning("webhook refused", path=request.path, reason=refusal.reason)
                return web.json_response({"error": refusal.reason}, status=refusal.status)
            except orders.MalformedOrder as error:
                log.warning("webhook refused", path=request.path, reason=str(error))
                return web.json_response({"error": str(error)}, status=400)
            return web.json_response({"result": outcome})

        return guarded

    def _fresh(self, source: str, sent_at: datetime) -> None:
        now = self.clock()
        if now - sent_at > self.secrets.max_age[source]:
            raise Refused(400, "delivery is older than the channel retries deliveries (a replay)")
        if sent_at - now > self.secrets.clock_skew:
            raise Refused(400, "delivery is timestamped in the future")

    @staticmethod
    def _delivery(source: str, delivery_id: str) -> Delivery:
        if not delivery_id or len(delivery_id) > 200:
            raise Refused(400, "missing or malformed delivery id")
        return Delivery(source, delivery_id)

    @staticmethod
    def _order_id(order_id: str) -> str:
        if not valid_id(order_id):
            raise Refused(400, "malformed order id")
        return order_id

    # --- TikTok Shop: Authorization = hex(HMAC-SHA256(app_secret, app_key + raw body)) ----------

    async def tiktok_shop(self, request: web.Request, body: bytes) -> str:
        key, secret = self.secrets.tiktok_app_key, self.secrets.tiktok_app_secret
        if not key or not secret:
            raise Refused(503, "TikTok Shop webhooks are not configured")
        expected = hmac.new(secret.encode(), key.encode() + body, hashlib.sha256).hexdigest()
        if not _equal(expected, request.headers.get("Authorization")):
            raise Refused(401, "bad or missing signature")
        envelope = _json(body)
        try:
            self._fresh("tiktok_shop", datetime.fromtimestamp(int(envelope["timestamp"]), UTC))
            kind = int(envelope["type"])
            notification = str(envelope["tts_notification_id"])
            data = envelope["data"]
            if not isinstance(data, dict):
                raise TypeError("data is not an object")
        except (KeyError, TypeError, ValueError, OverflowError, OSError) as error:
            raise Refused(400, f"malformed notification: {error}") from error
        delivery = self._delivery("tiktok_shop", notification)
        if kind not in (1, 11):  # e.g. 27 inventory status, 24 FBT inventory
            return await self.orders.ignore(delivery, f"notification type {kind}")
        try:
            order_id = self._order_id(str(data["order_id"]))
            updated_at = datetime.fromtimestamp(
                int(data.get("update_time", envelope["timestamp"])), UTC
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError) as error:
            raise Refused(400, f"malformed notification: {error}") from error
        if kind == 11:
            seen = orders.tiktok_cancellation(data, updated_at)
        else:
            status = str(data.get("order_status", ""))
            detail = await self._tiktok_detail(order_id, needed=status != "CANCELLED")
            seen = orders.tiktok_status(
                status,
                updated_at,
                None if detail is None else orders.tiktok_lines(detail),
                None if detail is None else orders.tiktok_listing_ids(detail),
            )
        return await self.orders.observe(Channel.CHANNEL_TIKTOK_SHOP, order_id, seen, delivery)

    async def _tiktok_detail(self, order_id: str, *, needed: bool) -> Mapping[str, Any] | None:
        """The status notification carries no lines: the order detail API has them. A
        cancellation can be recorded without them; anything else waits for TikTok's retry."""
        if self.tiktok_orders is None:
            if needed:
                raise Refused(503, "TikTok Shop order lookups are not configured")
            return None
        try:
            return await self.tiktok_orders.detail(order_id)
        except TikTokOrderLookupFailed as error:  # nothing recorded: TikTok's retry may work
            if needed:
                raise Refused(503, f"order detail unavailable: {error}") from error
            return None

    # --- Shopify: X-Shopify-Hmac-Sha256 = base64(HMAC-SHA256(secret, raw body)) ----------------

    async def shopify(self, request: web.Request, body: bytes) -> str:
        secret = self.secrets.shopify_secret
        if not secret:
            raise Refused(503, "Shopify webhooks are not configured")
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        if not _equal(expected.decode(), request.headers.get("X-Shopify-Hmac-Sha256")):
            raise Refused(401, "bad or missing signature")
        topic = request.headers.get("X-Shopify-Topic", "")
        if "X-Shopify-Triggered-At" not in request.headers:
            raise Refused(400, "missing X-Shopify-Triggered-At")
        triggered_at = orders.shopify_time(
            request.headers["X-Shopify-Triggered-At"], "X-Shopify-Triggered-At"
        )
        self._fresh("shopify", triggered_at)
        delivery = self._delivery(
            "shopify",
            request.headers.get("X-Shopify-Event-Id")
            or request.headers.get("X-Shopify-Webhook-Id")
            or "",
        )
        body_json = _json(body)
        if topic not in orders.SHOPIFY_TOPICS:
            return await self.orders.ignore(delivery, f"topic {topic!r}")
        order_id = self._order_id(
            str(body_json.get("order_id" if topic == "refunds/create" else "id", ""))
        )
        seen = orders.shopify_order(topic, body_json, triggered_at)
        return await self.orders.observe(Channel.CHANNEL_SHOPIFY, order_id, seen, delivery)

    # --- Amazon: ORDER_CHANGE, forwarded from SQS/EventBridge by a bridge with a bearer token ---

    async def amazon(self, request: web.Request, body: bytes) -> str:
        token = self.secrets.amazon_token
        if not token:
            raise Refused(503, "Amazon notifications are not configured")
        if not _equal(f"Bearer {token}", request.headers.get("Authorization")):
            raise Refused(401, "bad or missing bearer token")
        notification = _json(body)
        try:
            metadata = notification["NotificationMetadata"]
            published = orders.amazon_time(metadata["PublishTime"], "PublishTime")
            delivery = self._delivery("amazon", str(metadata["NotificationId"]))
            kind = str(notification["NotificationType"])
        except (KeyError, TypeError) as error:
            raise Refused(400, f"malformed notification: {error}") from error
        self._fresh("amazon", published)
        if kind != "ORDER_CHANGE":
            return await self.orders.ignore(delivery, f"notification type {kind}")
        try:
            change = notification["Payload"]["OrderChangeNotification"]
            order_id = self._order_id(str(change["AmazonOrderId"]))
            event_time = orders.amazon_time(
                notification.get("EventTime", metadata["PublishTime"]), "EventTime"
            )
        except (KeyError, TypeError) as error:
            raise Refused(400, f"malformed notification: {error}") from error
        seen = orders.amazon_order_change(change, event_time)
        return await self.orders.observe(Channel.CHANNEL_AMAZON, order_id, seen, delivery)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Refused(400, "body is not JSON") from error
    if not isinstance(value, dict):
        raise Refused(400, "body is not a JSON object")
    return value


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve_http(webhooks: Webhooks, context: ServiceContext, stop: asyncio.Event) -> None:
    runner = web.AppRunner(webhooks.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, context.settings.grpc_host, context.settings.http_port)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
