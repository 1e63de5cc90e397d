"""Event values: what is appended, what is read back, and how payloads map to protobuf types."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from pulsestock.errors import Conflict
from pulsestock.messages import decode_event, event_type_of

NO_STREAM = 0
"""Expected version of a stream that must not exist yet (versions start at 1)."""


class WrongExpectedVersion(Conflict):
    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the append expected {expected}"
        )


@dataclass(frozen=True)
class NewEvent:
    type: str
    data: bytes
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        message: Message,
        *,
        event_id: uuid.UUID | None = None,
        metadata: dict[str, str] | None = None,
    ) -> NewEvent:
        return cls(
            type=event_type_of(message),
            data=message.SerializeToString(deterministic=True),
            event_id=event_id or uuid.uuid4(),
            metadata=dict(metadata or {}),
        )


@dataclass(frozen=True)
class StreamAppend:
    stream_id: str
    expected_version: int
    events: list[NewEvent]


@dataclass(frozen=True)
class RecordedEvent:
    global_position: int
    stream_id: str
    stream_version: int
    event_id: uuid.UUID
    type: str
    data: bytes
    metadata: dict[str, str]
    recorded_at: datetime

    def decode(self) -> Message:
        return decode_event(self.type, self.data)

    def as_readable(self) -> dict[str, Any]:
        try:
            body: Any = json_format.MessageToDict(self.decode())
        except KeyError:
            body = {"undecodable_bytes": len(self.data)}
        return {
            "position": self.global_position,
            "stream": self.stream_id,
            "version": self.stream_version,
            "type": self.type,
            "event_id": str(self.event_id),
            "recorded_at": self.recorded_at.isoformat(),
            "data": body,
            "metadata": self.metadata,
        }
