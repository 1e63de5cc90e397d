"""Amazon SP-API Listings Items (2021-08-01) `patchListingsItem` with
`fulfillment_availability`, `getListingsItem`, `searchListingsItems` (the seller's listings in
one marketplace, pages of up to 20, at most 1,000 results paged through per search), Orders v0
`getOrders` (LastUpdatedAfter, MaxResultsPerPage, NextToken) and `getOrderItems`, each within
its own usage plan, and the Login with Amazon token endpoint.

Two kinds of listing live here. Catalogue listings (`add_listing`) have free-text seller SKUs,
ASINs and titles, may be listed in several marketplaces, and keep a quantity per marketplace.
Any other seller SKU is our SKU itself (the naming convention), in the fake's marketplace.
Listings Items identifiers carry only the ASIN: a barcode shows only in the listing's
`attributes` (`externally_assigned_product_identifier`), when the seller gave one."""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pulsestock.fakes.base import FakeChannel, RecordedRequest, TokenBucket

LISTINGS_PATH = "/listings/2021-08-01/items/{seller_id}/{sku}"
TOKEN_PATH = "/auth/o2/token"
ORDERS_PATH = "/orders/v0/orders"
ORDER_ITEMS_PATH = "/orders/v0/orders/{order_id}/orderItems"
SEARCH_PATH = "/listings/2021-08-01/items/{seller_id}"
SEARCH_MAX_PAGE_SIZE = 20
SEARCH_MAX_RESULTS = 1000  # "the maximum number of items that can be paged through"
SEARCH_DATASETS = {
    "summaries",
    "attributes",
    "issues",
    "offers",
    "fulfillmentAvailability",
    "procurement",
    "relationships",
    "productTypes",
}


@dataclass
class ListingOffer:
    """A catalogue listing in one marketplace."""

    asin: str
    item_name: str
    barcode: str
    status: tuple[str, ...]
    product_type: str
    created: str
    updated: str
    quantity: int | None = None


