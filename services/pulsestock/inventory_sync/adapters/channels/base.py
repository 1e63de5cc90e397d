"""What the sync engine needs from a channel client, and the failure it understands."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import aiohttp
from pulsestock.inventory_sync.domain.catalogue import ChannelIds


class ChannelError(Exception):
    """A call to a channel failed. `retryable` failures (429, 5xx, timeouts) are tried again
    after `retry_after` seconds when the channel said so, else after a backoff."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


# What a quantity is pushed to: a catalogue listing's channel ids, or a SKU under the naming
# convention (`p-<sku>`/`s-<sku>` on TikTok Shop, `gid://shopify/InventoryItem/<sku>`, the SKU
# as the Amazon seller SKU), which shops without an imported catalogue (the fakes, the demo)
# use.
ChannelTarget = str | ChannelIds


class ChannelClient(Protocol):
    @property
    def channel(self) -> int: ...

    async def set_quantity(self, target: ChannelTarget, quantity: int) -> None: ...

    async def get_quantity(self, target: ChannelTarget) -> int | None: ...

    async def close(self) -> None: ...


class RateLimiter:
    """A token bucket that waits: keeps our calls within the channel's documented limit."""

    # Aim a little under the documented limit: our clock and the channel's are not the same
    # clock, and requests bunch up on the way.
    HEADROOM = 0.9

    @classmethod
    def under(cls, rate: float, burst: float) -> RateLimiter:
        return cls(rate * cls.HEADROOM, max(1.0, burst * cls.HEADROOM - 1))

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.capacity = burst
        self.tokens = burst
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, cost: float = 1.0) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= cost:
                    self.tokens -= cost
                    return
                await asyncio.sleep((cost - self.tokens) / self.rate)


def retry_after_of(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def failure_for_status(response: aiohttp.ClientResponse, text: str) -> ChannelError:
    status = response.status
    retryable = status == 429 or status >= 500 or status in (401, 403, 408)
    return ChannelError(
        f"HTTP {status}: {text[:300]}", retryable=retryable, retry_after=retry_after_of(response)
    )


def not_this_channel(target: ChannelTarget, channel: str) -> ChannelError:
    return ChannelError(f"{target} are not {channel} ids", retryable=False)


def transport_failure(error: Exception) -> ChannelError:
    return ChannelError(f"transport: {error!r}", retryable=True)
