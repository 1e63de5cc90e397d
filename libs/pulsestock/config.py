"""Settings from environment variables, validated once at start-up.

A bad value raises ConfigError whose message is one line naming the variable, so an operator
reading a crash-looping pod's log sees what to fix without a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# No list of services here: they are found through entry points (pulsestock.services), and
# each declares its own default ports in its definition.
DEFAULT_PARTITIONS = 16


class ConfigError(ValueError):
    """A setting is missing or malformed; str(error) is a one-line message naming it."""


def env_prefix(service: str) -> str:
    """`inventory-sync` -> `INVENTORY_SYNC` (the prefix of its own variables)."""
    return service.upper().replace("-", "_")


def schema_name(service: str) -> str:
    """Each service owns one PostgreSQL schema, named like its Python package."""
    return service.replace("-", "_")


def service_schema(service: str, environ: Mapping[str, str] | None = None) -> str:
    """The service's PostgreSQL schema: `<SERVICE>_DB_SCHEMA`, default its package name."""
    return Env(environ).identifier(f"{env_prefix(service)}_DB_SCHEMA", schema_name(service))


class Env:
    """Typed, validated reads of environment variables."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value if value not in (None, "") else None

    def string(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def secret(self, name: str) -> str | None:
        """NAME, else the content of the file NAME_FILE names (a mounted Kubernetes secret),
        without its trailing newline. A file that cannot be read is a configuration error
        naming the file, never its content."""
        value = self.raw(name)
        if value is not None:
            return value
        path = self.raw(f"{name}_FILE")
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as file:
                content = file.read().rstrip("\r\n")
        except OSError as error:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {error.strerror}") from None
        return content or None

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not an integer") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={value!r} is out of range [{minimum}, {maximum}]")
        return number

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a number") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={value!r} is out of range [{minimum}, {maximum}]")
        return number

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=1, maximum=65535)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def identifier(self, name: str, default: str) -> str:
        """A lower-case SQL identifier (a schema name)."""
        value = self.raw(name) or default
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ConfigError(f"{name}={value!r} must be a lower-case SQL identifier")
        return value

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.hostname or parts.path):
            raise ConfigError(
                f"{name}={redact(value)!r} is not a URL with scheme {' or '.join(schemes)}"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ConfigError(f"{name}={redact(value)!r} has a malformed port") from None
        return value


def _roles(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise ConfigError("PULSESTOCK_ROLES is empty; name roles or unset it to run them all")
    return names


def redact(url: str) -> str:
    """Hide a password in a URL before it reaches a log or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class ServiceSettings:
    service: str
    database_url: str
    nats_url: str
    grpc_host: str
    grpc_port: int
    http_port: int | None  # None: the service has no HTTP listener
    partitions: int
    log_level: str
    log_format: str
    shutdown_grace_seconds: float
    otlp_endpoint: str | None
    schema: str
    roles: frozenset[str] | None

    @classmethod
    def from_env(
        cls,
        service: str,
        environ: Mapping[str, str] | None = None,
        *,
        default_grpc_port: int,
        default_http_port: int | None = None,
    ) -> ServiceSettings:
        """The service's settings; the defaults are its own (its ServiceDefinition's)."""
        env = Env(environ)
        prefix = env_prefix(service)
        database_url = env.url("DATABASE_URL", ("postgres", "postgresql"))
        if database_url is None:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
        nats_url = env.url("NATS_URL", ("nats", "tls"))
        if nats_url is None:
            raise ConfigError("NATS_URL is not set (e.g. nats://127.0.0.1:4222)")
        return cls(
            service=service,
            database_url=database_url,
            nats_url=nats_url,
            grpc_host=env.string(f"{prefix}_GRPC_HOST", "127.0.0.1"),
            grpc_port=env.port(f"{prefix}_GRPC_PORT", default_grpc_port),
            http_port=None
            if default_http_port is None
            else env.port(f"{prefix}_HTTP_PORT", default_http_port),
            partitions=env.integer(
                "PULSESTOCK_PARTITIONS", DEFAULT_PARTITIONS, minimum=1, maximum=4096
            ),
            log_level=env.choice(
                "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ),
            log_format=env.choice("LOG_FORMAT", "auto", ("auto", "json", "console")),
            shutdown_grace_seconds=env.number(
                "SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0, maximum=600.0
            ),
            otlp_endpoint=env.url("OTEL_EXPORTER_OTLP_ENDPOINT", ("http", "https")),
            schema=service_schema(service, environ),
            roles=_roles(env.raw("PULSESTOCK_ROLES")),
        )


def peer_address(env: Env, service: str, default_port: int) -> str:
    """<SERVICE>_ADDR (host:port), else the peer's own port on this host, as `make run`
    starts it (e.g. INVENTORY_SYNC_ADDR, else 127.0.0.1:$INVENTORY_SYNC_GRPC_PORT)."""
    prefix = env_prefix(service)
    port = env.port(f"{prefix}_GRPC_PORT", default_port)
    return env.string(f"{prefix}_ADDR", f"127.0.0.1:{port}")
