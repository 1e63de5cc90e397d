"""Which channels are connected, from environment variables. A channel whose base URL is
unset is not synced; a channel with a URL must have all its credentials. Each credential is
read from NAME or from the file NAME_FILE names (a mounted Kubernetes secret)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pulsestock.config import ConfigError, Env
from pulsestock.inventory_sync.adapters.channels.amazon import AmazonClient, AmazonConfig
from pulsestock.inventory_sync.adapters.channels.base import ChannelClient
from pulsestock.inventory_sync.adapters.channels.shopify import ShopifyClient, ShopifyConfig
from pulsestock.inventory_sync.adapters.channels.tiktok_shop import (
    TikTokShopClient,
    TikTokShopConfig,
)


def _required(env: Env, name: str) -> str:
    value = env.secret(name)
    if value is None:
        raise ConfigError(
            f"{name} (or {name}_FILE) is not set (required when its channel's API URL is set)"
        )
    return value


@dataclass(frozen=True)
class ChannelConfigs:
    # They carry credentials: kept out of repr (logs, errors).
    tiktok_shop: TikTokShopConfig | None = field(repr=False)
    shopify: ShopifyConfig | None = field(repr=False)
    amazon: AmazonConfig | None = field(repr=False)

    @classmethod
    def from_env(cls, env: Env) -> ChannelConfigs:
        timeout = env.number("CHANNEL_SYNC_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=120)
        tiktok = env.url("TIKTOK_SHOP_API_URL", ("http", "https"))
        shopify = env.url("SHOPIFY_API_URL", ("http", "https"))
        amazon = env.url("AMAZON_SP_API_URL", ("http", "https"))
        return cls(
            tiktok_shop=TikTokShopConfig(
                base_url=tiktok.rstrip("/"),
                app_key=_required(env, "TIKTOK_SHOP_APP_KEY"),
                app_secret=_required(env, "TIKTOK_SHOP_APP_SECRET"),
                access_token=_required(env, "TIKTOK_SHOP_ACCESS_TOKEN"),
                shop_cipher=_required(env, "TIKTOK_SHOP_SHOP_CIPHER"),
                warehouse_id=_required(env, "TIKTOK_SHOP_WAREHOUSE_ID"),
                timeout_s=timeout,
            )
            if tiktok
            else None,
            shopify=ShopifyConfig(
                base_url=shopify.rstrip("/"),
                access_token=_required(env, "SHOPIFY_ACCESS_TOKEN"),
                location_id=_required(env, "SHOPIFY_LOCATION_ID"),
                timeout_s=timeout,
            )
            if shopify
            else None,
            amazon=AmazonConfig(
                base_url=amazon.rstrip("/"),
                lwa_url=(
                    env.url("AMAZON_LWA_URL", ("http", "https")) or "https://api.amazon.com"
                ).rstrip("/"),
                client_id=_required(env, "AMAZON_CLIENT_ID"),
                client_secret=_required(env, "AMAZON_CLIENT_SECRET"),
                refresh_token=_required(env, "AMAZON_REFRESH_TOKEN"),
                seller_id=_required(env, "AMAZON_SELLER_ID"),
                marketplace_id=_required(env, "AMAZON_MARKETPLACE_ID"),
                product_type=env.string("AMAZON_PRODUCT_TYPE", "PRODUCT"),
                timeout_s=timeout,
            )
            if amazon
            else None,
        )

    def clients(self) -> dict[int, ChannelClient]:
        """Open a client per connected channel (inside the running event loop)."""
        clients: list[ChannelClient] = []
        if self.tiktok_shop:
            clients.append(TikTokShopClient(self.tiktok_shop))
        if self.shopify:
            clients.append(ShopifyClient(self.shopify))
        if self.amazon:
            clients.append(AmazonClient(self.amazon))
        return {client.channel: client for client in clients}
