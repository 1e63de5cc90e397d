"""A grpc.aio server with the standard health service, reflection (v1 and v1alpha), the
kit's interceptor, keepalive, and a graceful drain: health NOT_SERVING, stop accepting, finish
in-flight calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pulsestock.grpckit.interceptors import ServerKitInterceptor
from pulsestock.grpckit.reflection import enable_server_reflection

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
    ) -> None:
        """Binds the port at once (before the service opens its other connections, so that
        none of their ephemeral ports can take it); servicers are added before `start`."""
        self.server = grpc.aio.server(interceptors=[ServerKitInterceptor()], options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = []
        self.address = f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(self.address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {self.address}: in use or not available")
        if register is not None:
            self.add_services(register)

    def add_services(self, register: Callable[[grpc.aio.Server], Sequence[str]]) -> None:
        """`register` adds servicers and returns their full service names."""
        self.service_names.extend(register(self.server))

    async def start(self) -> None:
        enable_server_reflection([*self.service_names, health.SERVICE_NAME], self.server)
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self, grace_seconds: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