def amazon_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeAmazon(FakeChannel):
    name = "amazon"

    def __init__(
        self,
        client_id: str = "amzn1.application-oa2-client.fake",
        client_secret: str = "fake-lwa-secret",
        refresh_token: str = "Atzr|fake-refresh",
        seller_id: str = "A1FAKESELLER",
        marketplace_id: str = "ATVPDKIKX0DER",
        rate_per_second: float = 5.0,
        burst: float = 5.0,
        token_lifetime_s: int = 3600,
        # Orders v0 usage plans: getOrders 0.0167/s burst 20; getOrderItems 0.5/s burst 30.
        orders_rate: float = 0.0167,
        orders_burst: float = 20.0,
        items_rate: float = 0.5,
        items_burst: float = 30.0,
        search_rate: float = 5.0,
        search_burst: float = 5.0,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret, self.refresh_token = (
            client_id,
            client_secret,
            refresh_token,
        )
        self.seller_id, self.marketplace_id = seller_id, marketplace_id
        self.limit = TokenBucket(rate_per_second, burst)
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self.quantities: dict[str, int] = {}  # by seller SKU
        self.orders_limit = TokenBucket(orders_rate, orders_burst)
        self.items_limit = TokenBucket(items_rate, items_burst)
        self.orders: dict[str, dict[str, Any]] = {}  # AmazonOrderId -> getOrders' Order
        self.order_items: dict[str, list[dict[str, Any]]] = {}  # -> getOrderItems' items
        # The catalogue: seller SKU -> marketplace id -> the listing there.
        self.listings: dict[str, dict[str, ListingOffer]] = {}
        self.marketplace_ids = {marketplace_id}
        # searchListingsItems' own usage plan: 5 requests/s, burst 5.
        self.search_limit = TokenBucket(search_rate, search_burst)
        self._asins = 0

    def add_listing(
        self,
        seller_sku: str,
        item_name: str,
        *,
        marketplace_id: str | None = None,
        asin: str | None = None,
        barcode: str = "",
        status: tuple[str, ...] = ("BUYABLE", "DISCOVERABLE"),
        product_type: str = "PRODUCT",
        quantity: int | None = None,
        created: str | None = None,
    ) -> str:
        """A listing of the seller's catalogue (free-text seller SKU) in a marketplace
        (default: the fake's); returns its ASIN."""
        marketplace = marketplace_id or self.marketplace_id
        self.marketplace_ids.add(marketplace)
        if asin is None:
            self._asins += 1
            asin = f"B0{self._asins:08d}"
        now = created or amazon_now()
        self.listings.setdefault(seller_sku, {})[marketplace] = ListingOffer(
            asin, item_name, barcode, status, product_type, now, now, quantity
        )
        return asin

    def quantity_of_listing(self, seller_sku: str, marketplace_id: str) -> int | None:
        """A catalogue listing's DEFAULT (merchant-fulfilled) quantity in a marketplace."""
        offer = self.listings.get(seller_sku, {}).get(marketplace_id)
        return offer.quantity if offer else None

    def add_order(
        self,
        order_id: str,
        items: list[tuple[str, int]],
        status: str = "Pending",
        at: str | None = None,
    ) -> None:
        """An order of (seller SKU, quantity) items, as getOrders and getOrderItems show it."""
        now = at or amazon_now()
        self.orders[order_id] = {
            "AmazonOrderId": order_id,
            "PurchaseDate": now,
            "LastUpdateDate": now,
            "OrderStatus": status,
            "FulfillmentChannel": "MFN",
            "MarketplaceId": self.marketplace_id,
            "OrderType": "StandardOrder",
        }
        self.order_items[order_id] = [
            {
                "ASIN": f"B0{sku[:8].upper():0>8}",
                "SellerSKU": sku,
                "OrderItemId": f"{order_id}-{index}",
                "QuantityOrdered": quantity,
                "QuantityShipped": 0,
            }
            for index, (sku, quantity) in enumerate(items)
        ]

    def update_order(
        self,
        order_id: str,
        status: str,
        shipped: dict[str, int] | None = None,
        buyer_requested_cancel: bool | None = None,
        at: str | None = None,
    ) -> None:
        order = self.orders[order_id]
        order["OrderStatus"] = status
        order["LastUpdateDate"] = at or amazon_now()
        for item in self.order_items[order_id]:
            if shipped and item["SellerSKU"] in shipped:
                item["QuantityShipped"] = shipped[item["SellerSKU"]]
            if buyer_requested_cancel is not None:
                item["BuyerRequestedCancel"] = {
                    "IsBuyerRequestedCancel": "true" if buyer_requested_cancel else "false",
                    "BuyerCancelReason": "Customer request" if buyer_requested_cancel else "",
                }

    def quantity_of(self, sku: str) -> int | None:
        return self.quantities.get(sku)

    def set_quantity_outside(self, sku: str, quantity: int) -> None:
        self.quantities[sku] = quantity

    def is_write(self, request: RecordedRequest) -> bool:
        return request.method == "PATCH"

    def routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_patch(LISTINGS_PATH, self.patch)
        app.router.add_get(LISTINGS_PATH, self.get)
        app.router.add_get(SEARCH_PATH, self.search)
        app.router.add_get(ORDERS_PATH, self.get_orders)
        app.router.add_get(ORDER_ITEMS_PATH, self.get_order_items)

    async def get_orders(self, request: web.Request) -> web.Response:
        return await _get_orders(self, request)

    async def get_order_items(self, request: web.Request) -> web.Response:
        return await _get_order_items(self, request)

    def throttled(self, retry_after: float) -> web.Response:
        return _errors(429, "QuotaExceeded", "You exceeded your quota for the requested resource.")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("refresh_token") != self.refresh_token
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "The request has an invalid grant parameter",
                },
                status=400,
            )
        access_token = f"Atza|{secrets.token_urlsafe(24)}"
        self.tokens[access_token] = time.monotonic() + self.token_lifetime_s
        return web.json_response(
            {
                "access_token": access_token,
                "refresh_token": self.refresh_token,
                "token_type": "bearer",
                "expires_in": self.token_lifetime_s,
            }
        )

    def _refuse(
        self, request: web.Request, limit: TokenBucket | None = None
    ) -> web.Response | None:
        token = request.headers.get("x-amz-access-token", "")
        if self.tokens.get(token, 0.0) < time.monotonic():
            return _errors(403, "Unauthorized", "Access to requested resource is denied.")
        if request.match_info["seller_id"] != self.seller_id:
            return _errors(403, "Unauthorized", "Access to requested resource is denied.")
        if request.query.get("marketplaceIds") not in self.marketplace_ids:
            return _errors(400, "InvalidInput", "marketplaceIds is required")
        if not (limit or self.limit).take():
            return _errors(
                429, "QuotaExceeded", "You exceeded your quota for the requested resource."
            )
        return None

    async def patch(self, request: web.Request) -> web.Response:
        if (refusal := self._refuse(request)) is not None:
            return refusal
        sku = request.match_info["sku"]
        try:
            body = json.loads(await request.read())
            quantity = None
            for patch in body["patches"]:
                if patch["op"] not in ("add", "replace", "merge", "delete"):
                    raise ValueError(patch["op"])
                if patch["path"] == "/attributes/fulfillment_availability":
                    for offer in patch["value"]:
                        if offer["fulfillment_channel_code"] == "DEFAULT":
                            quantity = int(offer["quantity"])
            _ = body["productType"]
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return _errors(400, "InvalidInput", "Request body is invalid")
        submission = uuid.uuid4().hex
        if quantity is None or quantity < 0:
            return web.json_response(
                {
                    "sku": sku,
                    "status": "INVALID",
                    "submissionId": submission,
                    "issues": [
                        {"code": "90220", "message": "quantity is required", "severity": "ERROR"}
                    ],
                }
            )
        offer = self._offer(request)
        if offer is not None:
            offer.quantity = quantity
            offer.updated = amazon_now()
        elif sku in self.listings or request.query["marketplaceIds"] != self.marketplace_id:
            return _errors(404, "NotFound", f"SKU {sku} not found in this marketplace")
        else:
            self.quantities[sku] = quantity
        return web.json_response(
            {"sku": sku, "status": "ACCEPTED", "submissionId": submission, "issues": []}
        )

    def _offer(self, request: web.Request) -> ListingOffer | None:
        marketplaces = self.listings.get(request.match_info["sku"], {})
        return marketplaces.get(request.query.get("marketplaceIds", ""))

    async def get(self, request: web.Request) -> web.Response:
        if (refusal := self._refuse(request)) is not None:
            return refusal
        sku = request.match_info["sku"]
        included = request.query.get("includedData", "summaries").split(",")
        offer = self._offer(request)
        if offer is not None:
            return web.json_response(_item(sku, request.query["marketplaceIds"], offer, included))
        if (
            sku in self.listings
            or sku not in self.quantities
            or request.query["marketplaceIds"] != self.marketplace_id
        ):
            return _errors(404, "NotFound", f"SKU {sku} not found")
        body: dict[str, Any] = {"sku": sku}
        if "fulfillmentAvailability" in included:
            body["fulfillmentAvailability"] = [
                {"fulfillmentChannelCode": "DEFAULT", "quantity": self.quantities[sku]}
            ]
        return web.json_response(body)

    async def search(self, request: web.Request) -> web.Response:
        """searchListingsItems over the catalogue listings of one marketplace: `pageSize`
        (1-20, default 10), `pageToken`, `includedData` (default summaries), `sortBy`
        (lastUpdatedDate default, or createdDate), `sortOrder` (DESC default), `createdAfter`.
        `numberOfResults` counts every match; only the first 1,000 can be paged through."""
        if (refusal := self._refuse(request, self.search_limit)) is not None:
            return refusal
        query = request.query
        marketplace = query["marketplaceIds"]
        try:
            if "pageToken" in query:
                cursor = json.loads(base64.b64decode(query["pageToken"]))
                if not isinstance(cursor, dict):
                    raise ValueError("pageToken")
            else:
                included = query.get("includedData", "summaries").split(",")
                if not set(included) <= SEARCH_DATASETS:
                    raise ValueError("includedData")
                size = int(query.get("pageSize", "10"))
                if not 1 <= size <= SEARCH_MAX_PAGE_SIZE:
                    raise ValueError("pageSize")
                sort_by = query.get("sortBy", "lastUpdatedDate")
                if sort_by not in ("lastUpdatedDate", "createdDate"):
                    raise ValueError("sortBy")
                if query.get("sortOrder", "DESC") not in ("ASC", "DESC"):
                    raise ValueError("sortOrder")
                created_after = query.get("createdAfter")
                if created_after:
                    _amazon_time(created_after)
                cursor = {
                    "included": included,
                    "size": size,
                    "sortBy": sort_by,
                    "desc": query.get("sortOrder", "DESC") == "DESC",
                    "createdAfter": created_after,
                    "offset": 0,
                }
            size, offset = int(cursor["size"]), int(cursor["offset"])
            since = _amazon_time(cursor["createdAfter"]) if cursor["createdAfter"] else None
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return _errors(400, "InvalidInput", "Invalid input")
        attribute = "created" if cursor["sortBy"] == "createdDate" else "updated"
        found = sorted(
            (
                (sku, offers[marketplace])
                for sku, offers in self.listings.items()
                if marketplace in offers
                and (since is None or _amazon_time(offers[marketplace].created) >= since)
            ),
            key=lambda found: (getattr(found[1], attribute), found[0]),
            reverse=bool(cursor["desc"]),
        )
        reachable = found[:SEARCH_MAX_RESULTS]
        body: dict[str, Any] = {
            "numberOfResults": len(found),
            "items": [
                _item(sku, marketplace, offer, cursor["included"])
                for sku, offer in reachable[offset : offset + size]
            ],
        }
        pagination = {}
        if offset + size < len(reachable):
            pagination["nextToken"] = _orders_cursor({**cursor, "offset": offset + size})
        if offset > 0:
            pagination["previousToken"] = _orders_cursor(
                {**cursor, "offset": max(0, offset - size)}
            )
        if pagination:
            body["pagination"] = pagination
        return web.json_response(
            body, headers={"x-amzn-RateLimit-Limit": f"{self.search_limit.rate:g}"}
        )


