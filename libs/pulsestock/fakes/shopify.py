"""Shopify Admin GraphQL API: `inventorySetQuantities` (idempotent, compare-and-set) and the
inventory level query, with the access-token header and cost-based throttling; and the REST
Order list (`GET /admin/api/{version}/orders.json`, cursor pages in the `Link` header, the
REST leaky bucket of 40 requests leaking 2/s, 429 with `Retry-After` when it is full)."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
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


def inventory_item_gid(sku: str) -> str:
    return f"gid://shopify/InventoryItem/{sku}"


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
            if location != self.location_id:
                return _user_errors(
                    "INVALID_LOCATION", "location not found", ["input", "quantities", str(index)]
                )
            if "changeFromQuantity" not in item:
                return _user_errors(
                    "CHANGE_FROM_QUANTITY_REQUIRED",
                    "changeFromQuantity is required (null skips the check)",
                    ["input", "quantities", str(index)],
                )
            current = self.available.get(gid, 0)
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
        gid = variables.get("id")
        if gid not in self.available or variables.get("locationId") != self.location_id:
            return {"inventoryItem": None}
        return {
            "inventoryItem": {
                "id": gid,
                "inventoryLevel": {
                    "quantities": [{"name": "available", "quantity": self.available[gid]}]
                },
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
