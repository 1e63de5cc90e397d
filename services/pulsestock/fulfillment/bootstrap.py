"""Wiring of fulfillment: purchase orders over gRPC, the receipts-to-stock process manager,
migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc
from pulsestock.config import Env
from pulsestock.fulfillment.adapters.inventory_sync_client import InventorySyncClient
from pulsestock.fulfillment.application.purchase_orders import PurchaseOrders
from pulsestock.fulfillment.application.receipts import run_receipts
from pulsestock.fulfillment.entrypoints.grpc_api import FulfillmentServiceServicer
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import fulfillment_pb2, fulfillment_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
INVENTORY_SYNC_DEFAULT_PORT = 50054


def inventory_sync_address(env: Env | None = None) -> str:
    """INVENTORY_SYNC_ADDR (host:port), else inventory-sync's own port on this host, as
    `make run` starts it."""
    env = env or Env()
    port = env.port("INVENTORY_SYNC_GRPC_PORT", INVENTORY_SYNC_DEFAULT_PORT)
    return env.string("INVENTORY_SYNC_ADDR", f"127.0.0.1:{port}")


class Fulfillment:
    def __init__(self) -> None:
        self.inventory_address = inventory_sync_address()

    def register(self, server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
        # Replenishment, routing and transfers answer UNIMPLEMENTED until they land.
        servicer = FulfillmentServiceServicer(PurchaseOrders(context.store))  # type: ignore[abstract]
        fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(servicer, server)
        return [fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name]

    async def run_receipts(self, context: ServiceContext, stop: asyncio.Event) -> None:
        inventory = InventorySyncClient(self.inventory_address)
        try:
            await run_receipts(context.store, inventory, stop, dsn=context.settings.database_url)
        finally:
            await inventory.close()


def build() -> ServiceDefinition:
    service = Fulfillment()
    return ServiceDefinition(
        name="fulfillment",
        register=service.register,
        grpc_port=50055,
        migrations_dir=MIGRATIONS,
        roles=[service.run_receipts],
    )
