"""Shopify Admin GraphQL API: `inventorySetQuantities` (idempotent, compare-and-set) and the
inventory level query, with the access-token header and cost-based throttling."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pulsestock.fakes.base import FakeChannel, RecordedRequest, TokenBucket

API_VERSION = "2026-07"
GRAPHQL_PATH = f"/admin/api/{API_VERSION}/graphql.json"
MUTATION_COST = 10
QUERY_COST = 2
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
    ) -> None:
        super().__init__()
        self.access_token = access_token
        self.location_id = location_id
        self.bucket = TokenBucket(restore_rate, maximum_available)
        self.available: dict[str, int] = {}  # by inventory item gid
        self._idempotent: dict[str, dict[str, Any]] = {}

    def quantity_of(self, sku: str) -> int | None:
        return self.available.get(inventory_item_gid(sku))

    def set_quantity_outside(self, sku: str, quantity: int) -> None:
        self.available[inventory_item_gid(sku)] = quantity

    def is_write(self, request: RecordedRequest) -> bool:
        return b"inventorySetQuantities" in request.body

    def routes(self, app: web.Application) -> None:
        app.router.add_post(GRAPHQL_PATH, self.graphql)

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
