"""Shopify Admin GraphQL API: `inventorySetQuantities` (idempotent, compare-and-set), the
inventory level query and the `productVariants` connection (the shop's catalogue, in cursor
pages of up to 250), with the access-token header and cost-based throttling; and the REST
Order list (`GET /admin/api/{version}/orders.json`, cursor pages in the `Link` header, the
REST leaky bucket of 40 requests leaking 2/s, 429 with `Retry-After` when it is full).

Two kinds of inventory item live here. Catalogue variants (`add_product`) have numeric ids
like a real store's and are stocked at one or more locations; quantities are set and read per
(inventory item, location). Any other inventory item GID follows the naming convention
`gid://shopify/InventoryItem/<sku>` at the fake's one location."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pulsestock.fakes.base import FakeChannel, RecordedRequest, TokenBucket

API_VERSION = "2026-07"
GRAPHQL_PATH = f"/admin/api/{API_VERSION}/graphql.json"
MUTATION_COST = 10
QUERY_COST = 2
ORDERS_PATH = "/admin/api/{version}/orders.json"
_IDEMPOTENCY_KEY = re.compile(r'@idempotent\(\s*key:\s*"([^"]+)"\s*\)')
# The calculated cost of a productVariants page: 2 for the connection plus, per variant
# requested, 1 for the variant and 1 each for its `product` and `inventoryItem` objects
# (scalars cost 0). Shopify refuses a query whose requested cost exceeds 1,000 points.
VARIANT_NODE_COST = 3
MAX_QUERY_COST = 1000
MAX_PAGE_SIZE = 250


def inventory_item_gid(sku: str) -> str:
    return f"gid://shopify/InventoryItem/{sku}"


def variant_page_cost(variants: int) -> int:
    return 2 + VARIANT_NODE_COST * variants


def _gid(resource: str, value: str) -> str:
    return value if value.startswith("gid://") else f"gid://shopify/{resource}/{value}"


@dataclass(frozen=True)
class ShopVariant:
    """A variant of a catalogue product: its SKU and barcode as the seller typed them (either
    may be empty), its title, and the quantity at each of its locations (default: the fake's
    location, 0)."""

    sku: str
    barcode: str = ""
    title: str = "Default Title"
    quantities: tuple[tuple[str, int], ...] = ()  # (location id or GID, quantity)


@dataclass(frozen=True)
class AddedVariant:
    """The numeric ids Shopify gave a catalogue variant."""

    product_id: str
    variant_id: str
    inventory_item_id: str


class FakeShopify(FakeChannel):
    name = "shopify"

    def __init__(
        self,
        access_token: str = "shpat_fake",
        location_id: str = "gid://shopify/Location/1",
        maximum_available: float = 2000.0,
        restore_rate: float = 100.0,
        rest_bucket: float = 40.0,
        rest_leak_per_second: float = 2.0,
    ) -> None:
        super().__init__()
        self.access_token = access_token
        self.location_id = location_id
        self.bucket = TokenBucket(restore_rate, maximum_available)
        self.available: dict[str, int] = {}  # by inventory item gid
        self._idempotent: dict[str, dict[str, Any]] = {}
        self.rest_bucket = TokenBucket(rest_leak_per_second, rest_bucket)
        self.orders: dict[int, dict[str, Any]] = {}  # order id -> the REST Order resource
        # The catalogue: variant id -> the ProductVariant node, and the available quantity of
        # each catalogue inventory item at each location it is stocked at (GIDs).
        self.variants: dict[int, dict[str, Any]] = {}
        self.levels: dict[tuple[str, str], int] = {}
        self._next_id = 0

    def add_product(self, title: str, variants: Sequence[str | ShopVariant]) -> list[AddedVariant]:
        """A product of the store's catalogue with Shopify-like numeric ids; returns them."""
        self._next_id += 1
        product_id = str(8_412_000_000_000 + self._next_id)
        added = []
        for given in variants:
            variant = ShopVariant(given) if isinstance(given, str) else given
            self._next_id += 1
            variant_id = str(44_120_000_000_000 + self._next_id)
            item_id = str(46_230_000_000_000 + self._next_id)
            self.variants[int(variant_id)] = {
                "id": f"gid://shopify/ProductVariant/{variant_id}",
                "sku": variant.sku or None,
                "barcode": variant.barcode or None,
                "title": variant.title,
                "displayName": f"{title} - {variant.title}",
                "product": {"id": f"gid://shopify/Product/{product_id}", "title": title},
                "inventoryItem": {"id": f"gid://shopify/InventoryItem/{item_id}"},
            }
            for location, quantity in variant.quantities or ((self.location_id, 0),):
                self.levels[(_gid("InventoryItem", item_id), _gid("Location", location))] = quantity
            added.append(AddedVariant(product_id, variant_id, item_id))
        return added

    def quantity_of_listing(self, inventory_item_id: str, location_id: str) -> int | None:
        """A catalogue inventory item's available quantity at a location (numeric ids or
        GIDs); None when it is not stocked there."""
        return self.levels.get(
            (_gid("InventoryItem", inventory_item_id), _gid("Location", location_id))
        )

    def _stocked_at(self, item_gid: str) -> set[str] | None:
        """The locations of a catalogue inventory item; None for a convention item."""
        locations = {location for item, location in self.levels if item == item_gid}
        return locations or None

    def put_order(self, order: dict[str, Any]) -> None:
        """The order as Shopify now holds it (the same Order resource its webhooks carry);
        `updated_at` defaults to now."""
        stored = copy.deepcopy(order)
        stored.setdefault("updated_at", datetime.now(UTC).isoformat())
        self.orders[int(stored["id"])] = stored

    def quantity_of(self, sku: str) -> int | None:
        return self.available.get(inventory_item_gid(sku))

    def set_quantity_outside(self, sku: str, quantity: int) -> None:
        self.available[inventory_item_gid(sku)] = quantity

    def is_write(self, request: RecordedRequest) -> bool:
        return b"inventorySetQuantities" in request.body

    def routes(self, app: web.Application) -> None:
        app.router.add_post(GRAPHQL_PATH, self.graphql)
        app.router.add_get(ORDERS_PATH, self.list_orders)

    async def list_orders(self, request: web.Request) -> web.Response:
        return await _list_orders(self, request)

    def _cost(self, requested: int) -> dict[str, Any]:
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": requested,
            "throttleStatus": {
                "maximumAvailable": self.bucket.capacity,
                "currentlyAvailable": int(self.bucket.tokens),
                "restoreRate": self.bucket.rate,
            },
        }

    def throttled(self, retry_after: float) -> web.Response:
        # Shopify GraphQL throttles with HTTP 200 and a THROTTLED error, not with 429.
        self.bucket.tokens = 0
        return self._throttled_response(MUTATION_COST)

    def _throttled_response(self, cost: int) -> web.Response:
        return web.json_response(
            {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {
                            "code": "THROTTLED",
                            "documentation": "https://shopify.dev/api/usage/rate-limits",
                        },
                    }
                ],
                "extensions": {"cost": self._cost(cost)},
            }
        )

    async def graphql(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Shopify-Access-Token") != self.access_token:
            return web.json_response(
                {
                    "errors": "[API] Invalid API key or access token"
                    " (unrecognized login or wrong password)"
                },
                status=401,
            )
        try:
            body = json.loads(await request.read())
            query: str = body["query"]
            variables: dict[str, Any] = body.get("variables") or {}
        except (KeyError, TypeError, json.JSONDecodeError):
            return web.json_response({"errors": [{"message": "Bad Request"}]}, status=400)
        is_mutation = "inventorySetQuantities" in query
        if "productVariants" in query:
            return self._product_variants(variables)
        cost = MUTATION_COST if is_mutation else QUERY_COST
        if not self.bucket.take(cost):
            return self._throttled_response(cost)
        if is_mutation:
            data = self._set_quantities(query, variables)
        elif "inventoryItem" in query:
            data = self._inventory_level(variables)
        else:
            return web.json_response(
                {"errors": [{"message": "unsupported operation in fake"}]}, status=400
            )
        return web.json_response({"data": data, "extensions": {"cost": self._cost(cost)}})

    def _product_variants(self, variables: dict[str, Any]) -> web.Response:
        """`productVariants(first: $first, after: $after)` in variant id order. Charged the
        requested cost up front, refunded down to the actual cost (what the page returned)."""
        try:
            first = int(variables["first"])
            after = variables.get("after")
            position = int(_uncursor(after)["after"]) if after else 0
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return web.json_response(
                {"errors": [{"message": "you must provide one of first or last"}]}
            )
        if not 0 < first <= MAX_PAGE_SIZE:
            return web.json_response({"errors": [{"message": f"first must be 1-{MAX_PAGE_SIZE}"}]})
        requested = variant_page_cost(first)
        if requested > MAX_QUERY_COST:
            return web.json_response(
                {
                    "errors": [
                        {
                            "message": f"Query cost is {requested}, which exceeds the single"
                            f" query max cost limit ({MAX_QUERY_COST}).",
                            "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested},
                        }
                    ]
                }
            )
        if not self.bucket.take(requested):
            return self._throttled_response(requested)
        following = [v for k, v in sorted(self.variants.items()) if k > position]
        page = copy.deepcopy(following[:first])
        actual = variant_page_cost(len(page))
        self.bucket.tokens = min(self.bucket.capacity, self.bucket.tokens + requested - actual)
        cursors = [_cursor({"after": int(node["id"].rsplit("/", 1)[1])}) for node in page]
        connection = {
            "nodes": page,
            "edges": [
                {"cursor": cursor, "node": node} for cursor, node in zip(cursors, page, strict=True)
            ],
            "pageInfo": {
                "hasNextPage": len(following) > first,
                "hasPreviousPage": position > 0,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }
        cost = {**self._cost(requested), "actualQueryCost": actual}
        return web.json_response(
            {"data": {"productVariants": connection}, "extensions": {"cost": cost}}
        )

    def _set_quantities(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        match = _IDEMPOTENCY_KEY.search(query)
        if match is None:
            return _user_errors("IDEMPOTENCY_KEY_MISSING", "@idempotent(key:) is required")
        key = match.group(1)
        if key in self._idempotent:
            return self._idempotent[key]
        payload = variables.get("input") or {}
        if payload.get("name") != "available":
            return _user_errors("INVALID_NAME", "only the available quantity can be set")
        changes = []
        for index, item in enumerate(payload.get("quantities") or []):
            gid, location = item.get("inventoryItemId"), item.get("locationId")
            stocked = self._stocked_at(str(gid))
            if stocked is None and location != self.location_id:
                return _user_errors(
                    "INVALID_LOCATION", "location not found", ["input", "quantities", str(index)]
                )
            if stocked is not None and location not in stocked:
                return _user_errors(
                    "ITEM_NOT_STOCKED_AT_LOCATION",
                    "The inventory item is not stocked at the location.",
                    ["input", "quantities", str(index)],
                )
            if "changeFromQuantity" not in item:
                return _user_errors(
                    "CHANGE_FROM_QUANTITY_REQUIRED",
                    "changeFromQuantity is required (null skips the check)",
                    ["input", "quantities", str(index)],
                )
            level = (str(gid), str(location))
            current = self.levels[level] if stocked else self.available.get(gid, 0)
            expected = item["changeFromQuantity"]
            if expected is not None and expected != current:
                return _user_errors(
                    "CHANGE_FROM_QUANTITY_STALE",
                    f"The quantity changed: it is {current}, not {expected}",
                    ["input", "quantities", str(index)],
                )
            quantity = int(item["quantity"])
            changes.append(
                {"name": "available", "delta": quantity - current, "quantityAfterChange": None}
            )
            if stocked:
                self.levels[level] = quantity
            else:
                self.available[gid] = quantity
        result = {
            "inventorySetQuantities": {
                "inventoryAdjustmentGroup": {
                    "createdAt": datetime.now(UTC).isoformat(),
                    "reason": payload.get("reason", "correction"),
                    "referenceDocumentUri": payload.get("referenceDocumentUri"),
                    "changes": changes,
                },
                "userErrors": [],
            }
        }
        self._idempotent[key] = result
        return result

    def _inventory_level(self, variables: dict[str, Any]) -> dict[str, Any]:
        gid, location = str(variables.get("id")), str(variables.get("locationId"))
        if self._stocked_at(gid) is not None:
            quantity = self.levels.get((gid, location))
            if quantity is None:  # the item exists, but has no level at this location
                return {"inventoryItem": {"id": gid, "inventoryLevel": None}}
        elif gid not in self.available or location != self.location_id:
            return {"inventoryItem": None}
        else:
            quantity = self.available[gid]
        return {
            "inventoryItem": {
                "id": gid,
                "inventoryLevel": {"quantities": [{"name": "available", "quantity": quantity}]},
            }
        }


def _user_errors(code: str, message: str, field: list[str] | None = None) -> dict[str, Any]:
    return {
        "inventorySetQuantities": {
            "inventoryAdjustmentGroup": None,
            "userErrors": [{"field": field or ["input"], "message": message, "code": code}],
        }
    }


def _rest_error(status: int, errors: object, **headers: str) -> web.Response:
    return web.json_response({"errors": errors}, status=status, headers=headers)


def _cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _uncursor(token: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    if not isinstance(value, dict):
        raise ValueError("page_info")
    return value


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no offset")
    return moment


def _status_matches(order: dict[str, Any], status: str) -> bool:
    cancelled = bool(order.get("cancelled_at"))
    closed = bool(order.get("closed_at"))
    return {
        "any": True,
        "open": not cancelled and not closed,
        "closed": closed,
        "cancelled": cancelled,
    }[status]


async def _list_orders(fake: FakeShopify, request: web.Request) -> web.Response:
    if request.headers.get("X-Shopify-Access-Token") != fake.access_token:
        return _rest_error(401, "[API] Invalid API key or access token")
    if not fake.rest_bucket.take():
        wait = fake.rest_bucket.seconds_until(1)
        return _rest_error(
            429,
            "Exceeded 2 calls per second for api client. Reduce request rates to resume"
            " uninterrupted service.",
            # Rounded up: a client that waits as long as it is told finds room.
            **{"Retry-After": f"{max(0.1, math.ceil(wait * 10) / 10):.1f}"},
        )
    query = request.query
    try:
        limit = int(query.get("limit", "50"))
        if not 1 <= limit <= 250:
            raise ValueError("limit")
        if "page_info" in query:
            # With a cursor only `limit` (and `fields`) may be given: it carries the filters.
            if set(query) - {"page_info", "limit", "fields"}:
                return _rest_error(400, {"page_info": ["Invalid value."]})
            cursor = _uncursor(query["page_info"])
        else:
            status = query.get("status", "open")
            if status not in ("any", "open", "closed", "cancelled"):
                raise ValueError("status")
            cursor = {
                "status": status,
                "updated_at_min": query.get("updated_at_min"),
                "after": None,
            }
        since = _moment(cursor["updated_at_min"]) if cursor["updated_at_min"] else None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return _rest_error(400, {"base": ["Invalid parameters."]})
    # Ordered by id (the cursor's position), as Shopify's cursors page.
    found = [
        order
        for order_id, order in sorted(fake.orders.items())
        if (cursor["after"] is None or order_id > cursor["after"])
        and _status_matches(order, cursor["status"])
        and (since is None or _moment(str(order["updated_at"])) >= since)
    ]
    page = found[:limit]
    headers = {
        "X-Shopify-Shop-Api-Call-Limit": (
            f"{int(fake.rest_bucket.capacity - fake.rest_bucket.tokens)}"
            f"/{int(fake.rest_bucket.capacity)}"
        )
    }
    links = []
    base = f"{fake.url}{request.path}?limit={limit}&page_info="
    if cursor["after"] is not None:  # (the fake's "previous" is the first page)
        links.append(f'<{base}{_cursor({**cursor, "after": None})}>; rel="previous"')
    if len(found) > limit:
        links.append(f'<{base}{_cursor({**cursor, "after": int(page[-1]["id"])})}>; rel="next"')
    if links:
        headers["Link"] = ", ".join(links)
    return web.json_response({"orders": page}, headers=headers)
