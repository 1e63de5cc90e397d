"""A grpc.aio server with the standard health service, reflection (v1 and v1alpha), the
kit's interceptor, keepalive, and a graceful drain: health NOT_SERVING, stop accepting, finish
in-flight calls.

Plaintext unless given a ServerTls (TLS; mutual TLS when it names a client CA). A TLS server
can also answer grpc.health.v1 alone on a plaintext port, for the kubelet's gRPC probes (they
cannot speak TLS); nothing else is served there."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pulsestock.config import ConfigError, ServerTls
from pulsestock.grpckit.interceptors import ServerKitInterceptor
from pulsestock.grpckit.reflection import enable_server_reflection
from pulsestock.telemetry import get_logger

log = get_logger(__name__)

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_connection_age_ms", 30 * 60_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


class GrpcServer:
    def __init__(
        self,
        host: str,
        port: int,
        register: Callable[[grpc.aio.Server], Sequence[str]] | None = None,
        *,
        tls: ServerTls | None = None,
        health_port: int | None = None,
    ) -> None:
        """Binds the port(s) at once (before the service opens its other connections, so that
        none of their ephemeral ports can take them); servicers are added before `start`."""
        self.server = grpc.aio.server(interceptors=[ServerKitInterceptor()], options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = []
        self.address = f"{host}:{port}"
        self.tls = tls
        credentials = None if tls is None else server_credentials(tls)
        self.port = _bind(self.server, self.address, credentials)
        self.health_server: grpc.aio.Server | None = None
        self.health_address: str | None = None
        self.health_port: int | None = None
        if health_port is not None:
            self.health_server = grpc.aio.server(options=SERVER_OPTIONS)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_address = f"{host}:{health_port}"
            self.health_port = _bind(self.health_server, self.health_address, None)
        if register is not None:
            self.add_services(register)

    def add_services(self, register: Callable[[grpc.aio.Server], Sequence[str]]) -> None:
        """`register` adds servicers and returns their full service names."""
        self.service_names.extend(register(self.server))

    async def start(self) -> None:
        enable_server_reflection([*self.service_names, health.SERVICE_NAME], self.server)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self, grace_seconds: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
        if self.health_server is not None:
            await self.health_server.stop(0)

    async def stop(self) -> None:
        """Stop at once (tests, and a start that failed)."""
        await self.server.stop(0)
        if self.health_server is not None:
            await self.health_server.stop(0)


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """Static for certificates given in memory; for files, credentials that read them again
    when they change (checked at each new connection's handshake: a rotated certificate is
    served without a restart)."""
    if not tls.files:
        return grpc.ssl_server_credentials(
            [(tls.private_key, tls.cert_chain)],
            root_certificates=tls.client_ca,
            require_client_auth=tls.client_ca is not None,
        )
    reloader = CertificateReloader(tls)
    return grpc.dynamic_ssl_server_credentials(
        _configuration(tls),
        reloader.fetch,
        require_client_authentication=tls.client_ca is not None,
    )


def _configuration(tls: ServerTls) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(tls.private_key, tls.cert_chain)], root_certificates=tls.client_ca
    )


class CertificateReloader:
    """gRPC calls `fetch` before each handshake: None keeps the current certificate, a new
    configuration replaces it. A file replaced by one that does not check (a key that is not
    the certificate's, half a rotation) keeps the current one and says so once."""

    def __init__(self, tls: ServerTls) -> None:
        self.tls = tls
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            return self.tls.files_stamp()
        except OSError:
            return None

    def fetch(self) -> Any:
        try:
            stamp = self._stamp()
            if stamp is None or stamp == self.stamp:
                return None
            self.stamp = stamp
            try:
                reloaded = self.tls.reload()
            except ConfigError as error:
                log.warning(
                    "tls certificate not reloaded, serving the current one", error=str(error)
                )
                return None
            self.tls = reloaded
            log.info("tls certificate reloaded", files=[path for _, path in reloaded.files])
            return _configuration(reloaded)
        except Exception as error:  # never into gRPC's handshake
            log.warning("tls certificate reload failed", error=repr(error))
            return None


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}: in use or not available")
    return int(port)
