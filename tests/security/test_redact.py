"""URLs are logged and quoted in errors only through redact()."""

from __future__ import annotations

import pytest
from pulsestock.config import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:pw1@db:5432/x", "postgresql://app:***@db:5432/x"),
        (
            "postgresql://postgres:pw2@/postgres?host=/tmp/pg&port=5432",
            "postgresql://postgres:***@/postgres?host=/tmp/pg&port=5432",
        ),
        (
            "postgresql://app@db/x?sslmode=verify-full&password=pw3",
            "postgresql://app@db/x?sslmode=verify-full&password=***",
        ),
        ("nats://svc:pw4@nats:4222", "nats://svc:***@nats:4222"),
        ("nats://tok5@nats:4222", "nats://***@nats:4222"),  # a NATS token
        ("tls://tok6@nats:4222", "tls://***@nats:4222"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),  # a user alone is not secret
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("http://collector:4317", "http://collector:4317"),
    ],
)
def test_redact_hides_passwords_tokens_and_password_parameters(url: str, shown: str) -> None:
    assert redact(url) == shown
