"""Faithful local fakes of the channel APIs (TikTok Shop, Shopify, Amazon SP-API): real HTTP
servers that speak the documented request and response shapes, check auth, enforce the
documented rate limits, and can be told to fail, throttle or stall. They record what they
receive. Tests and `make run` use them; nothing here talks to the real channels."""

from pulsestock.fakes.amazon import FakeAmazon
from pulsestock.fakes.base import FakeChannel, Faults
from pulsestock.fakes.shopify import FakeShopify
from pulsestock.fakes.tiktok_shop import FakeTikTokShop, tiktok_signature


def fake_channel_env(tiktok_url: str, shopify_url: str, amazon_url: str) -> dict[str, str]:
    """The variables that connect the three channels to the local fakes' default accounts."""
    return {
        "TIKTOK_SHOP_API_URL": tiktok_url,
        "TIKTOK_SHOP_APP_KEY": "fake-app-key",
        "TIKTOK_SHOP_APP_SECRET": "fake-app-secret",
        "TIKTOK_SHOP_ACCESS_TOKEN": "fake-tts-token",
        "TIKTOK_SHOP_SHOP_CIPHER": "fake-shop-cipher",
        "TIKTOK_SHOP_WAREHOUSE_ID": "7000000000000000001",
        "SHOPIFY_API_URL": shopify_url,
        "SHOPIFY_ACCESS_TOKEN": "shpat_fake",
        "SHOPIFY_LOCATION_ID": "gid://shopify/Location/1",
        "AMAZON_SP_API_URL": amazon_url,
        "AMAZON_LWA_URL": amazon_url,
        "AMAZON_CLIENT_ID": "amzn1.application-oa2-client.fake",
        "AMAZON_CLIENT_SECRET": "fake-lwa-secret",
        "AMAZON_REFRESH_TOKEN": "Atzr|fake-refresh",
        "AMAZON_SELLER_ID": "A1FAKESELLER",
        "AMAZON_MARKETPLACE_ID": "ATVPDKIKX0DER",
        # What the channels (and the Amazon notification bridge) sign webhooks with.
        "SHOPIFY_WEBHOOK_SECRET": "fake-shopify-webhook-secret",
        "AMAZON_WEBHOOK_TOKEN": "fake-amazon-bridge-token",
    }


__all__ = [
    "FakeAmazon",
    "FakeChannel",
    "FakeShopify",
    "FakeTikTokShop",
    "Faults",
    "fake_channel_env",
    "tiktok_signature",
]
