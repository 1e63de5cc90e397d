"""Wiring of fulfillment: its gRPC API, migrations and background roles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from pulsestock.fulfillment.entrypoints.grpc_api import FulfillmentServiceServicer
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import fulfillment_pb2, fulfillment_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def register(server: grpc.aio.Server, _context: ServiceContext) -> Sequence[str]:
    servicer = FulfillmentServiceServicer()  # type: ignore[abstract]
    fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(servicer, server)
    return [fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name]


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="fulfillment", register=register, grpc_port=50055, migrations_dir=MIGRATIONS
    )
