"""Client channels to peer services, with retries declared in the gRPC service config.

`channel` is what services use to call their peers: TLS (mutual TLS with a client
certificate) when PULSESTOCK_TLS_CA_FILE / PULSESTOCK_TLS_CLIENT_CERT_FILE say so (see
pulsestock.config.ClientTls), else plaintext. `insecure_channel` is always plaintext (local
tools and tests)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
from pulsestock.config import ClientTls, Env

DEFAULT_DEADLINE_S = 5.0


def retry_service_config(service_names: Sequence[str], max_attempts: int = 4) -> str:
    """Retry UNAVAILABLE with exponential backoff; the caller's deadline still bounds it.
    Calls are spread over every address the target resolves to (`round_robin`), so behind a
    headless Service (`dns:///inventory-sync:50054`) each call and each retry goes to the next
    pod: a replica that answers UNAVAILABLE because another owns the SKU's partition is
    followed by one that may own it, instead of the same pod again."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{"service": name} for name in service_names],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def _options(service_names: Sequence[str]) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if service_names:
        options.append(("grpc.service_config", retry_service_config(service_names)))
    return options


def insecure_channel(target: str, service_names: Sequence[str] = ()) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=_options(service_names))


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.cert_chain,
    )


def channel(
    target: str, service_names: Sequence[str] = (), tls: ClientTls | None = None
) -> grpc.aio.Channel:
    """A channel to a peer: over `tls`, else as the environment configures it (TLS when
    PULSESTOCK_TLS_CA_FILE or a client certificate is set, plaintext otherwise)."""
    tls = tls or ClientTls.from_env(Env())
    if tls is None:
        return insecure_channel(target, service_names)
    options = _options(service_names)
    if tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)
