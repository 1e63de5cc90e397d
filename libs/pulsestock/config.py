"""Settings from environment variables, validated once at start-up.

A bad value raises ConfigError whose message is one line naming the variable, so an operator
reading a crash-looping pod's log sees what to fix without a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

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

    def secret_url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        """A URL that may carry a password: NAME, else the file NAME_FILE names."""
        value = self.secret(name)
        if value is None:
            return None
        return Env({name: value}).url(name, schemes)

    def path(self, name: str) -> str | None:
        """A file that must be readable (a mounted certificate, key or credentials file)."""
        path = self.raw(name)
        if path is not None:
            _read_file(name, path)
        return path

    def pem(self, name: str) -> bytes | None:
        """The content of the PEM file NAME names."""
        path = self.raw(name)
        if path is None:
            return None
        content = _read_file(name, path)
        if b"-----BEGIN " not in content:
            raise ConfigError(f"{name}: {path} is not a PEM file")
        return content


def _read_file(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ConfigError(f"{name}: cannot read {path}: {error.strerror}") from None


def _roles(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise ConfigError("PULSESTOCK_ROLES is empty; name roles or unset it to run them all")
    return names


# Query parameters that carry a secret (libpq's `password`, `sslpassword`; tokens).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword", "token", "secret", "auth_token"})
# In these schemes a user without a password is a token (nats://TOKEN@host).
_TOKEN_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


def redact(url: str) -> str:
    """Hide the secrets of a URL before it reaches a log or an error message: the password
    (user:***@), a NATS token (***@) and secret query parameters (password=***)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        elif parts.scheme in _TOKEN_SCHEMES:
            userinfo = "***"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
            query = urlencode(
                [(k, "***" if k.lower() in _SECRET_PARAMETERS else v) for k, v in pairs],
                safe="*/:",
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


# --- TLS between services (gRPC) ----------------------------------------------------------


@dataclass(frozen=True)
class ServerTls:
    """The gRPC server's certificate chain and key; with `client_ca`, clients must present a
    certificate it signed (mutual TLS)."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None
    # (variable, path) of the files read, to reload them when they change (a rotated
    # certificate, e.g. by cert-manager); empty: given in memory, never reloaded.
    files: tuple[tuple[str, str], ...] = ()

    def files_stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when a file is replaced (Kubernetes swaps a symlink; stat follows
        it). Raises OSError when one is missing."""
        stamps = []
        for _, path in self.files:
            stat = os.stat(path)
            stamps.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def reload(self) -> ServerTls:
        """The same files read again, checked as at start (ConfigError when not usable)."""
        reloaded = ServerTls.from_env(Env(dict(self.files)))
        if reloaded is None:
            raise ConfigError("PULSESTOCK_TLS_CERT_FILE: nothing to reload")
        return reloaded

    @classmethod
    def from_env(cls, env: Env) -> ServerTls | None:
        """PULSESTOCK_TLS_CERT_FILE + PULSESTOCK_TLS_KEY_FILE (PEM) turn TLS on; with
        PULSESTOCK_TLS_CLIENT_CA_FILE, client certificates are required. Unset: plaintext."""
        chain = env.pem("PULSESTOCK_TLS_CERT_FILE")
        key = env.pem("PULSESTOCK_TLS_KEY_FILE")
        client_ca = env.pem("PULSESTOCK_TLS_CLIENT_CA_FILE")
        if chain is None and key is None:
            if client_ca is not None:
                raise ConfigError(
                    "PULSESTOCK_TLS_CLIENT_CA_FILE is set without PULSESTOCK_TLS_CERT_FILE and"
                    " PULSESTOCK_TLS_KEY_FILE (client certificates need a TLS server)"
                )
            return None
        if chain is None or key is None:
            raise ConfigError(
                "PULSESTOCK_TLS_CERT_FILE and PULSESTOCK_TLS_KEY_FILE must be set together"
            )
        _check_key_pair(chain, key, "PULSESTOCK_TLS_CERT_FILE", "PULSESTOCK_TLS_KEY_FILE")
        if client_ca is not None:
            _check_certificates(client_ca, "PULSESTOCK_TLS_CLIENT_CA_FILE")
        names: tuple[str, ...] = ("PULSESTOCK_TLS_CERT_FILE", "PULSESTOCK_TLS_KEY_FILE")
        if client_ca is not None:
            names += ("PULSESTOCK_TLS_CLIENT_CA_FILE",)
        return cls(chain, key, client_ca, tuple((name, env.raw(name) or "") for name in names))


@dataclass(frozen=True)
class ClientTls:
    """How this service's gRPC clients reach its peers over TLS: the CA that signed the peers'
    certificates (None: the system's roots) and, for mutual TLS, its own certificate."""

    root_certificates: bytes | None
    cert_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None  # overrides the name checked in the peer's certificate

    @classmethod
    def from_env(cls, env: Env) -> ClientTls | None:
        """PULSESTOCK_TLS_CA_FILE (or a client certificate) turns TLS on for calls to peers;
        PULSESTOCK_TLS_CLIENT_CERT_FILE + PULSESTOCK_TLS_CLIENT_KEY_FILE present a client
        certificate; PULSESTOCK_TLS_SERVER_NAME overrides the name expected in the peer's
        certificate. Unset: plaintext."""
        roots = env.pem("PULSESTOCK_TLS_CA_FILE")
        chain = env.pem("PULSESTOCK_TLS_CLIENT_CERT_FILE")
        key = env.pem("PULSESTOCK_TLS_CLIENT_KEY_FILE")
        if (chain is None) != (key is None):
            raise ConfigError(
                "PULSESTOCK_TLS_CLIENT_CERT_FILE and PULSESTOCK_TLS_CLIENT_KEY_FILE must be set"
                " together"
            )
        if roots is None and chain is None:
            return None
        if roots is not None:
            _check_certificates(roots, "PULSESTOCK_TLS_CA_FILE")
        if chain is not None and key is not None:
            _check_key_pair(
                chain, key, "PULSESTOCK_TLS_CLIENT_CERT_FILE", "PULSESTOCK_TLS_CLIENT_KEY_FILE"
            )
        return cls(roots, chain, key, env.raw("PULSESTOCK_TLS_SERVER_NAME"))


def _check_certificates(pem: bytes, name: str) -> list[Any]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(f"{name} holds no readable PEM certificate") from None


def _check_key_pair(chain: bytes, key: bytes, chain_name: str, key_name: str) -> None:
    """The key must parse (unencrypted) and belong to the chain's first certificate; the
    messages name the variables, never the key."""
    from cryptography.hazmat.primitives import serialization

    certificate = _check_certificates(chain, chain_name)[0]
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{key_name} holds no readable unencrypted PEM private key") from None
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(*public) != certificate.public_key().public_bytes(
        *public
    ):
        raise ConfigError(f"{key_name} is not the key of the certificate in {chain_name}")


# --- NATS: credentials and TLS ------------------------------------------------------------


@dataclass(frozen=True)
class NatsSettings:
    """How to reach NATS. Credentials come from the URL (nats://user:password@host,
    nats://token@host), NATS_USER + NATS_PASSWORD, NATS_TOKEN, a creds file (NATS_CREDS_FILE,
    a user JWT and its seed) or an nkey seed (NATS_NKEY_SEED_FILE); TLS from a tls:// URL or
    NATS_TLS_CA_FILE (and NATS_TLS_CERT_FILE + NATS_TLS_KEY_FILE for a client certificate)."""

    url: str = field(repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_server_name: str | None = None

    @classmethod
    def from_env(cls, env: Env) -> NatsSettings:
        url = env.secret_url("NATS_URL", ("nats", "tls"))
        if url is None:
            raise ConfigError("NATS_URL is not set (e.g. nats://127.0.0.1:4222)")
        settings = cls(
            url=url,
            user=env.raw("NATS_USER"),
            password=env.secret("NATS_PASSWORD"),
            token=env.secret("NATS_TOKEN"),
            creds_file=env.path("NATS_CREDS_FILE"),
            nkey_seed_file=env.path("NATS_NKEY_SEED_FILE"),
            tls_ca_file=env.path("NATS_TLS_CA_FILE"),
            tls_cert_file=env.path("NATS_TLS_CERT_FILE"),
            tls_key_file=env.path("NATS_TLS_KEY_FILE"),
            tls_server_name=env.raw("NATS_TLS_SERVER_NAME"),
        )
        if (settings.user is None) != (settings.password is None):
            raise ConfigError("NATS_USER and NATS_PASSWORD must be set together")
        if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
            raise ConfigError("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE must be set together")
        if settings.creds_file is not None:
            content = _read_file("NATS_CREDS_FILE", settings.creds_file)
            # nats-py reads these markers in a loop that never ends when one is missing.
            if b"BEGIN NATS USER JWT" not in content or b"BEGIN USER NKEY SEED" not in content:
                raise ConfigError(
                    f"NATS_CREDS_FILE: {settings.creds_file} is not a NATS credentials file"
                    " (a user JWT and its nkey seed)"
                )
        # nats-py signs the server's nonce with nkeys, imported only when it connects.
        uses_nkeys = settings.creds_file is not None or settings.nkey_seed_file is not None
        if uses_nkeys and importlib.util.find_spec("nkeys") is None:
            raise ConfigError(
                "NATS_CREDS_FILE / NATS_NKEY_SEED_FILE need the nkeys package (pip install nkeys)"
            )
        settings.tls_context()  # a bad CA or key pair fails here, in one line
        return settings

    def tls_context(self) -> ssl.SSLContext | None:
        """An SSL context when a CA or a client certificate is configured; None leaves a
        tls:// URL to nats-py's default (the system's roots)."""
        if self.tls_ca_file is None and self.tls_cert_file is None:
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"NATS_TLS_CA_FILE: {self.tls_ca_file}: {error}") from None
        if self.tls_cert_file is not None:
            try:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError(
                    f"NATS_TLS_CERT_FILE / NATS_TLS_KEY_FILE: cannot load the key pair:"
                    f" {getattr(error, 'reason', None) or error.__class__.__name__}"
                ) from None
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of nats.connect beyond the URL."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"], options["password"] = self.user, self.password
        if self.token is not None:
            options["token"] = self.token
        if self.creds_file is not None:
            options["user_credentials"] = self.creds_file
        if self.nkey_seed_file is not None:
            options["nkeys_seed"] = self.nkey_seed_file
        context = self.tls_context()
        if context is not None:
            options["tls"] = context
        if self.tls_server_name is not None:
            options["tls_hostname"] = self.tls_server_name
        return options


