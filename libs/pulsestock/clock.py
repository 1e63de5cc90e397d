"""Time enters at the edges: domain and application code take a `Clock`; processes pass
`utc_now`, tests and simulations their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
