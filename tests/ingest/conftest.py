from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pulsestock.v1 import ingest_pb2_grpc

from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import RunningService, running_service


@pytest.fixture
def ingest_env() -> dict[str, str]:
    """Tests override to configure the service (e.g. webhook secrets)."""
    return {}


@pytest.fixture
async def ingest(
    infra: Infra, nats_url: str, ingest_env: dict[str, str]
) -> AsyncIterator[RunningService]:
    schema = unique_name("ing")
    # No reconcile rounds: these tests count the events their own deliveries cause.
    env = {"INGEST_RECONCILE_SECONDS": "0", **ingest_env}
    async with running_service("ingest", infra.database_url, nats_url, schema, env) as service:
        yield service
    await drop_schema(infra.database_url, schema)


@pytest.fixture
def stub(ingest: RunningService) -> ingest_pb2_grpc.IngestServiceStub:
    return ingest_pb2_grpc.IngestServiceStub(ingest.channel)