@dataclass(frozen=True)
class ServiceSettings:
    service: str
    database_url: str = field(repr=False)  # may carry a password
    nats_url: str = field(repr=False)
    grpc_host: str
    grpc_port: int
    http_port: int | None  # None: the service has no HTTP listener
    metrics_port: int | None  # Prometheus /metrics; None: not served
    partitions: int
    log_level: str
    log_format: str
    shutdown_grace_seconds: float
    otlp_endpoint: str | None
    schema: str
    roles: frozenset[str] | None
    nats: NatsSettings | None = None  # None: NATS_URL alone, no credentials or TLS files
    server_tls: ServerTls | None = None  # None: plaintext gRPC
    client_tls: ClientTls | None = None  # None: plaintext calls to peers
    # A plaintext port serving only grpc.health.v1 (for kubelet gRPC probes, which cannot
    # speak TLS); None: none.
    health_port: int | None = None

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
        database_url = env.secret_url("DATABASE_URL", ("postgres", "postgresql"))
        if database_url is None:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
        nats = NatsSettings.from_env(env)
        health_port = env.raw(f"{prefix}_HEALTH_PORT")
        return cls(
            service=service,
            database_url=database_url,
            nats_url=nats.url,
            grpc_host=env.string(f"{prefix}_GRPC_HOST", "127.0.0.1"),
            grpc_port=env.port(f"{prefix}_GRPC_PORT", default_grpc_port),
            http_port=None
            if default_http_port is None
            else env.port(f"{prefix}_HTTP_PORT", default_http_port),
            metrics_port=metrics_port(env, prefix),
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
            nats=nats,
            server_tls=ServerTls.from_env(env),
            client_tls=ClientTls.from_env(env),
            health_port=None if health_port is None else env.port(f"{prefix}_HEALTH_PORT", 1),
        )


def peer_address(env: Env, service: str, default_port: int) -> str:
    """<SERVICE>_ADDR (host:port), else the peer's own port on this host, as `make run`
    starts it (e.g. INVENTORY_SYNC_ADDR, else 127.0.0.1:$INVENTORY_SYNC_GRPC_PORT)."""
    prefix = env_prefix(service)
    port = env.port(f"{prefix}_GRPC_PORT", default_port)
    return env.string(f"{prefix}_ADDR", f"127.0.0.1:{port}")


def metrics_port(env: Env, prefix: str) -> int | None:
    """<SERVICE>_METRICS_PORT, else PULSESTOCK_METRICS_PORT (one port for every pod, as the
    manifests set it); unset or 0: metrics are not served."""
    raw = env.raw(f"{prefix}_METRICS_PORT") or env.raw("PULSESTOCK_METRICS_PORT")
    if raw is None or raw == "0":
        return None
    own = f"{prefix}_METRICS_PORT"
    return env.port(own if env.raw(own) else "PULSESTOCK_METRICS_PORT", 0)
