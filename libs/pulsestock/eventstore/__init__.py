"""The append-only event log every event-sourced service keeps in its own PostgreSQL schema."""

from pulsestock.eventstore.events import (
    NO_STREAM,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    WrongExpectedVersion,
)
from pulsestock.eventstore.migrations import Migration, apply_migrations, load_migrations
from pulsestock.eventstore.projection import Projection, ProjectionRunner
from pulsestock.eventstore.store import EventStore, OutboxRoute, connect_pool
from pulsestock.messages import decode_event, event_type_of

__all__ = [
    "NO_STREAM",
    "EventStore",
    "Migration",
    "NewEvent",
    "OutboxRoute",
    "Projection",
    "ProjectionRunner",
    "RecordedEvent",
    "StreamAppend",
    "WrongExpectedVersion",
    "apply_migrations",
    "connect_pool",
    "decode_event",
    "event_type_of",
    "load_migrations",
]
