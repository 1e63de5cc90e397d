"""Wiring of ingest: its gRPC API, HTTP webhooks, migrations and background roles."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
from pulsestock.ingest.application.ingestion import Ingestion
from pulsestock.ingest.entrypoints.grpc_api import IngestServiceServicer
from pulsestock.ingest.entrypoints.webhooks import serve_http
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.v1 import ingest_pb2, ingest_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def utc_now() -> datetime:
    return datetime.now(UTC)


def register(server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
    ingestion = Ingestion(context.store, utc_now, context.settings.partitions)
    servicer = IngestServiceServicer(ingestion)
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
    return [ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name]


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="ingest", register=register, migrations_dir=MIGRATIONS, roles=[serve_http]
    )
