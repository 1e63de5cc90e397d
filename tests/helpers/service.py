"""Run a real service in the test's event loop (or as a real process) against real servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pulsestock.config import ServiceSettings, env_prefix
from pulsestock.devstack.servers import free_port
from pulsestock.eventstore import EventStore
from pulsestock.eventstore.migrations import apply_migrations
from pulsestock.eventstore.store import connect_pool
from pulsestock.runtime import run_service
from pulsestock.services import definition_of

from tests.helpers.infra import drop_schema, eventually, unique_name


async def migrate(database_url: str, service: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn, schema, definition_of(service).migrations())
    finally:
        await conn.close()


@asynccontextmanager
async def service_store(database_url: str, service: str) -> AsyncIterator[EventStore]:
    """A fresh schema with the service's migrations and a store over it, for driving the
    service's application layer directly; dropped afterwards."""
    schema = unique_name(service.replace("-", "_")[:8])
    await migrate(database_url, service, schema)
    pool = await connect_pool(database_url, schema, max_size=4)
    try:
        yield EventStore(pool, schema)
    finally:
        await pool.close()
        await drop_schema(database_url, schema)


async def serving(port: int) -> bool:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


@dataclass
class RunningService:
    settings: ServiceSettings
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"


def service_env(
    service: str, database_url: str, nats_url: str, schema: str, port: int, extra: dict[str, str]
) -> dict[str, str]:
    prefix = env_prefix(service)
    return {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        f"{prefix}_GRPC_PORT": str(port),
        f"{prefix}_DB_SCHEMA": schema,
        f"{prefix}_HTTP_PORT": str(free_port()),
        "LOG_LEVEL": "warning",
        **extra,
    }


@asynccontextmanager
async def running_service(
    service: str,
    database_url: str,
    nats_url: str,
    schema: str,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[RunningService]:
    """The service in this event loop, on a free port, with its own schema."""
    port = free_port()
    env = service_env(service, database_url, nats_url, schema, port, extra_env or {})
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        definition = definition_of(service)
        settings = definition.settings_from_env()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    await migrate(database_url, service, schema)
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(definition, settings, stop))

    async def up() -> bool:
        if task.done():
            task.result()  # raise what stopped it
        return await serving(port)

    await eventually(up, within=20, what=f"{service} SERVING")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            yield RunningService(settings, channel)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def start_service_process(
    service: str, database_url: str, nats_url: str, schema: str, port: int, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    """The service as a real process (for tests that kill it)."""
    env = {**os.environ, **service_env(service, database_url, nats_url, schema, port, extra)}
    module = f"pulsestock.{service.replace('-', '_')}"
    return subprocess.Popen([sys.executable, "-m", module], env=env)
