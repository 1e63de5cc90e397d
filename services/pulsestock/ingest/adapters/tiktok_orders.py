"""TikTok Shop order detail (Partner API 202309): the order status webhook carries no line
items, so ingest asks the API for them."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pulsestock.channels.tiktok_shop import sign

ORDERS_PATH = "/order/202309/orders"


@dataclass(frozen=True)
class TikTokOrdersConfig:
    base_url: str
    app_key: str
    app_secret: str
    access_token: str
    shop_cipher: str
    timeout_s: float = 5.0


class TikTokOrderLookupFailed(Exception):
    pass


class TikTokOrders:
    def __init__(self, config: TikTokOrdersConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def detail(self, order_id: str) -> Mapping[str, Any]:
        """The order as the detail API shows it: its line items (domain `tiktok_lines` and
        `tiktok_listing_ids` read them)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)
            )
        query = {
            "app_key": self.config.app_key,
            "timestamp": str(int(time.time())),
            "shop_cipher": self.config.shop_cipher,
            "ids": order_id,
        }
        query["sign"] = sign(self.config.app_secret, ORDERS_PATH, query, b"")
        try:
            async with self._session.get(
                self.config.base_url + ORDERS_PATH,
                params=query,
                headers={"x-tts-access-token": self.config.access_token},
            ) as response:
                payload = json.loads(await response.text())
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
            raise TikTokOrderLookupFailed(repr(error)) from error
        if response.status != 200 or payload.get("code") != 0:
            raise TikTokOrderLookupFailed(f"HTTP {response.status}: {payload.get('message')}")
        for order in payload.get("data", {}).get("orders", []):
            if order.get("id") == order_id:
                found: Mapping[str, Any] = order
                return found
        raise TikTokOrderLookupFailed(f"order {order_id} not found")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