def _item(sku: str, marketplace: str, offer: ListingOffer, included: list[str]) -> dict[str, Any]:
    """A listings item as getListingsItem and searchListingsItems show it."""
    item: dict[str, Any] = {"sku": sku}
    if "summaries" in included:
        item["summaries"] = [
            {
                "marketplaceId": marketplace,
                "asin": offer.asin,
                "productType": offer.product_type,
                "conditionType": "new_new",
                "status": list(offer.status),
                "itemName": offer.item_name,
                "createdDate": offer.created,
                "lastUpdatedDate": offer.updated,
            }
        ]
    if "attributes" in included:
        attributes: dict[str, Any] = {
            "item_name": [
                {"value": offer.item_name, "language_tag": "en_US", "marketplace_id": marketplace}
            ]
        }
        if offer.barcode:
            kind = {12: "upc", 13: "ean"}.get(len(offer.barcode), "gtin")
            attributes["externally_assigned_product_identifier"] = [
                {"type": kind, "value": offer.barcode, "marketplace_id": marketplace}
            ]
        item["attributes"] = attributes
    if "fulfillmentAvailability" in included:
        item["fulfillmentAvailability"] = (
            [{"fulfillmentChannelCode": "DEFAULT", "quantity": offer.quantity}]
            if offer.quantity is not None
            else []
        )
    if "issues" in included:
        item["issues"] = []
    return item


