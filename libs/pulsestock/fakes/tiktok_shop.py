"""TikTok Shop Partner API (v202309): signed stock update and inventory search, order detail
and order search (by update time, in pages of `page_size` with a `next_page_token`), and the
shop's catalogue: product search (`POST /product/202309/products/search`, pages of up to 100
with a `next_page_token`) and product detail (`GET /product/202309/products/{product_id}`,
which alone shows a SKU's barcode, `identifier_code`).

Two kinds of SKU live here. Catalogue products (`add_product`) have ids like a real shop's
(19-digit product and SKU ids, SKUs in one or more warehouses) and are updated and read by
those ids. Any other product id follows the naming convention `p-<sku>` / `s-<sku>` of shops
without an imported catalogue (the demo, most tests)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pulsestock.fakes.base import FakeChannel, RecordedRequest, TokenBucket

UPDATE_PATH = "/product/202309/products/{product_id}/inventory/update"
SEARCH_PATH = "/product/202309/inventory/search"
ORDERS_PATH = "/order/202309/orders"
ORDER_SEARCH_PATH = "/order/202309/orders/search"
PRODUCT_SEARCH_PATH = "/product/202309/products/search"
PRODUCT_DETAIL_PATH = "/product/202309/products/{product_id}"

# Error codes of the catalogue paths (TikTok's own codes for these cases are *unverified*).
PRODUCT_NOT_FOUND = 12052048
SKU_NOT_IN_PRODUCT = 12052009
UNKNOWN_WAREHOUSE = 12052230


@dataclass(frozen=True)
class ShopSku:
    """A SKU of a catalogue product: the seller's SKU text, an optional barcode (GTIN / EAN /
    UPC, by length), the warehouses it is stocked in (default: the fake's warehouse) and the
    quantity each starts with."""

    seller_sku: str
    barcode: str = ""
    warehouse_ids: tuple[str, ...] = ()
    quantity: int = 0


@dataclass(frozen=True)
class AddedProduct:
    product_id: str
    sku_ids: tuple[str, ...]


def _barcode_type(code: str) -> str:
    return {12: "UPC", 13: "EAN"}.get(len(code), "GTIN")


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _page_offset(token: str) -> int:
    if not token:
        return 0
    offset = int(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))
    if offset < 0:
        raise ValueError(token)
    return offset


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
        # The catalogue: product id -> the product as the detail endpoint shows it.
        self.products: dict[str, dict[str, Any]] = {}
        self._product_of_sku: dict[str, str] = {}
        self._next_id = 1729_4000_0000_0000_000  # 19 digits, like TikTok's ids

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def add_product(
        self,
        title: str,
        skus: Sequence[str | ShopSku],
        status: str = "ACTIVATE",
        create_time: int | None = None,
    ) -> AddedProduct:
        """A product of the shop's catalogue, with TikTok-like ids; returns them."""
        now = int(time.time()) if create_time is None else create_time
        product_id = self._new_id()
        entries = []
        for given in skus:
            sku = ShopSku(given) if isinstance(given, str) else given
            entry: dict[str, Any] = {
                "id": self._new_id(),
                "seller_sku": sku.seller_sku,
                "price": {"currency": "USD", "sale_price": "9.99", "tax_exclusive_price": "9.99"},
                "inventory": [
                    {"warehouse_id": warehouse, "quantity": sku.quantity}
                    for warehouse in sku.warehouse_ids or (self.warehouse_id,)
                ],
            }
            if sku.barcode:
                entry["identifier_code"] = {
                    "code": sku.barcode,
                    "type": _barcode_type(sku.barcode),
                }
            entries.append(entry)
            self._product_of_sku[entry["id"]] = product_id
        self.products[product_id] = {
            "id": product_id,
            "title": title,
            "status": status,
            "create_time": now,
            "update_time": now,
            "sales_regions": ["US"],
            "skus": entries,
        }
        return AddedProduct(product_id, tuple(entry["id"] for entry in entries))

    def _catalogue_sku(self, product_id: str, sku_id: str) -> dict[str, Any] | None:
        product = self.products.get(product_id)
        for entry in product["skus"] if product else ():
            if entry["id"] == sku_id:
                return entry  # type: ignore[no-any-return]
        return None

    def quantity_of_listing(self, product_id: str, sku_id: str, warehouse_id: str) -> int | None:
        """A catalogue SKU's quantity in one warehouse; None when it is not stocked there."""
        entry = self._catalogue_sku(product_id, sku_id)
        for inventory in entry["inventory"] if entry else ():
            if inventory["warehouse_id"] == warehouse_id:
                return int(inventory["quantity"])
        return None

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
        app.router.add_post(PRODUCT_SEARCH_PATH, self.product_search)
        app.router.add_get(PRODUCT_DETAIL_PATH, self.product_detail)

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
        product_id = request.match_info["product_id"]
        product = self.products.get(product_id)
        if product is None and not product_id.startswith("p-"):
            return self._error(200, PRODUCT_NOT_FOUND, f"Product {product_id} does not exist")
        try:
            body = json.loads(await request.read())
            skus = body["skus"]
            errors = []
            for item in skus:

                def refuse(code: int, message: str, sku_id: str = item["id"]) -> None:
                    errors.append({"code": code, "message": message, "detail": {"sku_id": sku_id}})

                entry = self._catalogue_sku(product_id, item["id"]) if product else None
                if product is not None and entry is None:
                    refuse(SKU_NOT_IN_PRODUCT, "SKU does not belong to the product")
                    continue
                for inventory in item["inventory"]:
                    quantity = int(inventory["quantity"])
                    if not 0 <= quantity <= 99999:
                        refuse(12052049, "quantity out of range")
                        continue
                    if entry is None:  # the naming convention: one warehouse, the fake's
                        if inventory["warehouse_id"] != self.warehouse_id:
                            refuse(UNKNOWN_WAREHOUSE, "unknown warehouse")
                            continue
                        self.stock[item["id"]] = quantity
                        continue
                    stocked = [
                        level
                        for level in entry["inventory"]
                        if level["warehouse_id"] == inventory["warehouse_id"]
                    ]
                    if not stocked:
                        refuse(UNKNOWN_WAREHOUSE, "the SKU is not stocked in this warehouse")
                        continue
                    stocked[0]["quantity"] = quantity
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return self._error(400, 40006, "Invalid request body")
        if product is not None:
            product["update_time"] = int(time.time())
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
            body = json.loads(await request.read())
            sku_ids = list(body.get("sku_ids") or [])
            product_ids = list(body.get("product_ids") or [])
        except (AttributeError, TypeError, json.JSONDecodeError):
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
        wanted = {self._product_of_sku[s] for s in sku_ids if s in self._product_of_sku}
        for product_id in sorted(wanted | {p for p in product_ids if p in self.products}):
            skus = [
                {
                    "id": entry["id"],
                    "total_available_quantity": sum(i["quantity"] for i in entry["inventory"]),
                    "warehouse_inventory": [
                        {
                            "warehouse_id": level["warehouse_id"],
                            "available_quantity": level["quantity"],
                            "committed_quantity": 0,
                        }
                        for level in entry["inventory"]
                    ],
                }
                for entry in self.products[product_id]["skus"]
                if product_id in product_ids or entry["id"] in sku_ids
            ]
            inventory.append({"product_id": product_id, "skus": skus})
        return web.json_response(
            {
                "code": 0,
                "message": "Success",
                "request_id": uuid.uuid4().hex,
                "data": {"inventory": inventory},
            }
        )

    async def product_search(self, request: web.Request) -> web.Response:
        """The catalogue in pages: `page_size` (1-100) is required, `page_token` continues;
        the body may filter by `status` and `seller_skus`. Deleted products are left out
        unless asked for. A product's summary has no barcodes (only its detail has)."""
        if (refusal := await self._authenticate(request)) is not None:
            return refusal
        try:
            page_size = int(request.query["page_size"])
            if not 1 <= page_size <= 100:
                raise ValueError(page_size)
            offset = _page_offset(request.query.get("page_token", ""))
            raw = await request.read()
            body: dict[str, Any] = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise TypeError("body")
            status = body.get("status")
            seller_skus = set(body.get("seller_skus") or ())
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return self._error(400, 36009003, "Invalid request parameters")

        def wanted(product: dict[str, Any]) -> bool:
            if (status is None and product["status"] == "DELETED") or (
                status is not None and product["status"] != status
            ):
                return False
            return not seller_skus or any(s["seller_sku"] in seller_skus for s in product["skus"])

        found = [p for _, p in sorted(self.products.items()) if wanted(p)]
        page = [
            {
                **{k: v for k, v in product.items() if k != "skus"},
                "skus": [
                    {k: v for k, v in entry.items() if k != "identifier_code"}
                    for entry in product["skus"]
                ],
            }
            for product in found[offset : offset + page_size]
        ]
        more = offset + page_size < len(found)
        return web.json_response(
            {
                "code": 0,
                "message": "Success",
                "request_id": uuid.uuid4().hex,
                "data": {
                    "products": copy.deepcopy(page),
                    "next_page_token": _page_token(offset + page_size) if more else "",
                    "total_count": len(found),
                },
            }
        )

    async def product_detail(self, request: web.Request) -> web.Response:
        if (refusal := await self._authenticate(request)) is not None:
            return refusal
        product = self.products.get(request.match_info["product_id"])
        if product is None:
            return self._error(
                200, PRODUCT_NOT_FOUND, f"Product {request.match_info['product_id']} does not exist"
            )
        return web.json_response(
            {
                "code": 0,
                "message": "Success",
                "request_id": uuid.uuid4().hex,
                "data": copy.deepcopy(product),
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
