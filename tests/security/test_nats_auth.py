"""NATS with credentials and TLS: a service connects with what its settings name (the URL,
NATS_USER + NATS_PASSWORD_FILE, an nkey seed, a CA for TLS); refused credentials or
certificates stop it at start-up in one line, without a traceback or the password."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from pulsestock.config import ConfigError, Env, NatsSettings, ServiceSettings
from pulsestock.devstack.servers import free_port
from pulsestock.runtime import NatsRefused, connect_nats
from structlog.testing import capture_logs

from tests.helpers.infra import Infra, eventually, unique_name
from tests.helpers.service import service_env
from tests.security.conftest import service_running
from tests.security.nats_server import ConfiguredNats, new_user_nkey, operator_mode
from tests.security.pki import Pki

PASSWORD = "nats-pw-7c1f0e"
SERVICE_USER = "svc"


@pytest.fixture
def password_nats(tmp_path: Path) -> Iterator[ConfiguredNats]:
    server = ConfiguredNats(
        tmp_path / "nats-auth",
        f'authorization {{ users: [ {{ user: {SERVICE_USER}, password: "{PASSWORD}" }} ] }}',
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_nats(tmp_path: Path, pki: Pki) -> Iterator[ConfiguredNats]:
    """TLS required, and a client certificate the test CA signed (verify: true)."""
    server = ConfiguredNats(
        tmp_path / "nats-tls",
        f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}",'
        f' ca_file: "{pki.ca}", verify: true, timeout: 2 }}',
    )
    server.start()
    yield server
    server.stop()


def settings_for(env: dict[str, str]) -> ServiceSettings:
    base = {"DATABASE_URL": "postgresql://u@127.0.0.1:5432/db"}
    return ServiceSettings.from_env("ingest", {**base, **env}, default_grpc_port=free_port())


async def connects(env: dict[str, str]) -> bool:
    """Whether a service with these settings connects (and can use JetStream)."""
    nc = await connect_nats(settings_for(env))
    try:
        await nc.jetstream().account_info()
        return nc.is_connected
    finally:
        await nc.close()


async def test_a_service_connects_with_credentials_in_the_url_and_provisions_its_stream(
    infra: Infra, password_nats: ConfiguredNats
) -> None:
    url = f"nats://{SERVICE_USER}:{PASSWORD}@127.0.0.1:{password_nats.port}"
    async with service_running("ingest", infra, url, {"INGEST_RECONCILE_SECONDS": "0"}):
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info("INGEST")
            assert info.config.name == "INGEST"
        finally:
            await nc.close()


async def test_user_and_a_password_file_connect_and_a_wrong_password_is_refused_at_once(
    password_nats: ConfiguredNats, tmp_path: Path
) -> None:
    password_file = tmp_path / "nats-password"
    password_file.write_text(PASSWORD + "\n")
    url = f"nats://127.0.0.1:{password_nats.port}"
    assert await connects(
        {"NATS_URL": url, "NATS_USER": SERVICE_USER, "NATS_PASSWORD_FILE": str(password_file)}
    )
    with pytest.raises(NatsRefused) as caught:
        await connects(
            {"NATS_URL": f"nats://{SERVICE_USER}:wrong-pw-1@127.0.0.1:{password_nats.port}"}
        )
    assert "authorization violation" in str(caught.value)
    assert "wrong-pw-1" not in str(caught.value)
    assert f"nats://{SERVICE_USER}:***@127.0.0.1:{password_nats.port}" in str(caught.value)


@pytest.mark.parametrize("credentials", ["", "svc:wrong-pw-2@"])
def test_without_valid_credentials_the_service_stops_at_start_in_one_line(
    infra: Infra, password_nats: ConfiguredNats, credentials: str
) -> None:
    env = {
        **os.environ,
        **service_env(
            "ingest",
            infra.database_url,
            f"nats://{credentials}127.0.0.1:{password_nats.port}",
            unique_name("ing"),
            free_port(),
            {"LOG_FORMAT": "json", "INGEST_RECONCILE_SECONDS": "0"},
        ),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pulsestock.ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot start" in done.stderr
    assert "authorization violation" in done.stderr
    assert "Traceback" not in done.stderr
    assert "wrong-pw-2" not in done.stderr + done.stdout


async def test_an_nkey_seed_file_connects(tmp_path: Path) -> None:
    if importlib.util.find_spec("nkeys") is None:
        pytest.skip("nkeys is not installed")
    public, seed_file = new_user_nkey(tmp_path / "nkey")
    server = ConfiguredNats(
        tmp_path / "nats-nkey", f'authorization {{ users: [ {{ nkey: "{public}" }} ] }}'
    )
    server.start()
    try:
        url = f"nats://127.0.0.1:{server.port}"
        assert await connects({"NATS_URL": url, "NATS_NKEY_SEED_FILE": str(seed_file)})
        with pytest.raises(NatsRefused):
            await connects({"NATS_URL": url})
    finally:
        server.stop()


async def test_tls_to_nats_with_a_ca_file_and_a_client_certificate(
    tls_nats: ConfiguredNats, pki: Pki
) -> None:
    url = f"tls://127.0.0.1:{tls_nats.port}"
    client = {
        "NATS_TLS_CA_FILE": str(pki.ca),
        "NATS_TLS_CERT_FILE": str(pki.client_cert),
        "NATS_TLS_KEY_FILE": str(pki.client_key),
    }
    assert await connects({"NATS_URL": url, **client})
    # nats:// upgrades to TLS when the server requires it and a CA is configured.
    assert await connects({"NATS_URL": f"nats://127.0.0.1:{tls_nats.port}", **client})
    # A CA that did not sign the server's certificate: refused at once, not retried for ever.
    with pytest.raises(NatsRefused) as caught:
        await connects({**client, "NATS_URL": url, "NATS_TLS_CA_FILE": str(pki.other_ca)})
    assert "certificate" in str(caught.value)


def test_nats_settings_errors_are_one_line_and_hide_secrets(tmp_path: Path, pki: Pki) -> None:
    not_creds = tmp_path / "not.creds"
    not_creds.write_text("hello\n")
    cases = {
        "NATS_URL is not set": {},
        "NATS_USER and NATS_PASSWORD must be set together": {
            "NATS_URL": "nats://127.0.0.1:4222",
            "NATS_USER": "svc",
        },
        "is not a NATS credentials file": {
            "NATS_URL": "nats://127.0.0.1:4222",
            "NATS_CREDS_FILE": str(not_creds),
        },
        "NATS_CREDS_FILE: cannot read /nonexistent.creds": {
            "NATS_URL": "nats://127.0.0.1:4222",
            "NATS_CREDS_FILE": "/nonexistent.creds",
        },
        "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE must be set together": {
            "NATS_URL": "tls://127.0.0.1:4222",
            "NATS_TLS_CERT_FILE": str(pki.client_cert),
        },
        "cannot load the key pair": {
            "NATS_URL": "tls://127.0.0.1:4222",
            "NATS_TLS_CERT_FILE": str(pki.client_cert),
            "NATS_TLS_KEY_FILE": str(pki.server_key),
        },
        "NATS_URL='ftp://svc:***@127.0.0.1:4222' is not a URL": {
            "NATS_URL": "ftp://svc:hidden-pw-3@127.0.0.1:4222"
        },
    }
    for expected, env in cases.items():
        with pytest.raises(ConfigError) as caught:
            NatsSettings.from_env(Env(env))
        assert expected in str(caught.value)
        assert "\n" not in str(caught.value)
        assert "hidden-pw-3" not in str(caught.value)
    # NATS_URL from a mounted file; its password stays out of the settings' repr.
    url_file = tmp_path / "nats-url"
    url_file.write_text("nats://svc:hidden-pw-4@nats:4222\n")
    settings = settings_for({"NATS_URL_FILE": str(url_file)})
    assert settings.nats_url == "nats://svc:hidden-pw-4@nats:4222"
    assert "hidden-pw-4" not in repr(settings)


async def test_a_service_connects_with_a_creds_file_in_operator_mode(
    infra: Infra, tmp_path: Path
) -> None:
    if importlib.util.find_spec("nkeys") is None:
        pytest.skip("nkeys is not installed")
    config, creds = operator_mode(tmp_path / "operator")
    server = ConfiguredNats(tmp_path / "nats-operator", config)
    server.start()
    try:
        url = f"nats://127.0.0.1:{server.port}"
        extra = {"NATS_CREDS_FILE": str(creds), "INGEST_RECONCILE_SECONDS": "0"}
        async with service_running("ingest", infra, url, extra):
            nc = await nats.connect(url, user_credentials=str(creds))
            try:
                assert (await nc.jetstream().stream_info("INGEST")).config.name == "INGEST"
            finally:
                await nc.close()
        with pytest.raises(NatsRefused):  # no credentials: refused at start
            await connects({"NATS_URL": url})
    finally:
        server.stop()


async def test_a_refusal_after_start_is_retried_until_nats_accepts_again(
    password_nats: ConfiguredNats, tmp_path: Path
) -> None:
    """Only the first connection fails fast: once running, a server that refuses the
    credentials for a while (a password being rotated) is retried, logged once."""
    url = f"nats://{SERVICE_USER}:{PASSWORD}@127.0.0.1:{password_nats.port}"
    with capture_logs() as logs:
        nc = await connect_nats(settings_for({"NATS_URL": url}))
        try:
            password_nats.stop()
            other = ConfiguredNats(
                tmp_path / "nats-rotated",
                f'authorization {{ users: [ {{ user: {SERVICE_USER}, password: "other-pw" }} ] }}',
                port=password_nats.port,
            )
            other.start()
            try:

                async def refused() -> bool:
                    return any("authorization violation" in str(e.get("error")) for e in logs)

                await eventually(refused, within=20, what="the refusal to be logged")
            finally:
                other.stop()
            password_nats.start()  # the same port, the service's password again

            async def back() -> bool:
                return nc.is_connected

            await eventually(back, within=20, what="the reconnection")
            await nc.jetstream().account_info()
        finally:
            await nc.close()
    refusals = [e for e in logs if "authorization violation" in str(e.get("error"))]
    assert len(refusals) == 1  # once per kind of failure, not once per attempt
    assert any(e["event"] == "nats reconnected" for e in logs)
    assert PASSWORD not in str(logs)
