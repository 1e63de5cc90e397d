"""Amazon SP-API Listings Items: `patchListingsItem` of `fulfillment_availability` and
`getListingsItem`, authorised by a Login with Amazon access token refreshed before expiry."""

from __future__ import annotations

import json
import time
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
from pulsestock.inventory_sync.domain.catalogue import AmazonIds
from pulsestock.v1.common_pb2 import Channel
from yarl import URL

LISTINGS_PATH = "/listings/2021-08-01/items/{seller_id}/{sku}"


@dataclass(frozen=True)
class AmazonConfig:
    base_url: str
    lwa_url: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    seller_id: str
    marketplace_id: str
    product_type: str = "PRODUCT"
    rate_per_second: float = 5.0
    burst: float = 5.0
    timeout_s: float = 5.0


class AmazonClient:
    channel = Channel.CHANNEL_AMAZON

    def __init__(self, config: AmazonConfig) -> None:
        self.config = config
        self.limiter = RateLimiter.under(config.rate_per_second, config.burst)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout_s))
        self._token = ""
        self._token_expires = 0.0

    async def _access_token(self, *, refresh: bool = False) -> str:
        if not refresh and self._token and time.monotonic() < self._token_expires - 60:
            return self._token
        try:
            async with self.session.post(
                self.config.lwa_url + "/auth/o2/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": self.config.refresh_token,
                    "client_id": self.config.client_id,
                    "client_secret": self.config.client_secret,
                },
            ) as response:
                text = await response.text()
                if response.status != 200:
                    raise failure_for_status(response, text)
                payload = json.loads(text)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_failure(error) from error
        self._token = payload["access_token"]
        self._token_expires = time.monotonic() + float(payload.get("expires_in", 3600))
        return self._token

    def listing(self, target: ChannelTarget) -> AmazonIds:
        """Without a catalogue listing, the SKU is the seller SKU in the configured
        marketplace."""
        if isinstance(target, str):
            return AmazonIds(target, self.config.marketplace_id)
        if isinstance(target, AmazonIds):
            return target
        raise not_this_channel(target, "Amazon")

    async def _call(self, method: str, seller_sku: str, **kwargs: Any) -> tuple[int, str]:
        # A seller SKU is free text ("Mug 2-Pack/blue"): one path segment, percent-encoded.
        url = URL(
            self.config.base_url
            + LISTINGS_PATH.format(seller_id=self.config.seller_id, sku=quote(seller_sku, safe="")),
            encoded=True,
        )
        for attempt in range(2):
            token = await self._access_token(refresh=attempt > 0)
            await self.limiter.acquire()
            try:
                async with self.session.request(
                    method, url, headers={"x-amz-access-token": token}, **kwargs
                ) as response:
                    text = await response.text()
                    if response.status == 403 and attempt == 0:
                        continue  # the token may have expired early: refresh once
                    if response.status not in (200, 404):
                        raise failure_for_status(response, text)
                    return response.status, text
            except (aiohttp.ClientError, TimeoutError) as error:
                raise transport_failure(error) from error
        raise ChannelError("Amazon refused the refreshed token", retryable=True)

    async def set_quantity(self, target: ChannelTarget, quantity: int) -> None:
        listing = self.listing(target)
        status, text = await self._call(
            "PATCH",
            listing.seller_sku,
            params={"marketplaceIds": listing.marketplace_id},
            json={
                "productType": self.config.product_type,
                "patches": [
                    {
                        "op": "merge",
                        "path": "/attributes/fulfillment_availability",
                        "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}],
                    }
                ],
            },
        )
        if status == 404:
            raise ChannelError(f"Amazon has no listing {listing.seller_sku!r}", retryable=False)
        result = json.loads(text)
        if result.get("status") != "ACCEPTED":
            raise ChannelError(
                f"Amazon {result.get('status')}: {result.get('issues')}", retryable=False
            )

    async def get_quantity(self, target: ChannelTarget) -> int | None:
        listing = self.listing(target)
        status, text = await self._call(
            "GET",
            listing.seller_sku,
            params={
                "marketplaceIds": listing.marketplace_id,
                "includedData": "fulfillmentAvailability",
            },
        )
        if status == 404:
            return None
        for offer in json.loads(text).get("fulfillmentAvailability", []):
            if offer.get("fulfillmentChannelCode") == "DEFAULT":
                return int(offer.get("quantity", 0))
        return None

    async def close(self) -> None:
        await self.session.close()