def _orders_cursor(value: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _amazon_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no zone")
    return moment


def _errors(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status)


def _order_refusal(
    fake: FakeAmazon, request: web.Request, limit: TokenBucket
) -> web.Response | None:
    token = request.headers.get("x-amz-access-token", "")
    if fake.tokens.get(token, 0.0) < time.monotonic():
        return _errors(403, "Unauthorized", "Access to requested resource is denied.")
    if not limit.take():
        return _errors(429, "QuotaExceeded", "You exceeded your quota for the requested resource.")
    return None


async def _get_orders(fake: FakeAmazon, request: web.Request) -> web.Response:
    if (refusal := _order_refusal(fake, request, fake.orders_limit)) is not None:
        return refusal
    query = request.query
    if fake.marketplace_id not in query.get("MarketplaceIds", "").split(","):
        return _errors(400, "InvalidInput", "MarketplaceIds is required")
    try:
        if "NextToken" in query:
            cursor = json.loads(base64.b64decode(query["NextToken"]))
            if not isinstance(cursor, dict):
                raise ValueError("NextToken")
        else:
            if "LastUpdatedAfter" not in query and "CreatedAfter" not in query:
                return _errors(
                    400, "InvalidInput", "Either CreatedAfter or LastUpdatedAfter must be given"
                )
            size = int(query.get("MaxResultsPerPage", "100"))
            if not 1 <= size <= 100:
                raise ValueError("MaxResultsPerPage")
            cursor = {
                "LastUpdatedAfter": query.get("LastUpdatedAfter"),
                "CreatedAfter": query.get("CreatedAfter"),
                "size": size,
                "offset": 0,
            }
        updated_after = (
            _amazon_time(cursor["LastUpdatedAfter"]) if cursor["LastUpdatedAfter"] else None
        )
        created_after = _amazon_time(cursor["CreatedAfter"]) if cursor["CreatedAfter"] else None
        size, offset = int(cursor["size"]), int(cursor["offset"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return _errors(400, "InvalidInput", "Invalid input")
    found = sorted(
        (
            order
            for order in fake.orders.values()
            if (updated_after is None or _amazon_time(order["LastUpdateDate"]) >= updated_after)
            and (created_after is None or _amazon_time(order["PurchaseDate"]) >= created_after)
        ),
        key=lambda order: (order["LastUpdateDate"], order["AmazonOrderId"]),
    )
    payload: dict[str, Any] = {"Orders": copy.deepcopy(found[offset : offset + size])}
    if offset + size < len(found):
        payload["NextToken"] = _orders_cursor({**cursor, "offset": offset + size})
    else:
        payload["LastUpdatedBefore"] = amazon_now()
    return web.json_response({"payload": payload})


async def _get_order_items(fake: FakeAmazon, request: web.Request) -> web.Response:
    if (refusal := _order_refusal(fake, request, fake.items_limit)) is not None:
        return refusal
    order_id = request.match_info["order_id"]
    if order_id not in fake.order_items:
        return _errors(404, "NotFound", f"Order {order_id} not found")
    return web.json_response(
        {
            "payload": {
                "AmazonOrderId": order_id,
                "OrderItems": copy.deepcopy(fake.order_items[order_id]),
            }
        }
    )
