"""The life of a service process, the same for all five: settings, telemetry, pool, NATS,
streams, gRPC server, background roles (outbox relay, projections, consumers), and a
graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
from nats.aio.client import Client as NATS
from pulsestock.bus.codec import subject_for
from pulsestock.bus.provision import DEAD_LETTERS, StreamSpec, ensure_stream, service_stream
from pulsestock.config import ConfigError, NatsSettings, ServiceSettings, redact
from pulsestock.eventstore.events import NewEvent
from pulsestock.eventstore.migrations import Migration, event_store_migrations, load_migrations
from pulsestock.eventstore.store import EventStore, OutboxRoute, connect_pool
from pulsestock.grpckit.server import GrpcServer
from pulsestock.metrics import InfrastructureGauges, serve_metrics
from pulsestock.outbox import OutboxRelay
from pulsestock.telemetry import configure_logging, configure_telemetry, get_logger

log = get_logger(__name__)


@dataclass
class ServiceContext:
    settings: ServiceSettings
    pool: asyncpg.Pool
    nc: NATS
    store: EventStore


Role = Callable[[ServiceContext, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class ServiceDefinition:
    name: str
    register: Callable[[grpc.aio.Server, ServiceContext], Sequence[str]]
    # Where it listens unless <SERVICE>_GRPC_PORT / <SERVICE>_HTTP_PORT say otherwise; each
    # service declares its own, so the shared code keeps no table of services.
    grpc_port: int
    http_port: int | None = None  # only a service with an HTTP listener has one
    migrations_dir: Path | None = None
    roles: list[Role] = field(default_factory=list)
    extra_streams: list[StreamSpec] = field(default_factory=list)
    # Runs once the pool and NATS are up, before the gRPC server accepts calls.
    prepare: Callable[[ServiceContext], Awaitable[None]] | None = None
    # Which appended events leave through the outbox, and on which subject.
    outbox_route: Callable[[int], OutboxRoute] | None = None

    def migrations(self) -> list[Migration]:
        service_migrations = (
            load_migrations(self.name, self.migrations_dir) if self.migrations_dir else []
        )
        return [*event_store_migrations(), *service_migrations]

    def settings_from_env(self, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        return ServiceSettings.from_env(
            self.name, environ, default_grpc_port=self.grpc_port, default_http_port=self.http_port
        )


def stream_entity(stream_id: str) -> str:
    """`sku-ABC-1` -> `ABC-1`: streams are named `category-id`; the id picks the partition."""
    return stream_id.split("-", 1)[1] if "-" in stream_id else stream_id


def default_outbox_route(service: str, partitions: int) -> Callable[[str, NewEvent], str]:
    def route(stream_id: str, event: NewEvent) -> str:
        return subject_for(service, event.type, stream_entity(stream_id), partitions)

    return route


def _default_route(service: str) -> Callable[[int], OutboxRoute]:
    return lambda partitions: default_outbox_route(service, partitions)


def role_name(role: Role) -> str:
    """`run_read_model` -> `read_model`; the outbox relay is `relay`."""
    name = getattr(role, "__name__", "role")
    return "relay" if name == "_relay_role" else name.removeprefix("run_")


def selected_roles(definition: ServiceDefinition, wanted: frozenset[str] | None) -> list[Role]:
    """Every role, or those PULSESTOCK_ROLES names (e.g. the read side in its own process)."""
    roles: list[Role] = [_relay_role, *definition.roles]
    if wanted is None:
        return roles
    known = {role_name(role) for role in roles}
    unknown = wanted - known
    if unknown:
        raise ConfigError(
            f"PULSESTOCK_ROLES names {', '.join(sorted(unknown))}; {definition.name} has"
            f" {', '.join(sorted(known))}"
        )
    return [role for role in roles if role_name(role) in wanted]


async def _relay_role(context: ServiceContext, stop: asyncio.Event) -> None:
    relay = OutboxRelay(
        context.pool, context.nc, context.settings.schema, dsn=context.settings.database_url
    )
    await relay.run(stop)


class NatsRefused(nats.errors.Error):
    """NATS turned the connection away for a reason retrying will not fix (credentials,
    certificates): the service stops at start-up instead of retrying for ever."""


def _refusal(error: BaseException) -> str | None:
    if isinstance(error, nats.errors.AuthorizationError) or (
        isinstance(error, nats.errors.Error) and "authorization violation" in str(error).lower()
    ):
        return "NATS refused the credentials (authorization violation)"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"NATS's TLS certificate was not accepted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS with NATS failed: {error.reason or error.__class__.__name__}"
    return None


async def connect_nats(settings: ServiceSettings) -> NATS:
    """Connect with the settings' credentials and TLS. While NATS is unreachable, keep trying
    (it may be starting too); refused credentials or certificates fail at once, naming the
    server (without its secrets). Errors are logged in one line, never with a traceback."""
    nats_settings = settings.nats or NatsSettings(url=settings.nats_url)
    where = redact(nats_settings.url)
    nc = NATS()
    last_logged: list[str] = []  # the error last logged since the connection was last up
    # Only the first connection fails fast: nats-py marks every handshake CONNECTING, its
    # reconnections too, and raising there would end its reconnect loop for good.
    starting = [True]

    async def on_error(error: Exception) -> None:
        refusal = _refusal(error)
        if refusal is not None and starting[0]:
            raise NatsRefused(f"{refusal} at {where}")
        message = refusal or _describe(error)
        if last_logged != [message]:  # once per kind of failure, not once per retry
            last_logged[:] = [message]
            log.warning("nats error", server=where, error=message)

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):  # not our own stop
            log.warning("nats disconnected", server=where)

    async def on_reconnected() -> None:
        last_logged.clear()
        log.info("nats reconnected", server=where)

    try:
        await nc.connect(
            nats_settings.url,
            name=settings.service,
            max_reconnect_attempts=-1,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            **nats_settings.connect_options(),
        )
    except BaseException:
        # Bounded: closing after a failed TLS handshake can wait for ever on the transport.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)
        raise
    starting[0] = False
    return nc


def _describe(error: BaseException) -> str:
    """One line for a log: the message, else the exception's name (nats-py raises some
    without a message)."""
    return str(error) or error.__class__.__name__


async def run_service(
    definition: ServiceDefinition,
    settings: ServiceSettings,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, or until `stop` is set when the caller passes one."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        tls=settings.server_tls,
        health_port=settings.health_port,
    )
    try:
        pool = await connect_pool(
            settings.database_url, settings.schema, application_name=settings.service
        )
    except BaseException:
        await server.stop()
        raise
    try:
        nc = await connect_nats(settings)
    except BaseException:
        await pool.close()
        await server.stop()
        raise
    try:
        js = nc.jetstream()
        for spec in (service_stream(settings.service), DEAD_LETTERS, *definition.extra_streams):
            await ensure_stream(js, spec)
        store = EventStore(
            pool,
            settings.schema,
            source=f"/pulsestock/{settings.service}",
            outbox_route=(definition.outbox_route or _default_route(settings.service))(
                settings.partitions
            ),
        )
        context = ServiceContext(settings, pool, nc, store)
        if definition.prepare is not None:
            await definition.prepare(context)
        server.add_services(lambda s: definition.register(s, context))
        await server.start()
        log.info(
            "serving",
            grpc=server.address,
            tls="off" if settings.server_tls is None else _tls_mode(settings),
            health=server.health_address,
            database=redact(settings.database_url),
            nats=redact(settings.nats_url),
        )
        tasks = [
            asyncio.create_task(role(context, stop), name=role_name(role))
            for role in selected_roles(definition, settings.roles)
        ]
        if settings.metrics_port is not None:
            tasks += _metrics_tasks(settings, settings.metrics_port, pool, nc, stop)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                log.error(
                    "role failed, stopping", role=task.get_name(), error=repr(task.exception())
                )
        stop.set()
        log.info("draining", grace_seconds=settings.shutdown_grace_seconds)
        await server.drain(settings.shutdown_grace_seconds)
        await asyncio.wait(tasks, timeout=settings.shutdown_grace_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await nc.drain() if nc.is_connected else await nc.close()
        await pool.close()
    log.info("stopped")


def _metrics_tasks(
    settings: ServiceSettings, port: int, pool: asyncpg.Pool, nc: NATS, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """/metrics on `port`, and the gauges of this service's outbox and NATS consumers."""
    prefix = settings.service.replace("-", "_") + "__"  # durables are <service>__<purpose>
    gauges = InfrastructureGauges(pool, nc, consumer_prefix=prefix)
    return [
        asyncio.create_task(serve_metrics(settings.grpc_host, port, stop), name="metrics"),
        asyncio.create_task(gauges.run(stop), name="metrics_gauges"),
    ]


def _tls_mode(settings: ServiceSettings) -> str:
    tls = settings.server_tls
    return "mutual" if tls is not None and tls.client_ca is not None else "on"


def main(build: Callable[[], ServiceDefinition]) -> None:
    """Entry point of `python -m pulsestock.<service>`."""
    name = build.__module__.rsplit(".", 2)[-2] if build.__module__ else "pulsestock"
    try:
        definition = build()
        settings = definition.settings_from_env()
        selected_roles(definition, settings.roles)  # unknown role names fail here, in one line
    except ConfigError as error:
        print(f"{name}: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.service, settings.log_level, settings.log_format)
    configure_telemetry(
        settings.service, settings.otlp_endpoint, prometheus=settings.metrics_port is not None
    )
    try:
        asyncio.run(run_service(definition, settings))
    except (OSError, asyncpg.PostgresError, nats.errors.Error) as error:
        log.error("cannot start", error=str(error))
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        raise SystemExit(130) from None
