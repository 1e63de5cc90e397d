"""Each channel client against its fake: a real HTTP server speaking the documented shapes."""

from __future__ import annotations

import time

import pytest
from pulsestock.config import Env
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.inventory_sync.adapters.channels.amazon import AmazonClient
from pulsestock.inventory_sync.adapters.channels.base import ChannelError
from pulsestock.inventory_sync.adapters.channels.config import ChannelConfigs
from pulsestock.inventory_sync.adapters.channels.shopify import ShopifyClient
from pulsestock.inventory_sync.adapters.channels.tiktok_shop import TikTokShopClient


def configs(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon], **overrides: str
) -> ChannelConfigs:
    env = fake_channel_env(*(fake.url for fake in fakes))
    env.update(overrides)
    return ChannelConfigs.from_env(Env(env))


async def test_each_client_sets_and_reads_back_a_quantity(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
) -> None:
    clients = configs(fakes).clients()
    try:
        for client, fake in zip(clients.values(), fakes, strict=True):
            assert await client.get_quantity("MUG") is None
            await client.set_quantity("MUG", 17)
            assert fake.quantity_of("MUG") == 17
            assert await client.get_quantity("MUG") == 17
    finally:
        for client in clients.values():
            await client.close()


async def test_tiktok_refuses_a_request_signed_with_the_wrong_secret(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
) -> None:
    config = configs(fakes, TIKTOK_SHOP_APP_SECRET="not-the-secret").tiktok_shop
    assert config is not None
    client = TikTokShopClient(config)
    try:
        with pytest.raises(ChannelError, match="signature mismatch"):
            await client.set_quantity("MUG", 3)
    finally:
        await client.close()
    assert fakes[0].quantity_of("MUG") is None


async def test_bad_credentials_are_refused_and_change_nothing(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
) -> None:
    bad = configs(
        fakes,
        TIKTOK_SHOP_ACCESS_TOKEN="wrong",
        SHOPIFY_ACCESS_TOKEN="wrong",
        AMAZON_CLIENT_SECRET="wrong",
    ).clients()
    try:
        for client in bad.values():
            with pytest.raises(ChannelError):
                await client.set_quantity("MUG", 3)
    finally:
        for client in bad.values():
            await client.close()
    assert [fake.quantity_of("MUG") for fake in fakes] == [None, None, None]


async def test_shopify_throttling_is_retryable_with_the_time_to_refill(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
) -> None:
    shopify = fakes[1]
    shopify.bucket.tokens = 0  # the store's bucket is empty
    config = configs(fakes).shopify
    assert config is not None
    client = ShopifyClient(config)
    try:
        with pytest.raises(ChannelError) as caught:
            await client.set_quantity("MUG", 3)
    finally:
        await client.close()
    assert caught.value.retryable
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 10 / 100 + 0.01  # 10 points at 100 points/s


async def test_amazon_refreshes_an_access_token_the_api_no_longer_accepts(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
) -> None:
    amazon = fakes[2]
    config = configs(fakes).amazon
    assert config is not None
    client = AmazonClient(config)
    try:
        await client.set_quantity("MUG", 1)
        amazon.tokens.clear()  # every issued token revoked
        await client.set_quantity("MUG", 2)
    finally:
        await client.close()
    assert amazon.quantity_of("MUG") == 2
    assert sum(r.path == "/auth/o2/token" for r in amazon.requests) == 2


async def test_client_keeps_within_amazons_rate_limit(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
) -> None:
    """12 calls against 5 requests/s, burst 5: the client paces itself a little under the
    limit (4.5/s, burst 3.5), and the API never says 429."""
    import asyncio

    amazon = fakes[2]
    config = configs(fakes).amazon
    assert config is not None
    client = AmazonClient(config)
    started = time.monotonic()
    try:
        await asyncio.gather(*(client.set_quantity(f"S{i}", i) for i in range(12)))
    finally:
        await client.close()
    elapsed = time.monotonic() - started
    assert [r.status for r in amazon.writes()] == [200] * 12
    assert elapsed >= (12 - 3.5) / 4.5 - 0.1  # the burst, then 4.5 per second
