"""Settings and client configurations never show a secret when printed (a log line or an
error that formats one must not leak it)."""

from __future__ import annotations

from pulsestock.ingest.entrypoints.webhooks import WebhookSecrets
from pulsestock.inventory_sync.adapters.channels.amazon import AmazonConfig
from pulsestock.inventory_sync.adapters.channels.shopify import ShopifyConfig
from pulsestock.inventory_sync.adapters.channels.tiktok_shop import TikTokShopConfig

SECRET = "s3cr3t-value-7d1f"


def test_no_secret_in_the_repr_of_channel_configs_and_webhook_secrets() -> None:
    shown = [
        repr(WebhookSecrets("app-key", SECRET, SECRET, SECRET)),
        repr(AmazonConfig("https://a", "https://l", "client", SECRET, SECRET, "seller", "mkt")),
        repr(ShopifyConfig("https://s", SECRET, "gid://shopify/Location/1")),
        repr(TikTokShopConfig("https://t", "app-key", SECRET, SECRET, "cipher", "wh")),
    ]
    for text in shown:
        assert SECRET not in text, text
    assert "app-key" in shown[0]  # the rest is still there to debug with
