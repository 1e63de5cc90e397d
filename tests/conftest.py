from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import hypothesis
import nats
import pytest
from nats.aio.client import Client as NATS
from pulsestock.devstack.servers import EmbeddedNats
from pulsestock.eventstore.store import EventStore, connect_pool

from tests.helpers.infra import (
    Infra,
    create_event_store_schema,
    drop_schema,
    running_infra,
)

# CI (CI=true) draws the same Hypothesis examples every run, so a landing is not decided by
# a case no earlier run drew (a fresh clone once found one); and no per-example deadline, as
# CI's machine runs other work beside the suite. Local runs keep drawing new examples.
hypothesis.settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
    hypothesis.settings.load_profile("ci")


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with running_infra() as servers:
        yield servers


@pytest.fixture
async def schema(infra: Infra) -> AsyncIterator[str]:
    """A fresh schema with the event store tables, dropped after the test."""
    name = await create_event_store_schema(infra.database_url)
    yield name
    await drop_schema(infra.database_url, name)


@pytest.fixture
async def pool(infra: Infra, schema: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(infra.database_url, schema, max_size=20)
    yield pool
    await pool.close()


@pytest.fixture
async def store(pool: asyncpg.Pool, schema: str) -> EventStore:
    return EventStore(pool, schema)


@pytest.fixture
async def nc(infra: Infra) -> AsyncIterator[NATS]:
    client = await nats.connect(infra.nats_url)
    yield client
    await client.close()


@pytest.fixture
def nats_url(infra: Infra, tmp_path: Path) -> Iterator[str]:
    """A NATS server of this test's own, so a service's streams and consumers start empty."""
    server = EmbeddedNats(tmp_path)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()
