"""HTTP webhooks for channel orders (aiohttp), normalised to orders.placed / orders.cancelled.

Each channel's signature is checked over the raw body before anything is parsed; a bad
signature gets 401 and nothing is stored; a delivery seen before answers 200 and changes
nothing; a delivery older than WEBHOOK_MAX_AGE_SECONDS is refused (a replay).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pulsestock.ids import valid_id
from pulsestock.ingest.adapters.tiktok_orders import TikTokOrderLookupFailed, TikTokOrders
from pulsestock.ingest.application.ingestion import Ingestion
from pulsestock.runtime import ServiceContext
from pulsestock.telemetry import get_logger
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel, OrderLine

log = get_logger(__name__)
Clock = Callable[[], datetime]

TIKTOK_PLACED = {"UNPAID", "ON_HOLD", "AWAITING_SHIPMENT", "AWAITING_COLLECTION"}
AMAZON_PLACED = {"Pending", "Unshipped"}


@dataclass(frozen=True)
class WebhookSecrets:
    tiktok_app_key: str | None
    tiktok_app_secret: str | None
    shopify_secret: str | None
    amazon_token: str | None
    max_age: timedelta


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
        ingestion: Ingestion,
        secrets: WebhookSecrets,
        clock: Clock,
        tiktok_orders: TikTokOrders | None,
    ) -> None:
        self.ingestion = ingestion
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
            return web.json_response({"result": outcome})

        return guarded

    def _fresh(self, sent_at: datetime) -> None:
        if self.clock() - sent_at > self.secrets.max_age:
            raise Refused(400, "delivery is older than the replay window")

    @staticmethod
    def _delivery(source: str, delivery_id: str) -> tuple[str, str]:
        if not delivery_id or len(delivery_id) > 200:
            raise Refused(400, "missing or malformed delivery id")
        return (source, delivery_id)

    # --- TikTok Shop: Authorization = hex(HMAC-SHA256(app_secret, app_key + raw body)) ----------

    async def tiktok_shop(self, request: web.Request, body: bytes) -> str:
        key, secret = self.secrets.tiktok_app_key, self.secrets.tiktok_app_secret
        if not key or not secret:
            raise Refused(503, "TikTok Shop webhooks are not configured")
        expected = hmac.new(secret.encode(), key.encode() + body, hashlib.sha256).hexdigest()
        if not _equal(expected, request.headers.get("Authorization")):
            raise Refused(401, "bad signature")
        envelope = _json(body)
        try:
            self._fresh(datetime.fromtimestamp(int(envelope["timestamp"]), UTC))
            kind, data = int(envelope["type"]), envelope["data"]
            order_id, status = str(data["order_id"]), str(data.get("order_status", ""))
            notification = str(envelope["tts_notification_id"])
        except (KeyError, TypeError, ValueError) as error:
            raise Refused(400, f"malformed notification: {error}") from error
        if kind not in (1, 11):
            return "ignored"
        if not valid_id(order_id):
            raise Refused(400, "malformed order_id")
        delivery = self._delivery("tiktok_shop", notification)
        if kind == 11 or status == "CANCELLED":
            return await self._cancel(Channel.CHANNEL_TIKTOK_SHOP, order_id, delivery)
        if status not in TIKTOK_PLACED:
            return "ignored"
        if self.tiktok_orders is None:
            raise Refused(503, "TikTok Shop order lookups are not configured")
        try:
            lines = await self.tiktok_orders.lines(order_id)
        except TikTokOrderLookupFailed as error:  # nothing recorded: TikTok's retry may work
            raise Refused(503, f"order detail unavailable: {error}") from error
        return await self._place(
            Channel.CHANNEL_TIKTOK_SHOP,
            order_id,
            lines,
            delivery,
            awaiting_payment=status == "UNPAID",
        )

    # --- Shopify: X-Shopify-Hmac-Sha256 = base64(HMAC-SHA256(secret, raw body)) ----------------

    async def shopify(self, request: web.Request, body: bytes) -> str:
        secret = self.secrets.shopify_secret
        if not secret:
            raise Refused(503, "Shopify webhooks are not configured")
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        if not _equal(expected.decode(), request.headers.get("X-Shopify-Hmac-Sha256")):
            raise Refused(401, "bad signature")
        topic = request.headers.get("X-Shopify-Topic", "")
        try:
            self._fresh(datetime.fromisoformat(request.headers["X-Shopify-Triggered-At"]))
        except (KeyError, ValueError) as error:
            raise Refused(400, "missing or malformed X-Shopify-Triggered-At") from error
        order = _json(body)
        delivery = (
            request.headers.get("X-Shopify-Event-Id")
            or request.headers.get("X-Shopify-Webhook-Id")
            or ""
        )
        if topic not in ("orders/create", "orders/cancelled"):
            return "ignored"
        recorded = self._delivery("shopify", delivery)
        order_id = str(order.get("id", ""))
        if not valid_id(order_id):
            raise Refused(400, "malformed order id")
        if topic == "orders/cancelled":
            return await self._cancel(Channel.CHANNEL_SHOPIFY, order_id, recorded)
        lines: dict[str, int] = {}
        for item in order.get("line_items", []):
            if item.get("sku"):
                lines[item["sku"]] = lines.get(item["sku"], 0) + int(item.get("quantity", 0))
        return await self._place(
            Channel.CHANNEL_SHOPIFY,
            order_id,
            lines,
            recorded,
            awaiting_payment=order.get("financial_status") not in ("paid", "partially_paid"),
        )

    # --- Amazon: ORDER_CHANGE, forwarded from SQS/EventBridge by a bridge with a bearer token ---

    async def amazon(self, request: web.Request, body: bytes) -> str:
        token = self.secrets.amazon_token
        if not token:
            raise Refused(503, "Amazon notifications are not configured")
        if not _equal(f"Bearer {token}", request.headers.get("Authorization")):
            raise Refused(401, "bad bearer token")
        notification = _json(body)
        try:
            if notification["NotificationType"] != "ORDER_CHANGE":
                return "ignored"
            metadata = notification["NotificationMetadata"]
            self._fresh(datetime.fromisoformat(metadata["PublishTime"].replace("Z", "+00:00")))
            change = notification["Payload"]["OrderChangeNotification"]
            order_id, summary = str(change["AmazonOrderId"]), change["Summary"]
            status = summary["OrderStatus"]
            items = summary.get("OrderItems", [])
            notification_id = str(metadata["NotificationId"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise Refused(400, f"malformed notification: {error}") from error
        if not valid_id(order_id):
            raise Refused(400, "malformed AmazonOrderId")
        delivery = self._delivery("amazon", notification_id)
        if status == "Canceled":
            return await self._cancel(Channel.CHANNEL_AMAZON, order_id, delivery)
        if status not in AMAZON_PLACED:
            return "ignored"
        lines: dict[str, int] = {}
        for item in items:
            lines[item["SellerSKU"]] = lines.get(item["SellerSKU"], 0) + int(item["Quantity"])
        return await self._place(
            Channel.CHANNEL_AMAZON, order_id, lines, delivery, awaiting_payment=status == "Pending"
        )

    # --- shared ----------------------------------------------------------------------------

    async def _place(
        self,
        channel: int,
        order_id: str,
        lines: dict[str, int],
        delivery: tuple[str, str],
        *,
        awaiting_payment: bool,
    ) -> str:
        good = {sku: q for sku, q in lines.items() if valid_id(sku) and q > 0}
        if not good:
            raise Refused(400, "the order has no line with a SKU and a quantity")
        order = ev.OrderPlaced(
            channel=channel,  # type: ignore[arg-type]
            channel_order_id=order_id,
            lines=[OrderLine(sku=sku, quantity=q) for sku, q in sorted(good.items())],
            awaiting_payment=awaiting_payment,
        )
        order.placed_at.FromDatetime(self.clock())
        duplicate = await self.ingestion.publish_order(order, delivery)
        return "duplicate" if duplicate else "placed"

    async def _cancel(self, channel: int, order_id: str, delivery: tuple[str, str]) -> str:
        cancelled = ev.OrderCancelled(channel=channel, channel_order_id=order_id)  # type: ignore[arg-type]
        cancelled.cancelled_at.FromDatetime(self.clock())
        duplicate = await self.ingestion.publish_order(cancelled, delivery)
        return "duplicate" if duplicate else "cancelled"


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
