"""Read the listings a shop already has on each channel, for the catalogue import.

One reader per channel pages through the channel's documented catalogue read endpoint and
returns every listing as a `ChannelListing` (its channel ids in the catalogue's one spelling,
the seller SKU and barcode the seller typed, a title). The readers reuse the channel clients'
configs, signing and rate limiters; they wait out throttling (429, Shopify's THROTTLED, with
the channel's Retry-After or the time its bucket needs, else an exponential backoff) and
surface anything else, auth failures first, as `ChannelError`.

What each channel shows:
- TikTok Shop product search (`POST /product/202309/products/search`) lists products with
  their SKUs' seller SKUs and warehouses, but no barcode: the SKU's `identifier_code` is only
  in the product detail (`GET /product/202309/products/{id}`), read once per product when
  barcodes are wanted.
- Shopify `productVariants` has the variant's SKU, barcode and inventory item; the location
  is the configured one.
- Amazon `searchListingsItems` has the seller SKU, ASIN and title; its identifiers dataset
  carries only the ASIN, so a barcode comes from the listing's attributes
  (`externally_assigned_product_identifier`) when the seller gave one, else there is none. A
  search pages through at most 1,000 listings: the reader walks the catalogue by creation
  date in windows of 1,000.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
from pulsestock.inventory_sync.adapters.channels.amazon import AmazonClient, AmazonConfig
from pulsestock.inventory_sync.adapters.channels.base import (
    ChannelError,
    RateLimiter,
    failure_for_status,
    transport_failure,
)
from pulsestock.inventory_sync.adapters.channels.config import ChannelConfigs
from pulsestock.inventory_sync.adapters.channels.shopify import ShopifyConfig, graphql_call
from pulsestock.inventory_sync.adapters.channels.tiktok_shop import TikTokShopConfig, signed_call
from pulsestock.inventory_sync.domain.catalogue import AmazonIds, ShopifyIds, TikTokShopIds
from pulsestock.inventory_sync.domain.catalogue_import import ChannelListing
from pulsestock.v1.common_pb2 import Channel
from yarl import URL

T = TypeVar("T")

# Backoff when the channel throttles without saying for how long.
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 5.0
ATTEMPTS = 8


class CatalogueReader(Protocol):
    @property
    def channel(self) -> int: ...

    async def read(self) -> list[ChannelListing]: ...

    async def close(self) -> None: ...


def readers(configs: ChannelConfigs) -> dict[int, CatalogueReader]:
    """A reader per connected channel (open them inside the running event loop)."""
    opened = {channel: reader_for(configs, channel) for channel in CHANNELS}
    return {channel: reader for channel, reader in opened.items() if reader is not None}


CHANNELS = (Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON)


def reader_for(configs: ChannelConfigs, channel: int) -> CatalogueReader | None:
    """A fresh reader of one connected channel's catalogue (close it after use); None when
    the channel is not connected."""
    if channel == Channel.CHANNEL_TIKTOK_SHOP and configs.tiktok_shop:
        return TikTokShopCatalogueReader(configs.tiktok_shop)
    if channel == Channel.CHANNEL_SHOPIFY and configs.shopify:
        return ShopifyCatalogueReader(configs.shopify)
    if channel == Channel.CHANNEL_AMAZON and configs.amazon:
        return AmazonCatalogueReader(configs.amazon)
    return None


async def patiently(call: Callable[[], Awaitable[T]], attempts: int = ATTEMPTS) -> T:
    """`call`, tried again after a retryable ChannelError: after the time the channel asked
    for, else after an exponential backoff with jitter. The last failure is raised."""
    for attempt in range(attempts):
        try:
            return await call()
        except ChannelError as error:
            if not error.retryable or attempt == attempts - 1:
                raise
            wait = error.retry_after
            if wait is None:
                wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
            await asyncio.sleep(wait + random.uniform(0, BACKOFF_BASE_S))
    raise AssertionError("unreachable")


def _failure(response: aiohttp.ClientResponse, text: str) -> ChannelError:
    """As the clients classify failures, except that refused credentials are final here: an
    import is a request someone waits on, not a sync loop that outlives a token rotation."""
    if response.status in (401, 403):
        return ChannelError(f"HTTP {response.status}: {text[:300]}", retryable=False)
    return failure_for_status(response, text)


def _by_ids(listings: list[ChannelListing]) -> list[ChannelListing]:
    return sorted(listings, key=lambda listing: listing.ids.key)


# --- TikTok Shop -----------------------------------------------------------------------------

TIKTOK_PRODUCT_SEARCH = "/product/202309/products/search"
TIKTOK_PRODUCT_DETAIL = "/product/202309/products/{product_id}"


class TikTokShopCatalogueReader:
    channel = Channel.CHANNEL_TIKTOK_SHOP

    def __init__(
        self, config: TikTokShopConfig, page_size: int = 100, with_barcodes: bool = True
    ) -> None:
        self.config = config
        self.page_size = max(1, min(100, page_size))
        self.with_barcodes = with_barcodes
        self.limiter = RateLimiter.under(config.rate_per_second, config.rate_per_second)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout_s))

    async def _call(
        self, method: str, path: str, params: dict[str, str], body: dict[str, Any] | None
    ) -> dict[str, Any]:
        payload = await signed_call(
            self.session, self.limiter, self.config, method, path, body, params, _failure
        )
        data = payload.get("data")
        return data if isinstance(data, dict) else {}

    async def read(self) -> list[ChannelListing]:
        products: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"page_size": str(self.page_size)}
            if token:
                params["page_token"] = token
            data = await patiently(partial(self._call, "POST", TIKTOK_PRODUCT_SEARCH, params, {}))
            products += data.get("products") or []
            token = str(data.get("next_page_token") or "")
            if not token:
                break
        barcodes: dict[str, str] = {}
        if self.with_barcodes:
            for product in products:
                path = TIKTOK_PRODUCT_DETAIL.format(product_id=quote(str(product["id"]), safe=""))
                detail = await patiently(partial(self._call, "GET", path, {}, None))
                for sku in detail.get("skus") or []:
                    code = (sku.get("identifier_code") or {}).get("code")
                    if code:
                        barcodes[str(sku["id"])] = str(code)
        return _by_ids(
            [
                self._listing(product, sku, barcodes.get(str(sku["id"]), ""))
                for product in products
                for sku in product.get("skus") or []
            ]
        )

    def _listing(
        self, product: dict[str, Any], sku: dict[str, Any], barcode: str
    ) -> ChannelListing:
        """The SKU's warehouse: its only one, else the configured one if it is among them;
        a SKU in several warehouses none of which is configured is reported."""
        warehouses = sorted({str(i["warehouse_id"]) for i in sku.get("inventory") or []})
        configured = self.config.warehouse_id
        problem = ""
        if len(warehouses) == 1:
            warehouse = warehouses[0]
        elif configured and (configured in warehouses or not warehouses):
            warehouse = configured
        else:
            warehouse = warehouses[0] if warehouses else ""
            problem = (
                f"the SKU is stocked in warehouses {', '.join(warehouses)}, none of them the"
                f" configured warehouse {configured or '(none)'}: map it by hand"
                if warehouses
                else "the SKU is in no warehouse and no warehouse is configured"
            )
        return ChannelListing(
            TikTokShopIds(str(product["id"]), str(sku["id"]), warehouse),
            seller_sku=str(sku.get("seller_sku") or ""),
            barcode=barcode,
            title=str(product.get("title") or ""),
            problem=problem,
        )

    async def close(self) -> None:
        await self.session.close()


# --- Shopify ---------------------------------------------------------------------------------

SHOPIFY_VARIANTS = """
query Variants($first: Int!, $after: String) {
  productVariants(first: $first, after: $after) {
    nodes {
      id sku barcode title displayName
      product { id title }
      inventoryItem { id }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""
# Requested cost of a page: 2 for the connection, per variant 1 for it and 1 each for its
# product and inventory item (scalars are free).
SHOPIFY_NODE_COST = 3
_SHOPIFY_GID = re.compile(r"gid://shopify/[A-Za-z]+/([0-9]+)")


def shopify_number(value: str) -> str:
    """`gid://shopify/ProductVariant/123` (or `123`) -> `123`."""
    match = _SHOPIFY_GID.fullmatch(value)
    return match.group(1) if match else value


class ShopifyCatalogueReader:
    channel = Channel.CHANNEL_SHOPIFY

    def __init__(self, config: ShopifyConfig, page_size: int = 100) -> None:
        self.config = config
        self.limiter = RateLimiter.under(config.points_per_second, config.bucket_points)
        # A page must fit in the bucket, and under Shopify's 1,000-point cap on one query.
        fits = int(min(self.limiter.capacity, 1000) - 2) // SHOPIFY_NODE_COST
        self.page_size = max(1, min(page_size, 250, fits))
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout_s))

    async def _page(self, after: str | None) -> dict[str, Any]:
        data = await graphql_call(
            self.session,
            self.limiter,
            self.config,
            SHOPIFY_VARIANTS,
            {"first": self.page_size, "after": after},
            2 + SHOPIFY_NODE_COST * self.page_size,
            _failure,
        )
        connection = data.get("productVariants")
        if not isinstance(connection, dict):
            raise ChannelError("Shopify answered without productVariants", retryable=False)
        return connection

    async def read(self) -> list[ChannelListing]:
        location = shopify_number(self.config.location_id)
        listings = []
        after: str | None = None
        while True:
            connection = await patiently(partial(self._page, after))
            for node in connection.get("nodes") or []:
                listings.append(
                    ChannelListing(
                        ShopifyIds(
                            shopify_number(str(node["id"])),
                            shopify_number(str(node["inventoryItem"]["id"])),
                            location,
                        ),
                        seller_sku=str(node.get("sku") or ""),
                        barcode=str(node.get("barcode") or ""),
                        title=str(node.get("displayName") or node.get("title") or ""),
                    )
                )
            info = connection.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                break
            after = str(info["endCursor"])
        return _by_ids(listings)

    async def close(self) -> None:
        await self.session.close()


# --- Amazon ----------------------------------------------------------------------------------

AMAZON_SEARCH = "/listings/2021-08-01/items/{seller_id}"
AMAZON_PAGE_SIZE = 20  # the most searchListingsItems returns per page
AMAZON_SEARCH_LIMIT = 1000  # the most one search pages through
AMAZON_BARCODE_TYPES = ("ean", "upc", "gtin", "isbn", "jan")


class AmazonCatalogueReader:
    """searchListingsItems in the configured marketplace. Its usage plan (5 requests/s,
    burst 5) is its own, apart from patchListingsItem's; the access token comes from the
    Amazon client (one Login with Amazon refresh path)."""

    channel = Channel.CHANNEL_AMAZON

    def __init__(self, config: AmazonConfig) -> None:
        self.config = config
        self.client = AmazonClient(config)
        self.limiter = RateLimiter.under(config.rate_per_second, config.burst)

    async def _page(self, params: dict[str, str]) -> dict[str, Any]:
        url = URL(
            self.config.base_url
            + AMAZON_SEARCH.format(seller_id=quote(self.config.seller_id, safe="")),
            encoded=True,
        )
        for attempt in range(2):
            token = await self.client._access_token(refresh=attempt > 0)
            await self.limiter.acquire()
            try:
                async with self.client.session.get(
                    url, params=params, headers={"x-amz-access-token": token}
                ) as response:
                    text = await response.text()
                    if response.status == 403 and attempt == 0:
                        continue  # the token may have expired early: refresh once
                    if response.status != 200:
                        raise _failure(response, text)
                    payload: dict[str, Any] = json.loads(text)
                    return payload
            except (aiohttp.ClientError, TimeoutError) as error:
                raise transport_failure(error) from error
        raise ChannelError("Amazon refused the refreshed token", retryable=False)

    async def read(self) -> list[ChannelListing]:
        """Oldest first by creation date; when a search has more listings than it can page
        through, the next search starts at the last creation date seen (inclusive: the
        listings seen twice are kept once)."""
        marketplace = self.config.marketplace_id
        found: dict[str, ChannelListing] = {}
        created_after: str | None = None
        while True:
            params = {
                "marketplaceIds": marketplace,
                "includedData": "summaries,attributes",
                "pageSize": str(AMAZON_PAGE_SIZE),
                "sortBy": "createdDate",
                "sortOrder": "ASC",
            }
            if created_after:
                params["createdAfter"] = created_after
            seen, total, last_created = 0, 0, created_after
            while True:
                page = await patiently(partial(self._page, dict(params)))
                total = int(page.get("numberOfResults", 0))
                for item in page.get("items") or []:
                    seen += 1
                    listing, created = self._listing(item, marketplace)
                    found[listing.seller_sku] = listing
                    last_created = created or last_created
                token = (page.get("pagination") or {}).get("nextToken")
                if not token:
                    break
                params = {"marketplaceIds": marketplace, "pageToken": str(token)}
            if total <= seen:
                break
            if last_created == created_after:
                raise ChannelError(
                    f"more than {AMAZON_SEARCH_LIMIT} Amazon listings created at {created_after}:"
                    " searchListingsItems cannot page through them all (read the"
                    " GET_MERCHANT_LISTINGS_ALL_DATA report instead)",
                    retryable=False,
                )
            created_after = last_created
        return _by_ids(list(found.values()))

    @staticmethod
    def _listing(item: dict[str, Any], marketplace: str) -> tuple[ChannelListing, str]:
        seller_sku = str(item["sku"])
        summary: dict[str, Any] = next(
            (s for s in item.get("summaries") or [] if s.get("marketplaceId") == marketplace), {}
        )
        barcode = ""
        attributes = item.get("attributes") or {}
        for identifier in attributes.get("externally_assigned_product_identifier") or []:
            if (
                str(identifier.get("type", "")).lower() in AMAZON_BARCODE_TYPES
                and identifier.get("marketplace_id", marketplace) == marketplace
                and identifier.get("value")
            ):
                barcode = str(identifier["value"])
                break
        return (
            ChannelListing(
                AmazonIds(seller_sku, marketplace),
                seller_sku=seller_sku,
                barcode=barcode,
                title=str(summary.get("itemName") or ""),
            ),
            str(summary.get("createdDate") or ""),
        )

    async def close(self) -> None:
        await self.client.close()
