"""Wiring of forecast: its gRPC API, migrations and background roles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from pulsestock.forecast.entrypoints.grpc_api import ForecastServiceServicer
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import forecast_pb2, forecast_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def register(server: grpc.aio.Server, _context: ServiceContext) -> Sequence[str]:
    servicer = ForecastServiceServicer()  # type: ignore[abstract]
    forecast_pb2_grpc.add_ForecastServiceServicer_to_server(servicer, server)
    return [forecast_pb2.DESCRIPTOR.services_by_name["ForecastService"].full_name]


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="forecast", register=register, grpc_port=50053, migrations_dir=MIGRATIONS
    )
