from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pulsestock.config import ServiceSettings
from pulsestock.devstack.servers import free_port
from pulsestock.runtime import ServiceDefinition, run_service
from pulsestock.services import definition_of

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, service_env
from tests.security.pki import Pki, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@contextmanager
def environment(values: dict[str, str], remove: tuple[str, ...] = ()) -> Iterator[None]:
    """os.environ with `values` set and `remove` unset, restored afterwards."""
    names = (*values, *remove)
    saved = {name: os.environ.get(name) for name in names}
    for name in remove:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def settings_of(service: str, env: dict[str, str]) -> tuple[ServiceDefinition, ServiceSettings]:
    """The service's definition and settings built from exactly `env` over os.environ."""
    with environment(env):
        definition = definition_of(service)
        return definition, definition.settings_from_env()


async def health_serving(channel: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@asynccontextmanager
async def service_running(
    service: str, infra: Infra, nats_url: str, extra_env: dict[str, str]
) -> AsyncIterator[ServiceSettings]:
    """The service in this event loop, ready when its plaintext health port says SERVING
    (its gRPC port may speak TLS only)."""
    schema = unique_name(service.replace("-", "_")[:8])
    prefix = service.upper().replace("-", "_")
    env = {
        **service_env(service, infra.database_url, nats_url, schema, free_port(), {}),
        f"{prefix}_HEALTH_PORT": str(free_port()),
        **extra_env,
    }
    definition, settings = settings_of(service, env)
    await migrate(infra.database_url, service, schema)
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(definition, settings, stop))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.health_port}") as probe:

            async def up() -> bool:
                if task.done():
                    task.result()  # raise what stopped it
                return await health_serving(probe)

            await eventually(up, within=20, what=f"{service} SERVING")
        yield settings
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await drop_schema(infra.database_url, schema)
