"""Wiring of ingest: its gRPC API, the channel order webhooks, the order reconciler,
migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
from pulsestock.clock import utc_now
from pulsestock.config import Env
from pulsestock.ingest.adapters.order_sources import (
    SHOPIFY_API_VERSION,
    AmazonOrders,
    AmazonOrdersConfig,
    OrderSource,
    ShopifyOrders,
    ShopifyOrdersConfig,
    TikTokOrderSearch,
    TikTokSearchConfig,
)
from pulsestock.ingest.adapters.tiktok_orders import TikTokOrders, TikTokOrdersConfig
from pulsestock.ingest.application.channel_orders import ChannelOrders
from pulsestock.ingest.application.ingestion import Ingestion
from pulsestock.ingest.application.reconciler import Reconciler
from pulsestock.ingest.entrypoints.grpc_api import IngestServiceServicer
from pulsestock.ingest.entrypoints.webhooks import (
    RETRY_HORIZONS,
    Webhooks,
    WebhookSecrets,
    serve_http,
)
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.telemetry import get_logger
from pulsestock.v1 import ingest_pb2, ingest_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
log = get_logger(__name__)


def _every(env: Env, names: tuple[str, ...]) -> list[str] | None:
    """The values of all of `names` (each from NAME or the file NAME_FILE names), or None
    when one is unset."""
    values = [env.secret(name) for name in names]
    return [value for value in values if value] if all(values) else None


@dataclass(frozen=True)
class ReconcileSettings:
    """The reconciler pulls from every channel whose order API is fully configured (the same
    variables inventory-sync's channel clients use); 0 seconds turns it off."""

    interval_s: float
    overlap: timedelta
    lookback: timedelta
    # The channel configurations carry credentials: kept out of repr (logs, errors).
    tiktok_shop: TikTokSearchConfig | None = field(repr=False)
    shopify: ShopifyOrdersConfig | None = field(repr=False)
    amazon: AmazonOrdersConfig | None = field(repr=False)

    @classmethod
    def from_env(cls, env: Env) -> ReconcileSettings:
        tiktok_url = env.url("TIKTOK_SHOP_API_URL", ("http", "https"))
        tiktok = _every(
            env,
            (
                "TIKTOK_SHOP_APP_KEY",
                "TIKTOK_SHOP_APP_SECRET",
                "TIKTOK_SHOP_ACCESS_TOKEN",
                "TIKTOK_SHOP_SHOP_CIPHER",
            ),
        )
        shopify_url = env.url("SHOPIFY_API_URL", ("http", "https"))
        shopify_token = env.secret("SHOPIFY_ACCESS_TOKEN")
        amazon_url = env.url("AMAZON_SP_API_URL", ("http", "https"))
        amazon = _every(
            env,
            (
                "AMAZON_CLIENT_ID",
                "AMAZON_CLIENT_SECRET",
                "AMAZON_REFRESH_TOKEN",
                "AMAZON_MARKETPLACE_ID",
            ),
        )
        lwa_url = env.url("AMAZON_LWA_URL", ("http", "https")) or "https://api.amazon.com"
        return cls(
            interval_s=env.number("INGEST_RECONCILE_SECONDS", 300.0, minimum=0, maximum=86400),
            overlap=timedelta(
                seconds=env.number(
                    "INGEST_RECONCILE_OVERLAP_SECONDS", 600.0, minimum=0, maximum=86400
                )
            ),
            lookback=timedelta(
                seconds=env.number(
                    "INGEST_RECONCILE_LOOKBACK_SECONDS", 3 * 86400.0, minimum=60, maximum=30 * 86400
                )
            ),
            tiktok_shop=TikTokSearchConfig(
                tiktok_url.rstrip("/"),
                app_key=tiktok[0],
                app_secret=tiktok[1],
                access_token=tiktok[2],
                shop_cipher=tiktok[3],
            )
            if tiktok_url and tiktok
            else None,
            shopify=ShopifyOrdersConfig(
                shopify_url.rstrip("/"),
                shopify_token,
                # The REST Order API is legacy: a version still served by the shop's Shopify.
                api_version=env.string("SHOPIFY_ORDERS_API_VERSION", SHOPIFY_API_VERSION),
            )
            if shopify_url and shopify_token
            else None,
            amazon=AmazonOrdersConfig(
                amazon_url.rstrip("/"),
                lwa_url.rstrip("/"),
                client_id=amazon[0],
                client_secret=amazon[1],
                refresh_token=amazon[2],
                marketplace_id=amazon[3],
            )
            if amazon_url and amazon
            else None,
        )

    def sources(self) -> list[OrderSource]:
        """One client per configured channel (inside the running event loop)."""
        sources: list[OrderSource] = []
        if self.tiktok_shop:
            sources.append(TikTokOrderSearch(self.tiktok_shop))
        if self.shopify:
            sources.append(ShopifyOrders(self.shopify))
        if self.amazon:
            sources.append(AmazonOrders(self.amazon))
        return sources


@dataclass(frozen=True)
class IngestSettings:
    secrets: WebhookSecrets = field(repr=False)
    tiktok_orders: TikTokOrdersConfig | None = field(repr=False)
    reconcile: ReconcileSettings

    @classmethod
    def from_env(cls) -> IngestSettings:
        env = Env()
        key, secret = env.raw("TIKTOK_SHOP_APP_KEY"), env.secret("TIKTOK_SHOP_APP_SECRET")
        reconcile = ReconcileSettings.from_env(env)
        tiktok = reconcile.tiktok_shop  # the same credentials serve the order detail lookup
        return cls(
            secrets=WebhookSecrets(
                tiktok_app_key=key,
                tiktok_app_secret=secret,
                shopify_secret=env.secret("SHOPIFY_WEBHOOK_SECRET"),
                amazon_token=env.secret("AMAZON_WEBHOOK_TOKEN"),
                max_age={
                    source: timedelta(
                        seconds=env.integer(
                            f"WEBHOOK_MAX_AGE_SECONDS_{source.upper()}",
                            int(horizon.total_seconds()),
                            minimum=60,
                            maximum=14 * 86400,
                        )
                    )
                    for source, horizon in RETRY_HORIZONS.items()
                },
            ),
            tiktok_orders=TikTokOrdersConfig(
                tiktok.base_url,
                tiktok.app_key,
                tiktok.app_secret,
                tiktok.access_token,
                tiktok.shop_cipher,
            )
            if tiktok
            else None,
            reconcile=reconcile,
        )


class Ingest:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings

    async def prepare(self, context: ServiceContext) -> None:
        self.ingestion = Ingestion(context.store, utc_now, context.settings.partitions)
        orders = self.settings.tiktok_orders
        self.tiktok_orders = TikTokOrders(orders) if orders else None
        channel_orders = ChannelOrders(context.store, context.settings.partitions)
        self.channel_orders = channel_orders
        self.webhooks = Webhooks(channel_orders, self.settings.secrets, utc_now, self.tiktok_orders)

    def register(self, server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
        servicer = IngestServiceServicer(self.ingestion)
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
        return [ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name]

    async def run_http(self, context: ServiceContext, stop: asyncio.Event) -> None:
        try:
            await serve_http(self.webhooks, context, stop)
        finally:
            if self.tiktok_orders is not None:
                await self.tiktok_orders.close()

    async def run_reconciler(self, context: ServiceContext, stop: asyncio.Event) -> None:
        settings = self.settings.reconcile
        sources = settings.sources() if settings.interval_s > 0 else []
        if not sources:
            log.info("reconciler off", interval_s=settings.interval_s)
            await stop.wait()  # a role that returns would stop the service
            return
        reconciler = Reconciler(
            self.channel_orders,
            context.pool,
            sources,
            utc_now,
            overlap=settings.overlap,
            lookback=settings.lookback,
        )
        try:
            await reconciler.run(settings.interval_s, stop)
        finally:
            await reconciler.close()


def build() -> ServiceDefinition:
    service = Ingest(IngestSettings.from_env())
    return ServiceDefinition(
        name="ingest",
        register=service.register,
        grpc_port=50051,
        http_port=8080,
        migrations_dir=MIGRATIONS,
        prepare=service.prepare,
        roles=[service.run_http, service.run_reconciler],
    )
