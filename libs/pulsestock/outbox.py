"""The outbox relay: publishes committed outbox rows to JetStream, then deletes them.

A crash after publishing and before deleting re-publishes those rows on restart; JetStream
drops them as duplicates (`Nats-Msg-Id` = event id) within its window, and consumers are
idempotent anyway. A crash before publishing loses nothing: the rows are still there.
Only one relay per schema publishes at a time (a session advisory lock; a standby takes
over when the holder's connection dies), which keeps per-subject order.

Each row's headers were written with the trace context of what appended it; when spans are
recorded, the relay publishes each row as an "outbox publish" span continuing that trace, and
the message carries the publish span's `traceparent` (otherwise the stored one, unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from opentelemetry import trace
from pulsestock.bus.codec import parse_header_block
from pulsestock.bus.publisher import BatchPublisher, Outgoing
from pulsestock.eventstore.store import CONNECTION_LOST, Wakeup, notify_channel
from pulsestock.metrics import RELAY_PUBLISHED
from pulsestock.telemetry import (
    extract_trace_context,
    get_logger,
    inject_trace_headers,
    tracing_enabled,
)

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        nc: NATS,
        schema: str,
        *,
        dsn: str | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.schema = schema
        self.dsn = dsn
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout_s = publish_timeout_s
        self.published = 0
        self._publisher = BatchPublisher(nc)

    async def relay_batch(self, conn: asyncpg.Connection | None = None) -> int:
        """Publish the oldest pending rows (pipelined, all acks awaited), then delete them."""
        db = conn or self.pool
        rows = await db.fetch(
            "SELECT id, subject, data, headers FROM outbox ORDER BY id LIMIT $1", self.batch_size
        )
        if not rows:
            return 0
        await self.publish(rows)
        # Exactly these rows: a row with a lower id whose transaction committed after the
        # SELECT (while we published) is not among them and must stay for the next batch.
        await db.execute(
            "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows]
        )
        self.published += len(rows)
        RELAY_PUBLISHED.add(len(rows))
        return len(rows)

    async def publish(self, rows: list[Any]) -> None:
        """Publish pipelined; every ack must arrive before the rows go (an error leaves them
        for the next attempt)."""
        messages = [
            (row["subject"], row["data"], parse_header_block(row["headers"])) for row in rows
        ]
        if not tracing_enabled():
            await self._publisher.publish(messages, self.publish_timeout_s)
            return
        spans = _publish_spans(messages)
        try:
            await self._publisher.publish(messages, self.publish_timeout_s)
        except BaseException as error:
            for span in spans:
                span.record_exception(error)
                span.set_status(trace.StatusCode.ERROR, repr(error))
            raise
        finally:
            for span in spans:
                span.end()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop`; a lost database connection (and with it the relay lock) is
        taken again after a pause."""
        while not stop.is_set():
            try:
                await self._hold_lock_and_relay(stop)
            except CONNECTION_LOST as error:
                log.warning("outbox relay lost its connection, reconnecting", error=repr(error))
                await _wait_or_stop(stop, self.poll_interval)

    async def _hold_lock_and_relay(self, stop: asyncio.Event) -> None:
        async with self.pool.acquire() as conn:
            while not stop.is_set():
                held = await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext('relay:' || current_schema()))"
                )
                if held:
                    break
                await _wait_or_stop(stop, self.poll_interval)
            else:
                return
            try:
                await self._relay_until(stop, conn)
            finally:
                with contextlib.suppress(*CONNECTION_LOST):
                    await conn.execute(
                        "SELECT pg_advisory_unlock(hashtext('relay:' || current_schema()))"
                    )

    async def _relay_until(self, stop: asyncio.Event, conn: asyncpg.Connection) -> None:
        async with Wakeup(self.dsn, notify_channel(self.schema, "outbox")) as wakeup:
            failing = False
            while not stop.is_set():
                try:
                    relayed = await self.relay_batch(conn)
                except (TimeoutError, nats.errors.Error) as error:
                    # NATS down or slow (caught before CONNECTION_LOST: TimeoutError is an
                    # OSError). The rows stay; retry after a pause that new rows'
                    # notifications do not cut short, so an outage under load is not a loop
                    # of queries; logged once per outage.
                    if not failing:
                        log.warning("outbox relay cannot publish, retrying", error=repr(error))
                    failing = True
                    await _wait_or_stop(stop, self.poll_interval)
                    continue
                except CONNECTION_LOST:
                    raise
                except asyncpg.PostgresError as error:
                    log.warning("outbox relay batch failed, retrying", error=repr(error))
                    relayed = 0
                if failing and relayed:
                    log.info("outbox relay publishing again")
                    failing = False
                if not relayed:
                    await wakeup.wait(self.poll_interval)


def _publish_spans(messages: list[Outgoing]) -> list[trace.Span]:
    """A producer span per message, continuing the trace its stored headers carry; the
    message's headers then carry the span's own context (the consumer's parent)."""
    tracer = trace.get_tracer("pulsestock")
    spans = []
    for subject, _, headers in messages:
        span = tracer.start_span(
            "outbox publish",
            context=extract_trace_context(headers),
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.name": subject,
                "messaging.message.id": headers.get("ce-id", ""),
            },
        )
        inject_trace_headers(headers, trace.set_span_in_context(span))
        spans.append(span)
    return spans


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
