"""Recently updated orders pulled from each channel's API, mapped onto the order facts the
webhooks map onto (domain/orders.py), for the reconciler: TikTok Shop order search, Shopify
REST orders, Amazon SP-API getOrders + getOrderItems.

Each source pages through the orders updated since a time, one page at a time (the caller
joins a page before the next is asked for), paced under the channel's documented rate limit,
and retries a throttled (429) or failing (5xx, transport) call after the channel's
`Retry-After` or an exponential backoff; after `attempts` tries it raises `SourceFailed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp
from pulsestock.channels.tiktok_shop import sign
from pulsestock.ids import valid_id
from pulsestock.ingest.domain import orders
from pulsestock.ingest.domain.orders import OrderFacts
from pulsestock.telemetry import get_logger
from pulsestock.v1.common_pb2 import Channel

log = get_logger(__name__)


class SourceFailed(Exception):
    """A channel's order API did not answer usably (after the retries, if retryable)."""


@dataclass(frozen=True)
class PulledOrder:
    order_id: str
    updated_at: datetime
    facts: OrderFacts

    @property
    def snapshot_id(self) -> str:
        """The same snapshot pulled twice has the same id; two states of an order within the
        channel's time resolution (TikTok: seconds) do not."""
        digest = hashlib.sha256(
            json.dumps(orders.facts_to_json(self.facts), sort_keys=True).encode()
        ).hexdigest()[:16]
        return f"{self.order_id}@{self.updated_at.isoformat()}#{digest}"


@dataclass(frozen=True)
class Page:
    orders: list[PulledOrder]
    malformed: int = 0  # orders on the page that could not be mapped (logged, skipped)


class OrderSource(Protocol):
    @property
    def channel(self) -> int: ...

    @property
    def name(self) -> str: ...

    def updated_since(self, since: datetime) -> AsyncIterator[Page]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Retry:
    attempts: int = 6
    base_s: float = 1.0
    max_s: float = 60.0


