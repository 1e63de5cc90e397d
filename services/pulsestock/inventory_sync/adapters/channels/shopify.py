"""Shopify Admin GraphQL: `inventorySetQuantities` (idempotent) and the inventory level query,
within the cost-based rate limit (leaky bucket read from each response's throttleStatus)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from pulsestock.inventory_sync.adapters.channels.base import (
    ChannelError,
    ChannelTarget,
    RateLimiter,
    failure_for_status,
    not_this_channel,
    transport_failure,
)
from pulsestock.inventory_sync.domain.catalogue import ShopifyIds
from pulsestock.v1.common_pb2 import Channel

API_VERSION = "2026-07"
MUTATION_COST = 10
QUERY_COST = 2

SET_QUANTITIES = """
mutation SetAvailable($input: InventorySetQuantitiesInput!)
  @idempotent(key: "%s") {
  inventorySetQuantities(input: $input) {
    inventoryAdjustmentGroup { createdAt reason changes { name delta } }
    userErrors { field message code }
  }
}
"""

INVENTORY_LEVEL = """
query Level($id: ID!, $locationId: ID!) {
  inventoryItem(id: $id) {
    id
    inventoryLevel(locationId: $locationId) { quantities(names: ["available"]) { name quantity } }
  }
}
"""


@dataclass(frozen=True)
class ShopifyConfig:
    base_url: str
    access_token: str = field(repr=False)
    location_id: str
    points_per_second: float = 100.0
    bucket_points: float = 2000.0
    timeout_s: float = 5.0


Failure = Callable[[aiohttp.ClientResponse, str], ChannelError]


async def graphql_call(
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    config: ShopifyConfig,
    query: str,
    variables: dict[str, Any],
    cost: int,
    failure: Failure = failure_for_status,
) -> dict[str, Any]:
    """One Admin GraphQL call within the store's cost bucket, following the bucket the
    answer reports: its `data`, or a ChannelError (THROTTLED is retryable after the time the
    bucket needs to hold `cost` again)."""
    await limiter.acquire(cost)
    try:
        async with session.post(
            f"{config.base_url}/admin/api/{API_VERSION}/graphql.json",
            json={"query": query, "variables": variables},
            headers={"X-Shopify-Access-Token": config.access_token},
        ) as response:
            text = await response.text()
            if response.status != 200:
                raise failure(response, text)
            payload: dict[str, Any] = json.loads(text)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise transport_failure(error) from error
    throttle = payload.get("extensions", {}).get("cost", {}).get("throttleStatus", {})
    errors = payload.get("errors")
    if errors:
        if isinstance(errors, list) and any(
            (e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors
        ):
            available = float(throttle.get("currentlyAvailable", 0))
            rate = float(throttle.get("restoreRate") or config.points_per_second) or 1.0
            wait = max(0.0, (cost - available) / rate)
            limiter.tokens = available  # follow the server's bucket
            raise ChannelError("Shopify THROTTLED", retryable=True, retry_after=wait)
        raise ChannelError(f"Shopify errors: {errors}", retryable=False)
    if "currentlyAvailable" in throttle:
        limiter.tokens = min(limiter.tokens, float(throttle["currentlyAvailable"]))
    data: dict[str, Any] = payload.get("data") or {}
    return data


class ShopifyClient:
    channel = Channel.CHANNEL_SHOPIFY

    def __init__(self, config: ShopifyConfig) -> None:
        self.config = config
        self.limiter = RateLimiter.under(config.points_per_second, config.bucket_points)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout_s))

    def inventory_level(self, target: ChannelTarget) -> tuple[str, str]:
        """(inventory item GID, location GID) the quantity is set on. Without a catalogue
        listing, a SKU's inventory item follows one convention (the fake's)."""
        if isinstance(target, str):
            return f"gid://shopify/InventoryItem/{target}", self.config.location_id
        if isinstance(target, ShopifyIds):
            return target.inventory_item_gid, target.location_gid
        raise not_this_channel(target, "Shopify")

    async def _graphql(self, query: str, variables: dict[str, Any], cost: int) -> dict[str, Any]:
        return await graphql_call(self.session, self.limiter, self.config, query, variables, cost)

    async def set_quantity(self, target: ChannelTarget, quantity: int) -> None:
        item, location = self.inventory_level(target)
        data = await self._graphql(
            SET_QUANTITIES % uuid.uuid4(),
            {
                "input": {
                    "name": "available",
                    "reason": "correction",
                    "referenceDocumentUri": f"pulsestock://inventory-sync/{quote(str(target))}",
                    "quantities": [
                        {
                            "inventoryItemId": item,
                            "locationId": location,
                            "quantity": quantity,
                            # The ledger is the truth: set the absolute quantity, no CAS.
                            "changeFromQuantity": None,
                        }
                    ],
                }
            },
            MUTATION_COST,
        )
        result = data.get("inventorySetQuantities") or {}
        if result.get("userErrors"):
            raise ChannelError(f"Shopify userErrors: {result['userErrors']}", retryable=False)

    async def get_quantity(self, target: ChannelTarget) -> int | None:
        item_id, location = self.inventory_level(target)
        data = await self._graphql(
            INVENTORY_LEVEL, {"id": item_id, "locationId": location}, QUERY_COST
        )
        item = data.get("inventoryItem")
        if not item or not item.get("inventoryLevel"):
            return None
        for quantity in item["inventoryLevel"]["quantities"]:
            if quantity["name"] == "available":
                return int(quantity["quantity"])
        return None

    async def close(self) -> None:
        await self.session.close()
