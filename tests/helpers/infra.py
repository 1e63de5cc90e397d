"""Real PostgreSQL and NATS for tests and benchmarks: the servers in DATABASE_URL / NATS_URL
when set, else embedded ones started once per session on free ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pulsestock.bus.codec import Envelope
from pulsestock.devstack.servers import EmbeddedNats, EmbeddedPostgres
from pulsestock.eventstore.migrations import apply_migrations, event_store_migrations


@dataclass(frozen=True)
class Infra:
    database_url: str
    nats_url: str


@contextmanager
def running_infra(*, durable: bool = False) -> Iterator[Infra]:
    """`durable=False` turns fsync off (tests); benchmarks keep PostgreSQL's defaults."""
    database_url = os.environ.get("DATABASE_URL")
    nats_url = os.environ.get("NATS_URL")
    data_dir = Path(tempfile.mkdtemp(prefix="pulsestock-test-"))
    postgres = nats = None
    try:
        if not database_url:
            postgres = EmbeddedPostgres(data_dir, fast=not durable)
            postgres.start()
            database_url = postgres.url
        if not nats_url:
            nats = EmbeddedNats(data_dir)
            nats.start()
            nats_url = nats.url
        yield Infra(database_url, nats_url)
    finally:
        if nats:
            nats.stop()
        if postgres:
            postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def create_event_store_schema(database_url: str, prefix: str = "t") -> str:
    schema = unique_name(prefix)
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn, schema, event_store_migrations())
    finally:
        await conn.close()
    return schema


async def drop_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def eventually(
    condition: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    """Wait for an async condition with a deadline (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


EFFECTS_TABLE = "CREATE TABLE effects (event_id text PRIMARY KEY, times int NOT NULL)"


async def count_effect(conn: asyncpg.Connection, envelope: Envelope) -> None:
    """A consumer effect that counts how often each event was applied (to catch doubles)."""
    await conn.execute(
        "INSERT INTO effects VALUES ($1, 1)"
        " ON CONFLICT (event_id) DO UPDATE SET times = effects.times + 1",
        envelope.event_id,
    )
