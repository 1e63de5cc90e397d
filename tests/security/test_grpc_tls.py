"""TLS and mutual TLS between services, with certificates made in the test: the server kit on
its own, then a whole service (ingest) called by a peer's client adapter (collect's)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pulsestock.clock import timestamp as stamp
from pulsestock.collect.adapters.ingest_client import IngestClient
from pulsestock.config import ClientTls, ConfigError, Env, ServerTls
from pulsestock.devstack.servers import free_port
from pulsestock.grpckit.client import channel, insecure_channel
from pulsestock.grpckit.server import GrpcServer
from pulsestock.v1 import ingest_pb2
from pulsestock.v1.common_pb2 import Channel
from structlog.testing import capture_logs

from tests.helpers.infra import Infra
from tests.security.conftest import environment, health_serving, service_running
from tests.security.pki import Pki, make_pki


def server_tls(pki: Pki, *, mutual: bool) -> ServerTls:
    env = {
        "PULSESTOCK_TLS_CERT_FILE": str(pki.server_cert),
        "PULSESTOCK_TLS_KEY_FILE": str(pki.server_key),
    }
    if mutual:
        env["PULSESTOCK_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    tls = ServerTls.from_env(Env(env))
    assert tls is not None
    return tls


def client_tls(ca: str, cert: str | None = None, key: str | None = None) -> ClientTls:
    env = {"PULSESTOCK_TLS_CA_FILE": ca}
    if cert is not None and key is not None:
        env["PULSESTOCK_TLS_CLIENT_CERT_FILE"] = cert
        env["PULSESTOCK_TLS_CLIENT_KEY_FILE"] = key
    tls = ClientTls.from_env(Env(env))
    assert tls is not None
    return tls


async def health_code(ch: grpc.aio.Channel) -> grpc.StatusCode:
    """OK when the health service answered SERVING, else the call's failure code."""
    try:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    server = GrpcServer("127.0.0.1", free_port(), tls=server_tls(pki, mutual=False))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    server = GrpcServer(
        "127.0.0.1", free_port(), tls=server_tls(pki, mutual=True), health_port=free_port()
    )
    await server.start()
    yield server
    await server.stop()


async def test_a_tls_server_answers_a_tls_client_and_refuses_plaintext(
    tls_server: GrpcServer, pki: Pki
) -> None:
    address = f"127.0.0.1:{tls_server.port}"
    async with channel(address, tls=client_tls(str(pki.ca))) as secure:
        assert await health_code(secure) == grpc.StatusCode.OK
    for name in ("127.0.0.1", "localhost"):  # both names are in the server's certificate
        async with channel(f"{name}:{tls_server.port}", tls=client_tls(str(pki.ca))) as secure:
            assert await health_code(secure) == grpc.StatusCode.OK
    async with insecure_channel(address) as plain:
        assert await health_code(plain) == grpc.StatusCode.UNAVAILABLE
    # A client that trusts another CA does not accept the server's certificate.
    async with channel(address, tls=client_tls(str(pki.other_ca))) as distrustful:
        assert await health_code(distrustful) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_clients_without_a_certificate_the_ca_signed(
    mtls_server: GrpcServer, pki: Pki
) -> None:
    address = f"127.0.0.1:{mtls_server.port}"
    signed = client_tls(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    async with channel(address, tls=signed) as ch:
        assert await health_code(ch) == grpc.StatusCode.OK
        # Reflection (and so grpcurl) works over the same mutual TLS.
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name async for r in replies for s in r.list_services_response.service}
        assert "grpc.health.v1.Health" in names
    async with channel(address, tls=client_tls(str(pki.ca))) as anonymous:
        assert await health_code(anonymous) == grpc.StatusCode.UNAVAILABLE
    stranger = client_tls(str(pki.ca), str(pki.stranger_cert), str(pki.stranger_key))
    async with channel(address, tls=stranger) as ch:
        assert await health_code(ch) == grpc.StatusCode.UNAVAILABLE
    async with insecure_channel(address) as plain:
        assert await health_code(plain) == grpc.StatusCode.UNAVAILABLE


async def test_the_plaintext_health_port_serves_only_health_and_follows_the_drain(
    mtls_server: GrpcServer,
) -> None:
    async with insecure_channel(f"127.0.0.1:{mtls_server.health_port}") as probe:
        assert await health_code(probe) == grpc.StatusCode.OK
        stub = reflection_pb2_grpc.ServerReflectionStub(probe)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await replies.read()
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await mtls_server.health.enter_graceful_shutdown()  # what drain does first
        reply = await health_pb2_grpc.HealthStub(probe).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_service_over_mutual_tls_is_called_by_its_peers_client_adapter(
    infra: Infra, nats_url: str, pki: Pki
) -> None:
    server_env = {
        "PULSESTOCK_TLS_CERT_FILE": str(pki.server_cert),
        "PULSESTOCK_TLS_KEY_FILE": str(pki.server_key),
        "PULSESTOCK_TLS_CLIENT_CA_FILE": str(pki.ca),
        "INGEST_RECONCILE_SECONDS": "0",
    }
    async with service_running("ingest", infra, nats_url, server_env) as settings:
        assert settings.server_tls is not None
        assert settings.server_tls.client_ca is not None
        address = f"127.0.0.1:{settings.grpc_port}"
        async with insecure_channel(address) as plain:
            assert not await health_serving(plain)
        request = ingest_pb2.RegisterVideoRequest(
            video_id="tls-video-1",
            skus=["LAMP-7"],
            creator_id="creator-1",
            creator_followers=1000,
            published_at=stamp(datetime.now(UTC).replace(microsecond=0)),
            channel=Channel.CHANNEL_TIKTOK_SHOP,
        )
        # collect's adapter, as collect's process would run it: TLS from the environment.
        client_env = {
            "PULSESTOCK_TLS_CA_FILE": str(pki.ca),
            "PULSESTOCK_TLS_CLIENT_CERT_FILE": str(pki.client_cert),
            "PULSESTOCK_TLS_CLIENT_KEY_FILE": str(pki.client_key),
        }
        with environment(client_env):
            client = IngestClient(address)
            try:
                assert await client.register_video(request) is True
                assert await client.register_video(request) is False  # it is there
            finally:
                await client.close()
        # Without a client certificate the same adapter is turned away.
        with environment({"PULSESTOCK_TLS_CA_FILE": str(pki.ca)}):
            client = IngestClient(address)
            try:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.register_video(request)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                await client.close()


