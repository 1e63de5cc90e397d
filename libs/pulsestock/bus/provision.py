"""Streams and consumers declared in code, provisioned idempotently at start-up.

nats-py's `pull_subscribe` does not update an existing consumer's config, so consumers are
created (or updated in place) explicitly here and bound to by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pulsestock.config import ConfigError, Env

DEAD_LETTER_STREAM = "DEAD_LETTERS"
DEFAULT_DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    replicas: int = 1
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S
    max_age_s: float = 7 * 24 * 3600.0

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=self.subjects,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window_s,
            max_age=self.max_age_s,
        )


def service_stream(service: str, replicas: int = 1) -> StreamSpec:
    """One stream per producing service: `inventory-sync` -> INVENTORY_SYNC, `inventory_sync.>`."""
    token = service.replace("-", "_")
    return StreamSpec(name=token.upper(), subjects=[f"{token}.>"], replicas=replicas)


def dead_letter_subject(consumer: str) -> str:
    return f"dead_letters.{consumer}"


DEAD_LETTERS = StreamSpec(DEAD_LETTER_STREAM, ["dead_letters.>"], max_age_s=30 * 24 * 3600.0)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer, named `<consumer-service>__<purpose>`."""

    stream: str
    durable: str
    filter_subjects: list[str] = field(default_factory=list)
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    max_ack_pending: int = 10_000

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            # One more than ours: the consumer loop dead-letters on the last delivery itself.
            max_deliver=self.max_deliver + 1,
            max_ack_pending=self.max_ack_pending,
            filter_subjects=self.filter_subjects or None,
        )


def stream_replicas(environ: Mapping[str, str] | None = None) -> int | None:
    """NATS_STREAM_REPLICAS (1-5): every stream's replica count on a clustered JetStream (3 in
    production); unset: each spec's own (1, one server)."""
    value = Env(environ).raw("NATS_STREAM_REPLICAS")
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 5:
        raise ConfigError(f"NATS_STREAM_REPLICAS must be a whole number 1-5, not {value!r}")
    return int(value)


def provisioned(spec: StreamSpec, environ: Mapping[str, str] | None = None) -> StreamSpec:
    """The spec as it is provisioned here: with NATS_STREAM_REPLICAS applied."""
    replicas = stream_replicas(environ)
    return spec if replicas is None else replace(spec, replicas=replicas)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """Create the stream, or update it in place (a changed replica count scales it)."""
    config = provisioned(spec).config()
    try:
        await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    # CONSUMER.DURABLE.CREATE on an existing durable updates its editable fields in place.
    await js.add_consumer(spec.stream, spec.config())
