"""Wiring of inventory-sync: its gRPC API, migrations and background roles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from pulsestock.inventory_sync.entrypoints.grpc_api import InventorySyncServicer
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import inventory_sync_pb2, inventory_sync_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def register(server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
    inventory_sync_pb2_grpc.add_InventorySyncServiceServicer_to_server(
        InventorySyncServicer(context.store), server
    )
    return [inventory_sync_pb2.DESCRIPTOR.services_by_name["InventorySyncService"].full_name]


def build() -> ServiceDefinition:
    return ServiceDefinition(name="inventory-sync", register=register, migrations_dir=MIGRATIONS)