def test_tls_settings_errors_name_the_variable_never_the_key(pki: Pki) -> None:
    key_text = pki.server_key.read_text()
    cases = {
        "PULSESTOCK_TLS_KEY_FILE is not the key of the certificate": {
            "PULSESTOCK_TLS_CERT_FILE": str(pki.server_cert),
            "PULSESTOCK_TLS_KEY_FILE": str(pki.client_key),
        },
        "must be set together": {"PULSESTOCK_TLS_CERT_FILE": str(pki.server_cert)},
        "PULSESTOCK_TLS_CERT_FILE: cannot read /nonexistent/cert.pem": {
            "PULSESTOCK_TLS_CERT_FILE": "/nonexistent/cert.pem",
            "PULSESTOCK_TLS_KEY_FILE": str(pki.server_key),
        },
        "PULSESTOCK_TLS_CERT_FILE holds no readable PEM certificate": {
            "PULSESTOCK_TLS_CERT_FILE": str(pki.server_key),
            "PULSESTOCK_TLS_KEY_FILE": str(pki.server_key),
        },
        "client certificates need a TLS server": {"PULSESTOCK_TLS_CLIENT_CA_FILE": str(pki.ca)},
    }
    for expected, env in cases.items():
        with pytest.raises(ConfigError) as caught:
            ServerTls.from_env(Env(env))
        message = str(caught.value)
        assert expected in message
        assert "\n" not in message
        assert "PRIVATE KEY" not in message
        assert key_text not in message
    with pytest.raises(ConfigError, match="CLIENT_KEY_FILE must be set together"):
        ClientTls.from_env(Env({"PULSESTOCK_TLS_CLIENT_CERT_FILE": str(pki.client_cert)}))
    assert ServerTls.from_env(Env({})) is None
    assert ClientTls.from_env(Env({})) is None


async def test_the_expected_server_name_can_be_overridden(tls_server: GrpcServer, pki: Pki) -> None:
    """PULSESTOCK_TLS_SERVER_NAME: the name checked in the peer's certificate when the
    address is not one of its names (e.g. a pod IP, or a port-forward)."""
    address = f"127.0.0.1:{tls_server.port}"
    cases = (("localhost", grpc.StatusCode.OK), ("ingest", grpc.StatusCode.UNAVAILABLE))
    for name, expected in cases:
        env = {"PULSESTOCK_TLS_CA_FILE": str(pki.ca), "PULSESTOCK_TLS_SERVER_NAME": name}
        tls = ClientTls.from_env(Env(env))
        assert tls is not None
        assert tls.server_name == name
        async with channel(address, tls=tls) as ch:
            assert await health_code(ch) == expected


def replace_file(target: Path, source: Path) -> None:
    """As Kubernetes updates a mounted secret: the new content appears at once."""
    staged = target.with_suffix(".new")
    shutil.copyfile(source, staged)
    os.replace(staged, target)


async def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path, pki: Pki) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    cert, key = mounted / "tls.crt", mounted / "tls.key"
    replace_file(cert, pki.server_cert)
    replace_file(key, pki.server_key)
    env = {"PULSESTOCK_TLS_CERT_FILE": str(cert), "PULSESTOCK_TLS_KEY_FILE": str(key)}
    tls = ServerTls.from_env(Env(env))
    assert tls is not None
    server = GrpcServer("127.0.0.1", free_port(), tls=tls)
    await server.start()
    address = f"127.0.0.1:{server.port}"

    async def answers_for(ca: Path) -> grpc.StatusCode:
        async with channel(address, tls=client_tls(str(ca))) as ch:  # a new connection
            return await health_code(ch)

    try:
        assert await answers_for(pki.ca) == grpc.StatusCode.OK
        renewed = make_pki(tmp_path / "renewed")  # a certificate from another CA
        # Half a rotation (the new certificate, the old key) is not taken: still the old one.
        replace_file(cert, renewed.server_cert)
        with capture_logs() as logs:
            assert await answers_for(pki.ca) == grpc.StatusCode.OK
        assert any("not reloaded" in entry["event"] for entry in logs)
        replace_file(key, renewed.server_key)
        assert await answers_for(renewed.ca) == grpc.StatusCode.OK
        assert await answers_for(pki.ca) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()
