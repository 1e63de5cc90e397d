"""A durable pull-consumer loop: ack on success, nak with backoff on failure, dead-letter and
term after the last allowed delivery, and a helper that makes handlers idempotent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from pulsestock.bus.codec import Envelope
from pulsestock.bus.provision import ConsumerSpec, dead_letter_subject
from pulsestock.telemetry import begin_trace, continue_trace, get_logger

Handler = Callable[[Envelope], Awaitable[None]]
log = get_logger(__name__)


def dependency_down(error: BaseException) -> bool:
    """The handler failed because the database is out of reach (restarting, failing over,
    out of connections), not because of the message: every message would fail alike, and a
    redelivery spent on each would dead-letter good messages a few seconds into an outage."""
    # Imported here: the event store imports the bus's codec, so the bus cannot import it
    # at the top.
    from pulsestock.eventstore.store import CONNECTION_LOST

    return isinstance(error, (*CONNECTION_LOST, asyncpg.TooManyConnectionsError))


class PermanentFailure(Exception):
    """The message can never succeed (malformed, unknown type): dead-letter at once."""


def backoff_delay(delivery: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    return float(min(cap_s, base_s * 2 ** (delivery - 1)))


def hold_delay(attempt: int) -> float:
    """Between tries of a message held while its dependency is down: 0.25 s doubling to 5 s."""
    return backoff_delay(attempt, base_s=0.25, cap_s=5.0)


BatchHandler = Callable[[list[Envelope]], Awaitable[list[Exception | None]]]
"""Handles a fetched batch at once; returns, per envelope, None (done) or what went wrong.
Each envelope's `trace_context` is its own message's consumer span: work handed on for one
envelope should be handed on in it (see `telemetry.use_context`)."""


class DurableConsumer:
    def __init__(
        self,
        nc: NATS,
        spec: ConsumerSpec,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        batch: int = 256,
        fetch_timeout_s: float = 1.0,
        backoff: Callable[[int], float] = backoff_delay,
        concurrent: bool = False,
        batches_in_flight: int = 1,
        hold: Callable[[int], float] = hold_delay,
    ) -> None:
        """Give `handler` (one message at a time; `concurrent` runs a fetched batch's
        messages at once) or `batch_handler` (the whole batch in one call, for work that
        groups well, e.g. commands into a group-commit writer). `batches_in_flight` > 1 lets
        the next batch be fetched while one is handled: only for work whose order does not
        matter.

        A message whose handler fails because the database is out of reach
        (`dependency_down`) is held and tried again in place, `hold(attempt)` apart, its
        ack deadline extended each time, until it succeeds, fails otherwise, or the consumer
        stops: it spends no delivery (nak + redelivery would dead-letter it after
        `max_deliver` tries, seconds into a database restart), and the consumer fetches no
        more than its `batches_in_flight` meanwhile."""
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self.nc = nc
        self.spec = spec
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.backoff = backoff
        self.concurrent = concurrent
        self.batches_in_flight = batches_in_flight
        self.hold = hold
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        js = self.nc.jetstream()
        subscription = await js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                try:
                    messages = await self._fetch(subscription)
                except TimeoutError:  # nothing waiting (nats.errors.TimeoutError is one too)
                    continue
                except nats.errors.Error as error:  # e.g. reconnecting: the loop carries on
                    log.warning("fetch failed", consumer=self.spec.durable, error=repr(error))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                    continue
                if self.batch_handler is not None:
                    # Fetch the next batch while this one is handled (its commit overlaps
                    # the next fetch); at most `batches_in_flight` at once.
                    task = asyncio.create_task(self.process_batch(messages))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    if len(in_flight) >= self.batches_in_flight:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                elif self.concurrent:
                    await asyncio.gather(*(self.process(m) for m in messages))
                else:
                    for message in messages:
                        await self.process(message)
        finally:
            if in_flight:
                await asyncio.wait(in_flight)
            await subscription.unsubscribe()

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        """Wait for the first message, then take what else is already there. (One
        `fetch(batch)` would linger for its whole timeout when messages trickle in.)"""
        first = await subscription.fetch(1, timeout=self.fetch_timeout_s)
        if self.batch <= 1:
            return list(first)
        try:
            more = await subscription.fetch(self.batch - 1, timeout=0.005)
        except TimeoutError:
            more = []
        return [*first, *more]

    async def process(self, message: Msg) -> None:
        assert self.handler is not None
        try:
            envelope = Envelope.from_headers(message.headers, message.data)
        except ValueError as error:
            await self._dead_letter(message, f"malformed: {error}")
            return
        with continue_trace(
            f"{self.spec.durable} process", envelope.headers, trace.SpanKind.CONSUMER
        ):
            attempt = 0
            while True:
                try:
                    await self.handler(envelope)
                except Exception as error:
                    attempt += 1
                    if await self._held([message], error, attempt):
                        continue
                    trace.get_current_span().record_exception(error)
                    await self._settle(message, envelope, error)
                else:
                    await message.ack()
                return

    async def _held(self, messages: list[Msg], error: Exception, attempt: int) -> bool:
        """When `error` says the database is out of reach: keep `messages` (their ack
        deadline extended), wait, and say to try them again (False once stopping)."""
        if not dependency_down(error) or self._stop.is_set():
            return False
        if attempt == 1:
            log.warning(
                "database out of reach, holding messages",
                consumer=self.spec.durable,
                messages=len(messages),
                error=repr(error),
            )
        for message in messages:
            with contextlib.suppress(nats.errors.Error):
                await message.in_progress()
        # Well inside the ack wait the progress note has just restarted.
        pause = min(self.hold(attempt), self.spec.ack_wait_s / 2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), pause)
        return not self._stop.is_set()

    async def _handle_batch(self, envelopes: list[Envelope]) -> list[Exception | None]:
        assert self.batch_handler is not None
        try:
            return await self.batch_handler(envelopes)
        except Exception as error:  # the whole batch failed: each message retries
            return [error] * len(envelopes)

    async def process_batch(self, messages: list[Msg]) -> None:
        assert self.batch_handler is not None
        parsed: list[tuple[Msg, Envelope, trace.Span | None]] = []
        name = f"{self.spec.durable} process"
        for message in messages:
            try:
                envelope = Envelope.from_headers(message.headers, message.data)
            except ValueError as error:
                await self._dead_letter(message, f"malformed: {error}")
                continue
            # A span per message, as `process` has, open until the message is settled.
            span, context = begin_trace(name, envelope.headers, trace.SpanKind.CONSUMER)
            if context is not None:
                envelope = dataclasses.replace(envelope, trace_context=context)
            parsed.append((message, envelope, span))
        if not parsed:
            return
        results = await self._handle_batch([envelope for _, envelope, _ in parsed])
        attempt = 0
        while True:
            down = [
                i
                for i, result in enumerate(results)
                if result is not None and dependency_down(result)
            ]
            if not down:
                break
            attempt += 1
            cause = results[down[0]]
            assert cause is not None
            if not await self._held([parsed[i][0] for i in down], cause, attempt):
                break
            retried = await self._handle_batch([parsed[i][1] for i in down])
            for i, result in zip(down, retried, strict=True):
                results[i] = result
        for (message, envelope, span), result in zip(parsed, results, strict=True):
            if span is None:
                await self._settle(message, envelope, result)
                continue
            with trace.use_span(span, end_on_exit=True):
                if result is not None:
                    span.record_exception(result)
                    span.set_status(trace.StatusCode.ERROR, repr(result))
                await self._settle(message, envelope, result)

    async def _settle(self, message: Msg, envelope: Envelope, error: Exception | None) -> None:
        """Ack a success; dead-letter a permanent failure or the last allowed delivery;
        nak anything else with a backoff."""
        if error is None:
            await message.ack()
            return
        if isinstance(error, PermanentFailure):
            await self._dead_letter(message, f"permanent: {error}")
            return
        delivery = message.metadata.num_delivered  # parsed only when needed
        if delivery >= self.spec.max_deliver:
            await self._dead_letter(message, f"failed {delivery} times: {error!r}")
            return
        log.warning(
            "handler failed, will retry",
            consumer=self.spec.durable,
            event_id=envelope.event_id,
            delivery=delivery,
            error=repr(error),
        )
        await message.nak(delay=self.backoff(delivery))

    async def _dead_letter(self, message: Msg, reason: str) -> None:
        headers = dict(message.headers or {})
        headers.pop("Nats-Msg-Id", None)
        headers.update(
            {
                "dead-letter-reason": reason[:512],
                "dead-letter-subject": message.subject,
                "dead-letter-consumer": self.spec.durable,
                "dead-letter-deliveries": str(message.metadata.num_delivered),
            }
        )
        await self.nc.jetstream().publish(
            dead_letter_subject(self.spec.durable), message.data, headers=headers
        )
        await message.term()
        log.error(
            "dead-lettered", consumer=self.spec.durable, subject=message.subject, reason=reason
        )


async def apply_once(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Record that `consumer` applied `event_id`; False when it already had (inside the
    caller's transaction, so the record and the effect commit together)."""
    inserted = await conn.fetchval(
        "INSERT INTO applied_messages (consumer, event_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event_id,
    )
    return bool(inserted)


def idempotent(
    pool: asyncpg.Pool,
    consumer: str,
    effect: Callable[[asyncpg.Connection, Envelope], Awaitable[None]],
) -> Handler:
    """Wrap an effect so a redelivered event changes nothing twice."""

    async def handle(envelope: Envelope) -> None:
        async with pool.acquire() as conn, conn.transaction():
            if await apply_once(conn, consumer, envelope.event_id):
                await effect(conn, envelope)

    return handle
