"""Client channels to peer services, with retries declared in the gRPC service config."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

DEFAULT_DEADLINE_S = 5.0


def retry_service_config(service_names: Sequence[str], max_attempts: int = 4) -> str:
    """Retry UNAVAILABLE with exponential backoff; the caller's deadline still bounds it."""
    return json.dumps(
        {
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
            ]
        }
    )


def insecure_channel(target: str, service_names: Sequence[str] = ()) -> grpc.aio.Channel:
    options: list[tuple[str, int | str]] = [
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if service_names:
        options.append(("grpc.service_config", retry_service_config(service_names)))
    return grpc.aio.insecure_channel(target, options=options)
