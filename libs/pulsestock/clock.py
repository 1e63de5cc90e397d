"""Time enters at the edges: domain and application code take a `Clock`; processes pass
`utc_now`, tests and simulations their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.v1.common_pb2 import TimeRange

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> Timestamp:
    """A datetime as the protos' Timestamp."""
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def time_range(start: datetime, end: datetime) -> TimeRange:
    """[start, end) as the protos' TimeRange."""
    window = TimeRange()
    window.start.FromDatetime(start)
    window.end.FromDatetime(end)
    return window
