"""Settings: validated, with a one-line error naming the bad variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

import pytest
from pulsestock.config import ConfigError, ServiceSettings
from pulsestock.services import definition_of

GOOD = {"DATABASE_URL": "postgresql://u@127.0.0.1:5432/db", "NATS_URL": "nats://127.0.0.1:4222"}


def settings_of(service: str, environ: Mapping[str, str]) -> ServiceSettings:
    """As the service process reads them: with the defaults its definition declares."""
    return definition_of(service).settings_from_env(environ)


def test_defaults_from_a_minimal_environment() -> None:
    settings = settings_of("inventory-sync", GOOD)
    assert (settings.grpc_port, settings.http_port, settings.schema, settings.partitions) == (
        50054,
        None,  # it has no HTTP listener
        "inventory_sync",
        16,
    )


def test_http_port_of_the_service_with_an_http_listener() -> None:
    assert settings_of("ingest", GOOD).http_port == 8080
    assert settings_of("ingest", {**GOOD, "INGEST_HTTP_PORT": "9090"}).http_port == 9090


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"INVENTORY_SYNC_GRPC_PORT": "abc"}, "INVENTORY_SYNC_GRPC_PORT"),
        ({"INVENTORY_SYNC_GRPC_PORT": "70000"}, "INVENTORY_SYNC_GRPC_PORT"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"NATS_URL": "http://x"}, "NATS_URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"PULSESTOCK_PARTITIONS": "0"}, "PULSESTOCK_PARTITIONS"),
        ({"SHUTDOWN_GRACE_SECONDS": "soon"}, "SHUTDOWN_GRACE_SECONDS"),
        ({"PULSESTOCK_ROLES": " , "}, "PULSESTOCK_ROLES"),
        ({"INVENTORY_SYNC_DB_SCHEMA": "Bad-Schema"}, "INVENTORY_SYNC_DB_SCHEMA"),
    ],
)
def test_bad_value_names_the_variable(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of("inventory-sync", {**GOOD, **overrides})
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_password_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of("ingest", {**GOOD, "DATABASE_URL": "mysql://u:s3cret@h/db"})
    assert "s3cret" not in str(caught.value)


def run_module(module: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **GOOD, **overrides},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unknown_role_is_refused_in_one_line() -> None:
    result = run_module("pulsestock.inventory_sync", PULSESTOCK_ROLES="writer,juggler")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "PULSESTOCK_ROLES names juggler" in result.stderr


def test_service_process_exits_with_one_line_naming_the_variable() -> None:
    result = run_module("pulsestock.signal", SIGNAL_GRPC_PORT="not-a-port")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SIGNAL_GRPC_PORT" in lines[0]
    assert "Traceback" not in result.stderr
