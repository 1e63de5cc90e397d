"""Wiring of ingest: its gRPC API, the channel order webhooks, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from pulsestock.config import Env
from pulsestock.ingest.adapters.tiktok_orders import TikTokOrders, TikTokOrdersConfig
from pulsestock.ingest.application.channel_orders import ChannelOrders
from pulsestock.ingest.application.ingestion import Ingestion
from pulsestock.ingest.entrypoints.grpc_api import IngestServiceServicer
from pulsestock.ingest.entrypoints.webhooks import (
    RETRY_HORIZONS,
    Webhooks,
    WebhookSecrets,
    serve_http,
)
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import ingest_pb2, ingest_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IngestSettings:
    secrets: WebhookSecrets
    tiktok_orders: TikTokOrdersConfig | None

    @classmethod
    def from_env(cls) -> IngestSettings:
        env = Env()
        tiktok_url = env.url("TIKTOK_SHOP_API_URL", ("http", "https"))
        key, secret = env.raw("TIKTOK_SHOP_APP_KEY"), env.raw("TIKTOK_SHOP_APP_SECRET")
        token, cipher = env.raw("TIKTOK_SHOP_ACCESS_TOKEN"), env.raw("TIKTOK_SHOP_SHOP_CIPHER")
        return cls(
            secrets=WebhookSecrets(
                tiktok_app_key=key,
                tiktok_app_secret=secret,
                shopify_secret=env.raw("SHOPIFY_WEBHOOK_SECRET"),
                amazon_token=env.raw("AMAZON_WEBHOOK_TOKEN"),
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
            tiktok_orders=TikTokOrdersConfig(tiktok_url.rstrip("/"), key, secret, token, cipher)
            if tiktok_url and key and secret and token and cipher
            else None,
        )


class Ingest:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings

    async def prepare(self, context: ServiceContext) -> None:
        self.ingestion = Ingestion(context.store, utc_now, context.settings.partitions)
        orders = self.settings.tiktok_orders
        self.tiktok_orders = TikTokOrders(orders) if orders else None
        channel_orders = ChannelOrders(context.store, context.settings.partitions)
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


def build() -> ServiceDefinition:
    service = Ingest(IngestSettings.from_env())
    return ServiceDefinition(
        name="ingest",
        register=service.register,
        grpc_port=50051,
        http_port=8080,
        migrations_dir=MIGRATIONS,
        prepare=service.prepare,
        roles=[service.run_http],
    )
