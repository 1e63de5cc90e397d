"""Wiring of fulfillment: master data, replenishment reviews, purchase orders, routing and
transfers over gRPC, the forecast.updated consumer, the orders-by-channel-and-region
consumer (demand shares for transfers), the review schedule, the receipts-to-stock process
manager, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc
from pulsestock.bus import (
    ConsumerSpec,
    DurableConsumer,
    ensure_consumer,
    ensure_stream,
    service_stream,
)
from pulsestock.bus.consumer import idempotent
from pulsestock.clock import utc_now
from pulsestock.config import Env, peer_address
from pulsestock.fulfillment.adapters.forecast_client import ForecastClient
from pulsestock.fulfillment.adapters.inventory_sync_client import InventorySyncClient
from pulsestock.fulfillment.application.demand_shares import ORDERS, DemandShares
from pulsestock.fulfillment.application.master_records import MasterRecords
from pulsestock.fulfillment.application.planner import PlannerSettings, ReplenishmentPlanner
from pulsestock.fulfillment.application.purchase_orders import PurchaseOrders
from pulsestock.fulfillment.application.receipts import run_receipts
from pulsestock.fulfillment.application.router import OrderRouter
from pulsestock.fulfillment.application.transfers import TransferPlanner, TransferPlannerSettings
from pulsestock.fulfillment.entrypoints.grpc_api import FulfillmentServiceServicer
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import fulfillment_pb2, fulfillment_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
FORECASTS = ConsumerSpec(
    stream=service_stream("forecast").name,
    durable="fulfillment__forecasts",
    filter_subjects=["forecast.updated.>"],
    max_deliver=8,
)


def outlook_hours(env: Env) -> int:
    """How far reviews and transfer plans read the forecast."""
    return env.integer("FULFILLMENT_OUTLOOK_HOURS", 1440, minimum=24, maximum=8760)


def planner_settings(env: Env) -> PlannerSettings:
    return PlannerSettings(
        outlook_hours=outlook_hours(env),
        pulse_review=timedelta(
            minutes=env.integer("FULFILLMENT_PULSE_REVIEW_MINUTES", 60, minimum=1, maximum=1440)
        ),
        quiet_review=timedelta(
            hours=env.integer("FULFILLMENT_QUIET_REVIEW_HOURS", 24, minimum=1, maximum=720)
        ),
    )


def transfer_settings(env: Env) -> TransferPlannerSettings:
    return TransferPlannerSettings(
        outlook_hours=outlook_hours(env),
        coverage_hours=env.integer(
            "FULFILLMENT_TRANSFER_COVERAGE_HOURS", 7 * 24, minimum=1, maximum=8760
        ),
    )


class Fulfillment:
    def __init__(self) -> None:
        env = Env()
        self.inventory = InventorySyncClient(peer_address(env, "inventory-sync", 50054))
        self.forecasts = ForecastClient(peer_address(env, "forecast", 50053))
        self.settings = planner_settings(env)
        self.transfer_settings = transfer_settings(env)

    async def prepare(self, context: ServiceContext) -> None:
        self.orders = PurchaseOrders(context.store)
        self.master = MasterRecords(context.store)
        self.planner = ReplenishmentPlanner(
            context.store,
            self.master,
            self.orders,
            self.forecasts,
            self.inventory,
            utc_now,
            self.settings,
        )
        self.shares = DemandShares(context.pool, utc_now)
        self.transfers = TransferPlanner(
            context.store,
            self.master,
            self.shares,
            self.forecasts,
            self.inventory,
            utc_now,
            self.transfer_settings,
        )
        js = context.nc.jetstream()
        await ensure_stream(js, service_stream("forecast"))
        await ensure_consumer(js, FORECASTS)
        await ensure_stream(js, service_stream("ingest"))
        await ensure_consumer(js, ORDERS)

    def register(self, server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
        router = OrderRouter(context.store, self.master, self.inventory, utc_now)
        servicer = FulfillmentServiceServicer(
            self.orders, self.master, self.planner, router, self.transfers
        )
        fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(servicer, server)
        return [fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name]

    async def run_forecasts(self, context: ServiceContext, stop: asyncio.Event) -> None:
        handler = idempotent(context.pool, FORECASTS.durable, self.planner.mark_due)
        await DurableConsumer(context.nc, FORECASTS, handler, batch=100).run(stop)

    async def run_order_shares(self, context: ServiceContext, stop: asyncio.Event) -> None:
        handler = idempotent(context.pool, ORDERS.durable, self.shares.record)
        await DurableConsumer(context.nc, ORDERS, handler, batch=100).run(stop)

    async def run_reviews(self, context: ServiceContext, stop: asyncio.Event) -> None:
        try:
            await self.planner.run(stop)
        finally:
            await self.forecasts.close()

    async def run_receipts(self, context: ServiceContext, stop: asyncio.Event) -> None:
        try:
            await run_receipts(
                context.store, self.inventory, stop, dsn=context.settings.database_url
            )
        finally:
            await self.inventory.close()


def build() -> ServiceDefinition:
    service = Fulfillment()
    return ServiceDefinition(
        name="fulfillment",
        register=service.register,
        grpc_port=50055,
        migrations_dir=MIGRATIONS,
        prepare=service.prepare,
        roles=[
            service.run_forecasts,
            service.run_order_shares,
            service.run_reviews,
            service.run_receipts,
        ],
    )
