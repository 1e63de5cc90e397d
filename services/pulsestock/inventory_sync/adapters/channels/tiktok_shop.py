"""TikTok Shop Partner API: signed product stock update and inventory search."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pulsestock.channels.tiktok_shop import sign
from pulsestock.inventory_sync.adapters.channels.base import (
    ChannelError,
    ChannelTarget,
    RateLimiter,
    failure_for_status,
    not_this_channel,
    transport_failure,
)
from pulsestock.inventory_sync.domain.catalogue import TikTokShopIds
from pulsestock.v1.common_pb2 import Channel

UPDATE_PATH = "/product/202309/products/{product_id}/inventory/update"
SEARCH_PATH = "/product/202309/inventory/search"


@dataclass(frozen=True)
class TikTokShopConfig:
    base_url: str
    app_key: str
    app_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    shop_cipher: str
    warehouse_id: str
    rate_per_second: float = 50.0
    timeout_s: float = 5.0


TOO_MANY_REQUESTS = 36009004  # TikTok's code for a throttled call answered with HTTP 200

Failure = Callable[[aiohttp.ClientResponse, str], ChannelError]


async def signed_call(
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    config: TikTokShopConfig,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    params: dict[str, str] | None = None,
    failure: Failure = failure_for_status,
) -> dict[str, Any]:
    """One signed Partner API call within the rate limit: the whole answer when its `code`
    is 0, else a ChannelError (retryable when TikTok says it was throttled)."""
    raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    query = {
        **(params or {}),
        "app_key": config.app_key,
        "timestamp": str(int(time.time())),
        "shop_cipher": config.shop_cipher,
    }
    query["sign"] = sign(config.app_secret, path, query, raw)
    await limiter.acquire()
    try:
        async with session.request(
            method,
            config.base_url + path,
            params=query,
            data=raw if body is not None else None,
            headers={
                "x-tts-access-token": config.access_token,
                "content-type": "application/json",
            },
        ) as response:
            text = await response.text()
            if response.status != 200:
                raise failure(response, text)
            payload: dict[str, Any] = json.loads(text)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:  # ValueError: not JSON
        raise transport_failure(error) from error
    code = payload.get("code")
    if code != 0:
        raise ChannelError(
            f"TikTok code {code}: {payload.get('message')}", retryable=code == TOO_MANY_REQUESTS
        )
    return payload


class TikTokShopClient:
    channel = Channel.CHANNEL_TIKTOK_SHOP

    def __init__(self, config: TikTokShopConfig) -> None:
        self.config = config
        self.limiter = RateLimiter.under(config.rate_per_second, config.rate_per_second)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout_s))

    # Without a catalogue listing, a SKU's TikTok ids follow one convention (the fake's).
    @staticmethod
    def product_id(sku: str) -> str:
        return f"p-{sku}"

    @staticmethod
    def sku_id(sku: str) -> str:
        return f"s-{sku}"

    async def _call(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        return await signed_call(self.session, self.limiter, self.config, "POST", path, body)

    def ids(self, target: ChannelTarget) -> TikTokShopIds:
        if isinstance(target, str):
            return TikTokShopIds(
                self.product_id(target), self.sku_id(target), self.config.warehouse_id
            )
        if isinstance(target, TikTokShopIds):
            return target
        raise not_this_channel(target, "TikTok Shop")

    async def set_quantity(self, target: ChannelTarget, quantity: int) -> None:
        ids = self.ids(target)
        payload = await self._call(
            UPDATE_PATH.format(product_id=ids.product_id),
            {
                "skus": [
                    {
                        "id": ids.sku_id,
                        "inventory": [{"warehouse_id": ids.warehouse_id, "quantity": quantity}],
                    }
                ]
            },
        )
        data = payload.get("data") or {}
        errors = data.get("errors") if isinstance(data, dict) else None
        if errors:
            raise ChannelError(f"TikTok refused the SKU: {errors}", retryable=False)

    async def get_quantity(self, target: ChannelTarget) -> int | None:
        ids = self.ids(target)
        payload = await self._call(SEARCH_PATH, {"sku_ids": [ids.sku_id]})
        data = payload.get("data")
        inventory = data.get("inventory", []) if isinstance(data, dict) else []
        for product in inventory:
            for item in product.get("skus", []):
                if item.get("id") == ids.sku_id:
                    for warehouse in item.get("warehouse_inventory", []):
                        if warehouse.get("warehouse_id") == ids.warehouse_id:
                            return int(warehouse["available_quantity"])
        return None

    async def close(self) -> None:
        await self.session.close()
