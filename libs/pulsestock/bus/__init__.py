"""JetStream as the transport between services: provisioning, codec, consumers, dead letters."""

from pulsestock.bus.codec import Envelope, cloudevent_headers, partition_for, subject_for
from pulsestock.bus.consumer import (
    DurableConsumer,
    PermanentFailure,
    apply_once,
    idempotent,
)
from pulsestock.bus.provision import (
    DEAD_LETTER_STREAM,
    ConsumerSpec,
    StreamSpec,
    dead_letter_subject,
    ensure_consumer,
    ensure_stream,
    service_stream,
)

__all__ = [
    "DEAD_LETTER_STREAM",
    "ConsumerSpec",
    "DurableConsumer",
    "Envelope",
    "PermanentFailure",
    "StreamSpec",
    "apply_once",
    "cloudevent_headers",
    "dead_letter_subject",
    "ensure_consumer",
    "ensure_stream",
    "idempotent",
    "partition_for",
    "service_stream",
    "subject_for",
]
