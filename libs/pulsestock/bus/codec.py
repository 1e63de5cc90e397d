"""The wire format between services: protobuf payloads with CloudEvents attributes as headers.

Any consumer in any language reads `ce-type` (the proto full name) and parses the payload.
`Nats-Msg-Id` is the event id, so JetStream drops a re-published duplicate within its window.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import Message
from opentelemetry.context import Context
from pulsestock.messages import decode_event
from pulsestock.telemetry import inject_trace_headers

SPEC_VERSION = "1.0"
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def partition_for(key: str, partitions: int) -> int:
    """Stable partition of a SKU (or any key): the same in every process and language."""
    return zlib.crc32(key.encode()) % partitions


def subject_for(service: str, event_type: str, partition_key: str, partitions: int) -> str:
    """`inventory-sync`, `pulsestock.v1.ChannelQuantityChanged`, SKU ->
    `inventory_sync.channel_quantity_changed.<partition>`."""
    short_name = event_type.rsplit(".", 1)[-1]
    event = _CAMEL_BOUNDARY.sub("_", short_name).lower()
    return f"{service.replace('-', '_')}.{event}.{partition_for(partition_key, partitions)}"


def cloudevent_headers(
    *,
    event_id: str,
    event_type: str,
    source: str,
    subject: str,
    time: datetime | None = None,
    context: Context | None = None,
) -> dict[str, str]:
    """The headers of an outgoing event; `traceparent` is the current span's, or the one in
    `context` (the trace the event continues, when it is not the current one)."""
    headers = {
        "Nats-Msg-Id": event_id,
        "ce-specversion": SPEC_VERSION,
        "ce-id": event_id,
        "ce-type": event_type,
        "ce-source": source,
        "ce-subject": subject,
        "ce-time": (time or datetime.now(UTC)).isoformat(),
        "content-type": "application/protobuf",
    }
    return inject_trace_headers(headers, context)


def header_block(headers: dict[str, str]) -> str:
    """Headers as NATS writes them after its status line: "name: value" lines, CRLF-ended."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


def parse_header_block(block: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in block.split("\r\n") if line)


@dataclass(frozen=True)
class Envelope:
    """A received event: CloudEvents attributes plus the raw protobuf payload, and the trace
    context its handling runs in (set by the consumer when there is a trace to continue; a
    batch handler that hands each envelope's work to another task passes it on)."""

    event_id: str
    type: str
    source: str
    subject: str
    time: str
    data: bytes
    headers: dict[str, str]
    trace_context: Context | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_headers(cls, headers: dict[str, str] | None, data: bytes) -> Envelope:
        h = dict(headers or {})
        missing = [k for k in ("ce-id", "ce-type") if k not in h]
        if missing:
            raise ValueError(f"message lacks CloudEvents headers {missing}")
        return cls(
            event_id=h["ce-id"],
            type=h["ce-type"],
            source=h.get("ce-source", ""),
            subject=h.get("ce-subject", ""),
            time=h.get("ce-time", ""),
            data=data,
            headers=h,
        )

    def decode(self) -> Message:
        return decode_event(self.type, self.data)
