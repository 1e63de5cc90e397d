"""TikTok Shop Partner API (v202309): signed stock update and inventory search, order detail
and order search (by update time, in pages of `page_size` with a `next_page_token`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from aiohttp import web
from pulsestock.fakes.base import FakeChannel, RecordedRequest, TokenBucket

UPDATE_PATH = "/product/202309/products/{product_id}/inventory/update"
SEARCH_PATH = "/product/202309/inventory/search"
ORDERS_PATH = "/order/202309/orders"
ORDER_SEARCH_PATH = "/order/202309/orders/search"


def tiktok_signature(app_secret: str, path: str, query: dict[str, str], body: bytes) -> str:
    """Query params except `sign` and `access_token`, sorted by key, as `{key}{value}`,
    prefixed with the path, followed by the raw body, wrapped in the secret; HMAC-SHA256."""
    pairs = "".join(f"{k}{query[k]}" for k in sorted(query) if k not in ("sign", "access_token"))
    payload = f"{app_secret}{path}{pairs}".encode() + body + app_secret.encode()
    return hmac.new(app_secret.encode(), payload, hashlib.sha256).hexdigest()


class FakeTikTokShop(FakeChannel):
    name = "tiktok_shop"

    def __init__(
        self,
        app_key: str = "fake-app-key",
        app_secret: str = "fake-app-secret",
        access_token: str = "fake-tts-token",
        shop_cipher: str = "fake-shop-cipher",
        warehouse_id: str = "7000000000000000001",
        rate_per_second: float = 50.0,
    ) -> None:
        super().__init__()
        self.app_key, self.app_secret = app_key, app_secret
        self.access_token, self.shop_cipher = access_token, shop_cipher
        self.warehouse_id = warehouse_id
        self.limit = TokenBucket(rate_per_second, rate_per_second)
        self.stock: dict[str, int] = {}  # by TikTok SKU id
        self.orders: dict[str, dict[str, object]] = {}  # order id -> order detail

    def add_order(
        self,
        order_id: str,
        seller_skus: list[str],
        status: str = "AWAITING_SHIPMENT",
        update_time: int | None = None,
    ) -> None:
        """An order as TikTok holds it: one line item per unit, as the Partner API returns."""
        now = int(time.time()) if update_time is None else update_time
        self.orders[order_id] = {
            "id": order_id,
            "status": status,
            "create_time": now,
            "update_time": now,
            "line_items": [
                {"id": f"{order_id}-{i}", "sku_id": self.sku_id(sku), "seller_sku": sku}
                for i, sku in enumerate(seller_skus)
            ],
        }

    def set_order_status(
        self,
        order_id: str,
        status: str,
        cancelled_units: int = 0,
        update_time: int | None = None,
    ) -> None:
        """Move an order on; the first `cancelled_units` line items show as cancelled."""
        order = self.orders[order_id]
        order["status"] = status
        previous = int(order.get("update_time", 0))  # type: ignore[call-overload]
        order["update_time"] = max(
            previous, int(time.time()) if update_time is None else update_time
        )
        items: list[dict[str, str]] = order["line_items"]  # type: ignore[assignment]
        for index, item in enumerate(items):
            if index < cancelled_units or status == "CANCELLED":
                item["display_status"] = "CANCELLED"

    # Our SKU is the seller SKU; the fake's product and SKU ids derive from it.
    @staticmethod
    def product_id(sku: str) -> str:
        return f"p-{sku}"

    @staticmethod
    def sku_id(sku: str) -> str:
        return f"s-{sku}"

    def quantity_of(self, sku: str) -> int | None:
        return self.stock.get(self.sku_id(sku))

    def set_quantity_outside(self, sku: str, quantity: int) -> None:
        self.stock[self.sku_id(sku)] = quantity

    def is_write(self, request: RecordedRequest) -> bool:
        return request.path.endswith("/inventory/update")

    def routes(self, app: web.Application) -> None:
        app.router.add_post(UPDATE_PATH, self.update)
        app.router.add_post(SEARCH_PATH, self.search)
        app.router.add_get(ORDERS_PATH, self.order_detail)
        app.router.add_post(ORDER_SEARCH_PATH, self.order_search)

    def _error(self, status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {"code": code, "message": message, "request_id": uuid.uuid4().hex}, status=status
        )

    async def _authenticate(self, request: web.Request) -> web.Response | None:
        query = dict(request.query)
        if request.headers.get("x-tts-access-token") != self.access_token:
            return self._error(401, 105002, "Expired credentials or invalid access token")
        if query.get("app_key") != self.app_key or query.get("shop_cipher") != self.shop_cipher:
            return self._error(401, 106011, "Invalid app_key or shop_cipher")
        try:
            skew = abs(time.time() - int(query.get("timestamp", "0")))
        except ValueError:
            skew = float("inf")
        if skew > 300:
            return self._error(401, 106010, "Invalid timestamp")
        expected = tiktok_signature(self.app_secret, request.path, query, await request.read())
        if not hmac.compare_digest(expected, query.get("sign", "")):
            return self._error(401, 106001, "Invalid credentials: signature mismatch")
        if not self.limit.take():
            return self._error(429, 36009004, "Too many requests")
        return None

    async def update(self, request: web.Request) -> web.Response:
        if (refusal := await self._authenticate(request)) is not None:
            return refusal
        try:
            body = json.loads(await request.read())
            skus = body["skus"]
            errors = []
            for item in skus:
                for inventory in item["inventory"]:
                    quantity = int(inventory["quantity"])
                    if not 0 <= quantity <= 99999:
                        errors.append(
                            {
                                "code": 12052049,
                                "message": "quantity out of range",
                                "detail": {"sku_id": item["id"]},
                            }
                        )
                        continue
                    if inventory["warehouse_id"] != self.warehouse_id:
                        errors.append(
                            {
                                "code": 12052230,
                                "message": "unknown warehouse",
                                "detail": {"sku_id": item["id"]},
                            }
                        )
                        continue
                    self.stock[item["id"]] = quantity
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return self._error(400, 40006, "Invalid request body")
        return web.json_response(
            {
                "code": 0,
                "message": "Success",
                "request_id": uuid.uuid4().hex,
                "data": {"errors": errors},
            }
        )

    async def search(self, request: web.Request) -> web.Response:
        if (refusal := await self._authenticate(request)) is not None:
            return refusal
        try:
            sku_ids = json.loads(await request.read())["sku_ids"]
        except (KeyError, TypeError, json.JSONDecodeError):
            return self._error(400, 40006, "Invalid request body")
        inventory = [
            {
                "product_id": "p-" + sku_id.removeprefix("s-"),
                "skus": [
                    {
                        "id": sku_id,
                        "total_available_quantity": self.stock.get(sku_id, 0),
                        "warehouse_inventory": [
                            {
                                "warehouse_id": self.warehouse_id,
                                "available_quantity": self.stock.get(sku_id, 0),
                                "committed_quantity": 0,
                            }
                        ],
                    }
                ],
            }
            for sku_id in sku_ids
            if sku_id in self.stock
        ]
        return web.json_response(
            {
                "code": 0,
                "message": "Success",
                "request_id": uuid.uuid4().hex,
                "data": {"inventory": inventory},
            }
        )

    async def order_detail(self, request: web.Request) -> web.Response:
        if (refusal := await self._authenticate(request)) is not None:
            return refusal
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        orders = [self.orders[i] for i in ids if i in self.orders]
        return web.json_response(
            {
                "code": 0,
                "message": "Success",
                "request_id": uuid.uuid4().hex,
                "data": {"orders": orders},
            }
        )

    async def order_search(self, request: web.Request) -> web.Response:
        """Orders filtered by `update_time_ge` / `update_time_lt` (and `create_time_*`,
        `order_status`) in the body, sorted by `sort_field` (default create_time) and
        `sort_order` (default DESC); `page_size` (1-100) is required; `page_token` continues."""
        if (refusal := await self._authenticate(request)) is not None:
            return refusal
        query = request.query
        try:
            page_size = int(query["page_size"])
            if not 1 <= page_size <= 100:
                raise ValueError(page_size)
            raw = await request.read()
            body: dict[str, Any] = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise TypeError("body")
            sort_field = query.get("sort_field", "create_time")
            if sort_field not in ("create_time", "update_time"):
                raise ValueError(sort_field)
            descending = query.get("sort_order", "DESC") == "DESC"
            token = query.get("page_token", "")
            offset = (
                int(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))
                if token
                else 0
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return self._error(400, 36009003, "Invalid request parameters")

        def wanted(order: dict[str, Any]) -> bool:
            for field in ("update_time", "create_time"):
                if f"{field}_ge" in body and order[field] < int(body[f"{field}_ge"]):
                    return False
                if f"{field}_lt" in body and order[field] >= int(body[f"{field}_lt"]):
                    return False
            return "order_status" not in body or order["status"] == body["order_status"]

        found = sorted(
            (order for order in self.orders.values() if wanted(order)),
            key=lambda order: (order[sort_field], order["id"]),
            reverse=descending,
        )
        page = found[offset : offset + page_size]
        more = offset + page_size < len(found)
        next_token = (
            base64.urlsafe_b64encode(str(offset + page_size).encode()).decode().rstrip("=")
            if more
            else ""
        )
        return web.json_response(
            {
                "code": 0,
                "message": "Success",
                "request_id": uuid.uuid4().hex,
                "data": {
                    "orders": page,
                    "next_page_token": next_token,
                    "total_count": len(found),
                },
            }
        )