class Pacer:
    """A token bucket that waits, a little under the channel's documented limit."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate * 0.9
        self.capacity = max(1.0, burst * 0.9 - 1)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except json.JSONDecodeError as error:
            raise SourceFailed(f"HTTP {self.status}: not JSON: {self.text[:200]}") from error


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return max(0.0, float(headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


async def call(
    send: Callable[[], Awaitable[Answer]], pacer: Pacer, retry: Retry, what: str
) -> Answer:
    """`send` builds the request afresh each time (a new signature and timestamp)."""
    delay = retry.base_s
    for attempt in range(1, retry.attempts + 1):
        await pacer.acquire()
        try:
            answer = await send()
        except (aiohttp.ClientError, TimeoutError) as error:
            failure, wait = f"transport: {error!r}", None
        else:
            if answer.status != 429 and answer.status < 500:
                return answer
            failure, wait = (
                f"HTTP {answer.status}: {answer.text[:200]}",
                _retry_after(answer.headers),
            )
        if attempt == retry.attempts:
            raise SourceFailed(f"{what}: {failure} (after {attempt} attempts)")
        wait = min(retry.max_s, wait if wait is not None else delay)
        log.info("channel call retried", what=what, failure=failure, wait_s=round(wait, 3))
        await asyncio.sleep(wait)
        delay = min(retry.max_s, delay * 2)
    raise AssertionError("unreachable")


async def _answer(response: aiohttp.ClientResponse) -> Answer:
    return Answer(response.status, dict(response.headers), await response.text())


def _session(timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


def _mapped(
    source: str, order_id: str, mapping: Callable[[], tuple[datetime, OrderFacts]]
) -> PulledOrder | None:
    if not valid_id(order_id):
        log.warning("pulled order skipped", source=source, reason="malformed order id")
        return None
    try:
        updated_at, facts = mapping()
    except (orders.MalformedOrder, KeyError, TypeError, ValueError, OverflowError) as error:
        log.warning("pulled order skipped", source=source, order_id=order_id, reason=str(error))
        return None
    return PulledOrder(order_id, updated_at, facts)


def _page(source: str, mapped: list[PulledOrder | None]) -> Page:
    kept = [order for order in mapped if order is not None]
    return Page(kept, malformed=len(mapped) - len(kept))


# --- TikTok Shop: POST /order/202309/orders/search ------------------------------------------

TIKTOK_SEARCH_PATH = "/order/202309/orders/search"


@dataclass(frozen=True)
class TikTokSearchConfig:
    base_url: str
    app_key: str
    app_secret: str
    access_token: str
    shop_cipher: str
    page_size: int = 100  # the API's maximum
    rate_per_second: float = 50.0
    timeout_s: float = 10.0
    retry: Retry = Retry()


def tiktok_order(order: Mapping[str, Any]) -> tuple[datetime, OrderFacts]:
    updated_at = datetime.fromtimestamp(int(order["update_time"]), UTC)
    facts = orders.tiktok_status(
        str(order["status"]),
        updated_at,
        orders.tiktok_lines(order),
        orders.tiktok_listing_ids(order),
    )
    return updated_at, facts


class TikTokOrderSearch:
    channel = Channel.CHANNEL_TIKTOK_SHOP
    name = "tiktok_shop"

    def __init__(self, config: TikTokSearchConfig) -> None:
        self.config = config
        self.pacer = Pacer(config.rate_per_second, config.rate_per_second)
        self.session = _session(config.timeout_s)

    async def updated_since(self, since: datetime) -> AsyncIterator[Page]:
        body = json.dumps({"update_time_ge": int(since.timestamp())}).encode()
        token = ""
        while True:
            page = await self._search(body, token)
            yield _page(
                self.name,
                [
                    _mapped(self.name, str(order.get("id", "")), partial(tiktok_order, order))
                    for order in page.get("orders") or []
                ],
            )
            token = str(page.get("next_page_token") or "")
            if not token:
                return

    async def _search(self, body: bytes, token: str) -> dict[str, Any]:
        config = self.config

        async def send() -> Answer:
            query = {
                "app_key": config.app_key,
                "timestamp": str(int(time.time())),
                "shop_cipher": config.shop_cipher,
                "page_size": str(config.page_size),
                "sort_field": "update_time",
                "sort_order": "ASC",
            }
            if token:
                query["page_token"] = token
            query["sign"] = sign(config.app_secret, TIKTOK_SEARCH_PATH, query, body)
            async with self.session.post(
                config.base_url + TIKTOK_SEARCH_PATH,
                params=query,
                data=body,
                headers={
                    "x-tts-access-token": config.access_token,
                    "Content-Type": "application/json",
                },
            ) as response:
                return await _answer(response)

        answer = await call(send, self.pacer, config.retry, "TikTok Shop order search")
        payload = answer.json()
        if answer.status != 200 or payload.get("code") != 0:
            raise SourceFailed(
                f"TikTok Shop order search: HTTP {answer.status} {payload.get('message')}"
            )
        data: dict[str, Any] = payload.get("data") or {}
        return data

    async def close(self) -> None:
        await self.session.close()


# --- Shopify: GET /admin/api/2024-10/orders.json, cursor pages in the Link header ------------

SHOPIFY_API_VERSION = "2024-10"
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class ShopifyOrdersConfig:
    base_url: str
    access_token: str
    api_version: str = SHOPIFY_API_VERSION
    page_size: int = 250  # the API's maximum
    # REST leaky bucket: 40 requests, leaking 2/s (Standard plans).
    rate_per_second: float = 2.0
    bucket: float = 40.0
    timeout_s: float = 10.0
    retry: Retry = Retry()


def shopify_order(order: Mapping[str, Any]) -> tuple[datetime, OrderFacts]:
    updated_at = orders.shopify_time(order["updated_at"], "updated_at")
    return updated_at, orders.shopify_order("orders/updated", order, updated_at)


def next_page_info(link: str | None) -> str | None:
    match = _NEXT_LINK.search(link or "")
    if match is None:
        return None
    values = parse_qs(urlsplit(match.group(1)).query).get("page_info")
    return values[0] if values else None


class ShopifyOrders:
    channel = Channel.CHANNEL_SHOPIFY
    name = "shopify"

    def __init__(self, config: ShopifyOrdersConfig) -> None:
        self.config = config
        self.pacer = Pacer(config.rate_per_second, config.bucket)
        self.session = _session(config.timeout_s)

    async def updated_since(self, since: datetime) -> AsyncIterator[Page]:
        config = self.config
        url = f"{config.base_url}/admin/api/{config.api_version}/orders.json"
        # With page_info only `limit` may be given: the cursor carries the filters.
        params: dict[str, str] = {
            "updated_at_min": since.astimezone(UTC).isoformat(),
            "status": "any",
            "limit": str(config.page_size),
        }
        while True:
            query = dict(params)

            async def send(query: dict[str, str] = query) -> Answer:
                async with self.session.get(
                    url, params=query, headers={"X-Shopify-Access-Token": config.access_token}
                ) as response:
                    return await _answer(response)

            answer = await call(send, self.pacer, config.retry, "Shopify orders")
            if answer.status != 200:
                raise SourceFailed(f"Shopify orders: HTTP {answer.status} {answer.text[:200]}")
            found = answer.json().get("orders") or []
            yield _page(
                self.name,
                [
                    _mapped(self.name, str(order.get("id", "")), partial(shopify_order, order))
                    for order in found
                ],
            )
            page_info = next_page_info(answer.headers.get("Link"))
            if page_info is None:
                return
            params = {"limit": str(config.page_size), "page_info": page_info}

    async def close(self) -> None:
        await self.session.close()


# --- Amazon: GET /orders/v0/orders (NextToken) and /orders/v0/orders/{id}/orderItems --------

AMAZON_ORDERS_PATH = "/orders/v0/orders"
AMAZON_ITEMS_PATH = "/orders/v0/orders/{order_id}/orderItems"


@dataclass(frozen=True)
class AmazonOrdersConfig:
    base_url: str
    lwa_url: str
    client_id: str
    client_secret: str
    refresh_token: str
    marketplace_id: str
    page_size: int = 100  # MaxResultsPerPage: at most 100
    # SP-API Orders v0 usage plans: getOrders 0.0167/s burst 20, getOrderItems 0.5/s burst 30.
    orders_rate: float = 0.0167
    orders_burst: float = 20.0
    items_rate: float = 0.5
    items_burst: float = 30.0
    timeout_s: float = 10.0
    retry: Retry = Retry(attempts=6, base_s=2.0, max_s=120.0)


def amazon_order(order: Mapping[str, Any], items: list[Mapping[str, Any]]) -> OrderFacts:
    """getOrders' order and getOrderItems' items, in the shape of an ORDER_CHANGE Summary, so
    the very rules the notifications follow apply (amazon_order_change)."""
    summary_items = []
    for item in items:
        entry: dict[str, Any] = {
            "SellerSKU": item["SellerSKU"],
            "Quantity": int(item["QuantityOrdered"]),
            "QuantityShipped": int(item.get("QuantityShipped", 0)),
        }
        cancel = item.get("BuyerRequestedCancel")
        if isinstance(cancel, Mapping) and "IsBuyerRequestedCancel" in cancel:
            entry["IsBuyerRequestedCancel"] = str(cancel["IsBuyerRequestedCancel"]).lower() in (
                "true",
                "1",
            )
        summary_items.append(entry)
    change = {
        "AmazonOrderId": order["AmazonOrderId"],
        "OrderChangeTrigger": {"TimeOfOrderChange": order["LastUpdateDate"]},
        "Summary": {
            "MarketplaceId": order.get("MarketplaceId"),
            "OrderStatus": order["OrderStatus"],
            "PurchaseDate": order.get("PurchaseDate"),
            "OrderItems": summary_items,
        },
    }
    updated_at = orders.amazon_time(order["LastUpdateDate"], "LastUpdateDate")
    return orders.amazon_order_change(change, updated_at)


def amazon_snapshot(
    order: Mapping[str, Any], items: list[Mapping[str, Any]]
) -> tuple[datetime, OrderFacts]:
    return orders.amazon_time(order["LastUpdateDate"], "LastUpdateDate"), amazon_order(order, items)


class AmazonOrders:
    channel = Channel.CHANNEL_AMAZON
    name = "amazon"

    def __init__(self, config: AmazonOrdersConfig) -> None:
        self.config = config
        self.orders_pacer = Pacer(config.orders_rate, config.orders_burst)
        self.items_pacer = Pacer(config.items_rate, config.items_burst)
        self.token_pacer = Pacer(5.0, 5.0)
        self.session = _session(config.timeout_s)
        self._token = ""
        self._token_expires = 0.0

    async def _access_token(self, *, refresh: bool = False) -> str:
        if not refresh and self._token and time.monotonic() < self._token_expires - 60:
            return self._token
        config = self.config

        async def send() -> Answer:
            async with self.session.post(
                config.lwa_url + "/auth/o2/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": config.refresh_token,
                    "client_id": config.client_id,
                    "client_secret": config.client_secret,
                },
            ) as response:
                return await _answer(response)

        answer = await call(send, self.token_pacer, config.retry, "Login with Amazon")
        if answer.status != 200:
            raise SourceFailed(f"Login with Amazon: HTTP {answer.status} {answer.text[:200]}")
        payload = answer.json()
        self._token = str(payload["access_token"])
        self._token_expires = time.monotonic() + float(payload.get("expires_in", 3600))
        return self._token

    async def _get(
        self, path: str, params: dict[str, str], pacer: Pacer, what: str
    ) -> dict[str, Any]:
        for attempt in range(2):
            token = await self._access_token(refresh=attempt > 0)

            async def send(token: str = token) -> Answer:
                async with self.session.get(
                    self.config.base_url + path,
                    params=params,
                    headers={"x-amz-access-token": token},
                ) as response:
                    return await _answer(response)

            answer = await call(send, pacer, self.config.retry, what)
            if answer.status == 403 and attempt == 0:
                continue  # the token may have expired early: refresh it once
            if answer.status != 200:
                raise SourceFailed(f"{what}: HTTP {answer.status} {answer.text[:200]}")
            payload: dict[str, Any] = answer.json().get("payload") or {}
            return payload
        raise SourceFailed(f"{what}: Amazon refused the refreshed token")

    async def _items(self, order_id: str) -> list[Mapping[str, Any]]:
        items: list[Mapping[str, Any]] = []
        token = ""
        while True:
            params = {"NextToken": token} if token else {}
            payload = await self._get(
                AMAZON_ITEMS_PATH.format(order_id=order_id),
                params,
                self.items_pacer,
                "Amazon getOrderItems",
            )
            items += payload.get("OrderItems") or []
            token = str(payload.get("NextToken") or "")
            if not token:
                return items

    async def updated_since(self, since: datetime) -> AsyncIterator[Page]:
        config = self.config
        first = {
            "MarketplaceIds": config.marketplace_id,
            "LastUpdatedAfter": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "MaxResultsPerPage": str(config.page_size),
        }
        params = first
        while True:
            payload = await self._get(
                AMAZON_ORDERS_PATH, params, self.orders_pacer, "Amazon getOrders"
            )
            mapped: list[PulledOrder | None] = []
            for order in payload.get("Orders") or []:
                order_id = str(order.get("AmazonOrderId", ""))
                if not valid_id(order_id):
                    mapped.append(None)
                    continue
                items = await self._items(order_id)
                mapped.append(
                    _mapped(
                        self.name,
                        order_id,
                        partial(amazon_snapshot, order, items),
                    )
                )
            yield _page(self.name, mapped)
            token = str(payload.get("NextToken") or "")
            if not token:
                return
            params = {"MarketplaceIds": config.marketplace_id, "NextToken": token}

    async def close(self) -> None:
        await self.session.close()
