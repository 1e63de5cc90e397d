"""Wiring of inventory-sync: the ledger writer and its partition leases, the read model, hold
expiry, the order, pulse and warehouse-site consumers, channel sync, and the gRPC API."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import grpc
from pulsestock.bus import DurableConsumer, ensure_consumer, ensure_stream, service_stream
from pulsestock.clock import utc_now
from pulsestock.config import Env
from pulsestock.eventstore import ProjectionRunner
from pulsestock.inventory_sync.adapters.catalogue_store import CatalogueStore
from pulsestock.inventory_sync.adapters.channels.catalogue_readers import reader_for
from pulsestock.inventory_sync.adapters.channels.config import ChannelConfigs
from pulsestock.inventory_sync.adapters.leases import PartitionLeases
from pulsestock.inventory_sync.adapters.ledger_repository import LedgerRepository, outbox_route
from pulsestock.inventory_sync.adapters.unresolved_orders import UnresolvedOrders
from pulsestock.inventory_sync.application.catalogue import CatalogueService
from pulsestock.inventory_sync.application.channel_sync import (
    QUANTITY_CHANGES,
    ChannelSync,
    SyncPolicy,
)
from pulsestock.inventory_sync.application.expiry import run_expiry
from pulsestock.inventory_sync.application.read_model import InventoryReadModel
from pulsestock.inventory_sync.application.warehouse_sites import (
    WarehouseSites,
    refresh_channel_quantities,
)
from pulsestock.inventory_sync.application.writer import LedgerWriter
from pulsestock.inventory_sync.domain.ledger import OrderPolicy
from pulsestock.inventory_sync.entrypoints.catalogue_api import CatalogueServicer
from pulsestock.inventory_sync.entrypoints.consumers import (
    ORDERS,
    PULSES,
    WAREHOUSES,
    OrderEvents,
    PulseEvents,
)
from pulsestock.inventory_sync.entrypoints.grpc_api import InventorySyncServicer
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import (
    catalogue_pb2,
    catalogue_pb2_grpc,
    inventory_sync_pb2,
    inventory_sync_pb2_grpc,
)

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


@dataclass(frozen=True)
class InventorySettings:
    orders: OrderPolicy
    expiry_sweep_seconds: float
    max_batch: int
    channels: ChannelConfigs
    sync: SyncPolicy
    lease_rebalance_seconds: float
    sites_refresh_seconds: float = 5.0

    @classmethod
    def from_env(cls) -> InventorySettings:
        env = Env()
        return cls(
            orders=OrderPolicy(
                unpaid_hold=timedelta(
                    seconds=env.integer(
                        "INVENTORY_SYNC_HOLD_SECONDS", 600, minimum=1, maximum=7 * 86400
                    )
                ),
                authorized_hold=timedelta(
                    seconds=env.integer(
                        "INVENTORY_SYNC_AUTHORIZED_HOLD_SECONDS",
                        7 * 86400,
                        minimum=1,
                        maximum=30 * 86400,
                    )
                ),
                restock_returns=env.choice(
                    "INVENTORY_SYNC_RETURNS", "restock", ("restock", "write_off")
                )
                == "restock",
            ),
            expiry_sweep_seconds=env.number(
                "INVENTORY_SYNC_EXPIRY_SWEEP_SECONDS", 1.0, minimum=0.05, maximum=3600
            ),
            max_batch=env.integer("INVENTORY_SYNC_MAX_BATCH", 1000, minimum=1, maximum=100_000),
            channels=ChannelConfigs.from_env(env),
            lease_rebalance_seconds=env.number(
                "INVENTORY_SYNC_LEASE_REBALANCE_SECONDS", 2.0, minimum=0.05, maximum=600
            ),
            sites_refresh_seconds=env.number(
                "INVENTORY_SYNC_SITES_REFRESH_SECONDS", 5.0, minimum=0.05, maximum=3600
            ),
            sync=SyncPolicy(
                max_failures=env.integer("CHANNEL_SYNC_MAX_FAILURES", 8, minimum=1, maximum=100),
                reconcile_every_s=env.number(
                    "CHANNEL_SYNC_RECONCILE_SECONDS", 60.0, minimum=0.05, maximum=86400
                ),
                base_backoff_s=env.number(
                    "CHANNEL_SYNC_BASE_BACKOFF_SECONDS", 0.2, minimum=0.001, maximum=60
                ),
                max_backoff_s=env.number(
                    "CHANNEL_SYNC_MAX_BACKOFF_SECONDS", 60.0, minimum=0.01, maximum=3600
                ),
            ),
        )


class InventorySync:
    """The service's parts, created once the pool and NATS exist (`prepare`)."""

    def __init__(self, settings: InventorySettings) -> None:
        self.settings = settings
        self.context: ServiceContext | None = None

    async def prepare(self, context: ServiceContext) -> None:
        self.context = context
        settings = context.settings
        self.leases = PartitionLeases(
            settings.database_url,
            settings.schema,
            settings.partitions,
            rebalance_interval=self.settings.lease_rebalance_seconds,
        )
        if settings.roles is None or "writer" in settings.roles:
            await self.leases.start()  # only a process that writes takes partitions
        self.repository = LedgerRepository(context.store, settings.partitions)
        self.sites = WarehouseSites(context.pool, WAREHOUSES.durable)
        await self.sites.load()
        self.writer = LedgerWriter(
            self.repository,
            utc_now,
            hold=self.settings.orders.unpaid_hold,
            max_batch=self.settings.max_batch,
            owns=self.leases.owns_sku,
            sites=self.sites.current,
        )
        self.read_model = ProjectionRunner(
            context.store,
            InventoryReadModel(context.store, settings.partitions),
            dsn=settings.database_url,
        )
        self.sync = ChannelSync(
            context.pool,
            context.nc,
            self.settings.channels.clients(),
            utc_now,
            self.settings.sync,
            catalogue=CatalogueStore(context.store),
        )
        js = context.nc.jetstream()
        for consumed in ("ingest", "signal", "fulfillment"):
            await ensure_stream(js, service_stream(consumed))
        for spec in (ORDERS, PULSES, QUANTITY_CHANGES, WAREHOUSES):
            await ensure_consumer(js, spec)

    def register(self, server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
        inventory_sync_pb2_grpc.add_InventorySyncServiceServicer_to_server(
            InventorySyncServicer(self.writer, context.store, self.read_model, self.sync), server
        )
        catalogue_pb2_grpc.add_CatalogueServiceServicer_to_server(
            CatalogueServicer(
                CatalogueService(CatalogueStore(context.store), utc_now),
                UnresolvedOrders(context.pool),
                partial(reader_for, self.settings.channels),
            ),
            server,
        )
        return [
            inventory_sync_pb2.DESCRIPTOR.services_by_name["InventorySyncService"].full_name,
            catalogue_pb2.DESCRIPTOR.services_by_name["CatalogueService"].full_name,
        ]

    async def run_writer(self, context: ServiceContext, stop: asyncio.Event) -> None:
        refresh = asyncio.create_task(
            self.sites.refresh(
                stop,
                self.settings.sites_refresh_seconds,
                partial(
                    refresh_channel_quantities, context.pool, self.writer, self.leases.owns_sku
                ),
            )
        )
        try:
            await self.writer.run(stop)
        finally:
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)
            await self.repository.close()

    async def run_leases(self, context: ServiceContext, stop: asyncio.Event) -> None:
        await self.leases.run(stop)

    async def run_read_model(self, context: ServiceContext, stop: asyncio.Event) -> None:
        await self.read_model.run(stop)

    async def run_expiry(self, context: ServiceContext, stop: asyncio.Event) -> None:
        await run_expiry(
            context.pool, self.writer, utc_now, stop, self.settings.expiry_sweep_seconds
        )

    async def run_orders(self, context: ServiceContext, stop: asyncio.Event) -> None:
        orders = OrderEvents(
            self.writer,
            self.repository,
            self.settings.orders,
            CatalogueStore(context.store),
            UnresolvedOrders(context.pool),
        )
        redrive = asyncio.create_task(orders.follow_catalogue(stop))
        try:
            await DurableConsumer(
                context.nc, ORDERS, batch_handler=orders.handle_batch, batches_in_flight=2
            ).run(stop)
        finally:
            redrive.cancel()
            await asyncio.gather(redrive, return_exceptions=True)

    async def run_pulses(self, context: ServiceContext, stop: asyncio.Event) -> None:
        await DurableConsumer(context.nc, PULSES, PulseEvents(self.writer).handle).run(stop)

    async def run_warehouses(self, context: ServiceContext, stop: asyncio.Event) -> None:
        """Warehouse sites from fulfillment's master data, for placing reservations."""
        await DurableConsumer(context.nc, WAREHOUSES, self.sites.handle).run(stop)

    async def run_channel_sync(self, context: ServiceContext, stop: asyncio.Event) -> None:
        """The catalogue, then intake, and a pusher and a reconciler per connected channel."""
        await self.sync.refresh_catalogue()  # before any intake: which channels are mapped
        intake = DurableConsumer(context.nc, QUANTITY_CHANGES, self.sync.intake, concurrent=True)
        tasks = [
            asyncio.create_task(intake.run(stop)),
            asyncio.create_task(self.sync.follow_catalogue(stop)),
        ]
        for channel in self.sync.clients:
            tasks.append(asyncio.create_task(self.sync.run_pusher(channel, stop)))
            tasks.append(asyncio.create_task(self.sync.run_reconciler(channel, stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in self.sync.clients.values():
                await client.close()


def build() -> ServiceDefinition:
    service = InventorySync(InventorySettings.from_env())
    return ServiceDefinition(
        name="inventory-sync",
        register=service.register,
        grpc_port=50054,
        migrations_dir=MIGRATIONS,
        prepare=service.prepare,
        outbox_route=outbox_route,
        roles=[
            service.run_writer,
            service.run_leases,
            service.run_read_model,
            service.run_expiry,
            service.run_orders,
            service.run_pulses,
            service.run_warehouses,
            service.run_channel_sync,
        ],
    )
