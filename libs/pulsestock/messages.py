"""Protobuf event types by their full names: the stored and wire type of every event."""

from __future__ import annotations

from google.protobuf import symbol_database
from google.protobuf.message import Message


def event_type_of(message: Message) -> str:
    """Stored type names are proto full names (`pulsestock.v1.StockReserved`), never class paths."""
    return message.DESCRIPTOR.full_name


def decode_event(type_name: str, data: bytes) -> Message:
    """Parse a stored payload by its proto full name."""
    message_class = _classes.get(type_name)
    if message_class is None:
        _import_all_event_modules()
        message_class = _classes[type_name] = symbol_database.Default().GetSymbol(type_name)
    return message_class.FromString(data)


_classes: dict[str, type[Message]] = {}


_imported = False


def _import_all_event_modules() -> None:
    global _imported
    if _imported:
        return
    from pulsestock.v1 import (  # noqa: F401 - imported for their registrations
        catalogue_events_pb2,
        collect_events_pb2,
        forecast_events_pb2,
        fulfillment_events_pb2,
        ingest_events_pb2,
        inventory_sync_events_pb2,
        signal_events_pb2,
    )

    _imported = True
