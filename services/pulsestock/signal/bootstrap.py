"""Wiring of signal: its gRPC API, migrations and background roles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.signal.entrypoints.grpc_api import SignalServiceServicer
from pulsestock.v1 import signal_pb2, signal_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def register(server: grpc.aio.Server, _context: ServiceContext) -> Sequence[str]:
    servicer = SignalServiceServicer()  # type: ignore[abstract]
    signal_pb2_grpc.add_SignalServiceServicer_to_server(servicer, server)
    return [signal_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name]


def build() -> ServiceDefinition:
    return ServiceDefinition(name="signal", register=register, migrations_dir=MIGRATIONS)
