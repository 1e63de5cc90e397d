"""Channel sync: every channel shows the quantity the ledger projects for it.

Intake (a JetStream consumer of ChannelQuantityChanged) keeps only the latest quantity per
(channel, SKU) — coalescing, so a burst of changes becomes one call. A pusher per channel
sends what differs from what the channel last confirmed, within the channel's rate limit,
retrying 429/5xx/timeouts with exponential backoff and full jitter (or the channel's
Retry-After), and dead-letters a SKU after repeated failure. A reconciler per channel reads
quantities back and marks drift (edits made outside pulsestock) for the pusher to correct.

A push is a "channel set_quantity" client span in the trace of the newest change it sends
(kept in memory from intake to push: after a restart a push starts a trace of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from nats.aio.client import Client as NATS
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext
from pulsestock.bus import (
    ConsumerSpec,
    Envelope,
    PermanentFailure,
    dead_letter_subject,
    service_stream,
)
from pulsestock.clock import Clock
from pulsestock.inventory_sync.adapters.channels.base import ChannelClient, ChannelError
from pulsestock.metrics import (
    CHANNEL_CALLS,
    CHANNEL_DRIFT,
    CHANNEL_RETRIES,
    set_channel_backoff,
)
from pulsestock.telemetry import get_logger, tracing_enabled
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

log = get_logger(__name__)

MAX_REMEMBERED_CAUSES = 50_000  # (channel, SKU)s whose change waits for a push, traced

QUANTITY_CHANGES = ConsumerSpec(
    stream=service_stream("inventory-sync").name,
    durable="inventory_sync__channel_sync",
    filter_subjects=["inventory_sync.channel_quantity_changed.>"],
)


@dataclass(frozen=True)
class SyncPolicy:
    max_failures: int = 8
    base_backoff_s: float = 0.2
    max_backoff_s: float = 60.0
    reconcile_every_s: float = 60.0
    reconcile_batch: int = 100
    push_batch: int = 200


@dataclass(frozen=True)
class _Due:
    sku: str
    desired: int
    position: int
    failures: int


class ChannelSync:
    def __init__(
        self,
        pool: asyncpg.Pool,
        nc: NATS,
        clients: dict[int, ChannelClient],
        clock: Clock,
        policy: SyncPolicy = SyncPolicy(),
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.clients = clients
        self.clock = clock
        self.policy = policy
        self._wake = {channel: asyncio.Event() for channel in clients}
        self._paused_until: dict[int, datetime] = {}
        # (channel, SKU) -> (sequence, span) of the newest change taken in, when traced.
        self._causes: dict[tuple[int, str], tuple[int, SpanContext]] = {}

    # --- intake ---------------------------------------------------------------------------

    async def intake(self, envelope: Envelope) -> None:
        message = envelope.decode()
        if not isinstance(message, ev.ChannelQuantityChanged):
            raise PermanentFailure(f"unexpected {envelope.type}")
        if message.channel not in self.clients:
            return  # this channel is not connected
        await self.pool.execute(
            "INSERT INTO channel_sync_state AS s (channel, sku, desired_quantity, desired_position)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (channel, sku) DO UPDATE SET"
            " desired_quantity = excluded.desired_quantity,"
            " desired_position = excluded.desired_position,"
            # A new quantity revives a dead-lettered SKU; a backoff in progress stays.
            " dead_lettered = false,"
            " consecutive_failures ="
            "   CASE WHEN s.dead_lettered THEN 0 ELSE s.consecutive_failures END,"
            " next_attempt_at ="
            "   CASE WHEN s.dead_lettered THEN '-infinity' ELSE s.next_attempt_at END"
            " WHERE s.desired_position < excluded.desired_position",
            message.channel,
            message.sku,
            message.quantity,
            message.sequence,
        )
        self._remember_cause(message.channel, message.sku, message.sequence)
        self._wake[message.channel].set()

    def _remember_cause(self, channel: int, sku: str, sequence: int) -> None:
        """The trace of the newest change of (channel, SKU), for the push that sends it."""
        if not tracing_enabled():
            return
        span = trace.get_current_span().get_span_context()
        if not span.is_valid:
            return
        known = self._causes.get((channel, sku))
        if known is None or known[0] < sequence:
            if known is None and len(self._causes) >= MAX_REMEMBERED_CAUSES:
                del self._causes[next(iter(self._causes))]  # the oldest: its push goes untraced
            self._causes[(channel, sku)] = (sequence, span)

    def _settled_cause(self, channel: int, item: _Due) -> None:
        """The change `item` sent is done with (confirmed or dead-lettered)."""
        known = self._causes.get((channel, item.sku))
        if known is not None and known[0] <= item.position:
            del self._causes[(channel, item.sku)]

    # --- pushing --------------------------------------------------------------------------

    async def run_pusher(self, channel: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                pushed = await self.push_due(channel)
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("channel sync round failed", channel=_name(channel), error=repr(error))
                pushed = 0
            if pushed:
                continue
            await self._sleep_until_due(channel, stop)

    async def push_due(self, channel: int) -> int:
        now = self.clock()
        paused = self._paused_until.get(channel)
        if paused is not None and paused > now:
            return 0
        rows = await self.pool.fetch(
            "SELECT sku, desired_quantity, desired_position, consecutive_failures"
            " FROM channel_sync_state WHERE channel = $1 AND NOT dead_lettered"
            " AND last_confirmed_quantity IS DISTINCT FROM desired_quantity"
            " AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3",
            channel,
            now,
            self.policy.push_batch,
        )
        due = [
            _Due(r["sku"], r["desired_quantity"], r["desired_position"], r["consecutive_failures"])
            for r in rows
        ]
        await asyncio.gather(*(self._push(channel, item) for item in due))
        return len(due)

    async def _push(self, channel: int, item: _Due) -> None:
        client = self.clients[channel]
        try:
            await self._set_quantity(client, channel, item)
        except ChannelError as error:
            await self._failed(channel, item, error)
            return
        self._settled_cause(channel, item)
        CHANNEL_CALLS.add(1, {"channel": _name(channel), "outcome": "ok"})
        set_channel_backoff(_name(channel), 0.0)
        await self.pool.execute(
            "UPDATE channel_sync_state SET last_sent_quantity = $3, last_confirmed_quantity = $3,"
            " last_confirmed_at = $4, consecutive_failures = 0, last_error = '',"
            " next_attempt_at = '-infinity' WHERE channel = $1 AND sku = $2",
            channel,
            item.sku,
            item.desired,
            self.clock(),
        )

    async def _set_quantity(self, client: ChannelClient, channel: int, item: _Due) -> None:
        """The channel call, as a client span in the trace of the change it sends."""
        if not tracing_enabled():
            await client.set_quantity(item.sku, item.desired)
            return
        known = self._causes.get((channel, item.sku))
        parent = (
            Context() if known is None else trace.set_span_in_context(NonRecordingSpan(known[1]))
        )
        with trace.get_tracer("pulsestock").start_as_current_span(
            "channel set_quantity",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "pulsestock.channel": _name(channel),
                "pulsestock.sku": item.sku,
                "pulsestock.quantity": item.desired,
                "pulsestock.attempt": item.failures + 1,
            },
        ):
            await client.set_quantity(item.sku, item.desired)

    async def _failed(self, channel: int, item: _Due, error: ChannelError) -> None:
        CHANNEL_CALLS.add(
            1, {"channel": _name(channel), "outcome": "retry" if error.retryable else "refused"}
        )
        attempt = item.failures + 1
        now = self.clock()
        if not error.retryable or attempt >= self.policy.max_failures:
            await self.pool.execute(
                "UPDATE channel_sync_state SET last_sent_quantity = $3, consecutive_failures = $4,"
                " last_error = $5, dead_lettered = true WHERE channel = $1 AND sku = $2",
                channel,
                item.sku,
                item.desired,
                attempt,
                str(error)[:500],
            )
            self._settled_cause(channel, item)
            await self._dead_letter(channel, item, error, attempt)
            return
        backoff = random.uniform(
            0, min(self.policy.max_backoff_s, self.policy.base_backoff_s * 2**attempt)
        )
        delay = max(backoff, error.retry_after or 0.0)
        CHANNEL_RETRIES.add(1, {"channel": _name(channel)})
        set_channel_backoff(_name(channel), delay)
        if error.retry_after:
            # A rate limit is the channel's, not the SKU's: pause the whole channel.
            self._paused_until[channel] = now + timedelta(seconds=error.retry_after)
        await self.pool.execute(
            "UPDATE channel_sync_state SET last_sent_quantity = $3, consecutive_failures = $4,"
            " last_error = $5, next_attempt_at = $6 WHERE channel = $1 AND sku = $2",
            channel,
            item.sku,
            item.desired,
            attempt,
            str(error)[:500],
            now + timedelta(seconds=delay),
        )

    async def _dead_letter(
        self, channel: int, item: _Due, error: ChannelError, attempts: int
    ) -> None:
        log.error(
            "channel sync dead-lettered", channel=_name(channel), sku=item.sku, error=str(error)
        )
        message = ev.ChannelQuantityChanged(
            sku=item.sku,
            channel=Channel.ValueType(channel),
            quantity=item.desired,
            sequence=item.position,
        )
        headers = {
            "ce-type": "pulsestock.v1.ChannelQuantityChanged",
            "ce-source": "/pulsestock/inventory-sync/channel-sync",
            "ce-subject": item.sku,
            "dead-letter-reason": str(error)[:512],
            "dead-letter-deliveries": str(attempts),
            "dead-letter-consumer": QUANTITY_CHANGES.durable,
        }
        with contextlib.suppress(Exception):  # the state row already records the failure
            await self.nc.jetstream().publish(
                dead_letter_subject(f"{QUANTITY_CHANGES.durable}.{_name(channel)}"),
                message.SerializeToString(),
                headers=headers,
            )

    async def _sleep_until_due(self, channel: int, stop: asyncio.Event) -> None:
        wake = self._wake[channel]
        next_due = await self.pool.fetchval(
            "SELECT min(next_attempt_at) FROM channel_sync_state WHERE channel = $1"
            " AND NOT dead_lettered AND last_confirmed_quantity IS DISTINCT FROM desired_quantity",
            channel,
        )
        now = self.clock()
        timeout = 1.0
        if next_due is not None and next_due.year > 1:
            timeout = min(timeout, max(0.01, (next_due - now).total_seconds()))
        paused = self._paused_until.get(channel)
        if paused is not None and paused > now:
            timeout = max(timeout, (paused - now).total_seconds())
        stopping = asyncio.create_task(stop.wait())
        waking = asyncio.create_task(wake.wait())
        await asyncio.wait([stopping, waking], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        waking.cancel()
        wake.clear()

    # --- reconciling ----------------------------------------------------------------------

    async def reconcile(self, channel: int) -> int:
        """Read back the least recently checked SKUs; mark drift for the pusher. Returns how
        many drifted."""
        rows = await self.pool.fetch(
            "SELECT sku, desired_quantity, last_confirmed_quantity FROM channel_sync_state"
            " WHERE channel = $1 AND NOT dead_lettered"
            " AND last_confirmed_quantity IS NOT DISTINCT FROM desired_quantity"
            " ORDER BY last_reconciled_at NULLS FIRST LIMIT $2",
            channel,
            self.policy.reconcile_batch,
        )
        drifted = 0
        for row in rows:
            try:
                observed = await self.clients[channel].get_quantity(row["sku"])
            except ChannelError as error:
                log.warning(
                    "reconcile read failed",
                    channel=_name(channel),
                    sku=row["sku"],
                    error=str(error),
                )
                continue
            if observed != row["last_confirmed_quantity"]:
                drifted += 1
                CHANNEL_DRIFT.add(1, {"channel": _name(channel)})
                log.warning(
                    "channel drifted from the ledger",
                    channel=_name(channel),
                    sku=row["sku"],
                    observed=observed,
                    expected=row["last_confirmed_quantity"],
                )
            # A changed observation makes the row differ from desired: the pusher corrects it.
            await self.pool.execute(
                "UPDATE channel_sync_state SET last_reconciled_at = $3,"
                " last_confirmed_quantity = $4 WHERE channel = $1 AND sku = $2"
                " AND last_confirmed_quantity IS NOT DISTINCT FROM $5",
                channel,
                row["sku"],
                self.clock(),
                observed,
                row["last_confirmed_quantity"],
            )
        if drifted:
            self._wake[channel].set()
        return drifted

    async def run_reconciler(self, channel: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.policy.reconcile_every_s)
            if stop.is_set():
                return
            try:
                await self.reconcile(channel)
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("reconcile round failed", channel=_name(channel), error=repr(error))


def _name(channel: int) -> str:
    return Channel.Name(Channel.ValueType(channel))
