"""Channel sync: every channel listing shows the quantity the ledger projects for it.

Intake (a JetStream consumer of ChannelQuantityChanged) keeps only the latest quantity per
(channel, SKU) — coalescing, so a burst of changes becomes one call. On a channel whose
listings come from the catalogue, a SKU's change recomputes every listing that draws on it
(a multi-pack of N shows floor(level / N), a bundle the minimum over its components); on a
channel without one, a SKU is its own listing (the naming convention). A pusher per channel
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
from collections import deque
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
from pulsestock.inventory_sync.adapters.catalogue_store import (
    CatalogueStore,
    ids_from_json,
    ids_to_json,
)
from pulsestock.inventory_sync.adapters.channels.base import (
    ChannelClient,
    ChannelError,
    ChannelTarget,
    RateLimiter,
)
from pulsestock.inventory_sync.domain.catalogue import (
    Catalogue,
    ChannelIds,
    ListingKey,
    listing_quantity,
)
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

MAX_REMEMBERED_CAUSES = 50_000  # (channel, listing)s whose change waits for a push, traced
CATALOGUE_POLL_S = 0.5  # how soon a catalogue change reaches the channels
# The most a channel accepts (TikTok Shop documents [1, 99999]): more would be refused and
# dead-lettered, and showing the cap oversells nothing.
MAX_SHOWN: dict[int, int] = {Channel.CHANNEL_TIKTOK_SHOP: 99_999}


def shown_quantity(channel: int, quantity: int) -> int:
    cap = MAX_SHOWN.get(channel)
    return quantity if cap is None else min(quantity, cap)


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


CALLS_WINDOW = timedelta(minutes=1)
# What a channel's rate limit counts, when not calls (Shopify: GraphQL query cost points).
RATE_UNITS: dict[int, str] = {Channel.CHANNEL_SHOPIFY: "query cost points"}


@dataclass(frozen=True)
class CallFigures:
    """A channel's calls as this process made them: for an operator's screen."""

    rate_limit_per_second: float  # documented; 0 when the client does not say
    rate_limit_unit: str
    ok: int  # in the last minute
    retried: int
    refused: int
    backoff_seconds: float  # the latest retry's; 0 after a success
    paused_until: datetime | None


@dataclass(frozen=True)
class _Due:
    listing: str
    target: ChannelTarget
    desired: int
    position: int
    failures: int


def _target(listing: str, ids: dict[str, str] | None) -> ChannelTarget:
    """A catalogue listing's channel ids, or the SKU itself (the naming convention). The
    pool decodes jsonb (pulsestock.eventstore's connection setup)."""
    return listing if ids is None else ids_from_json(ids)


# Intake on a channel without a catalogue: the SKU's level, and its own listing's row.
_CONVENTION_INTAKE = (
    "WITH level AS ("
    " INSERT INTO channel_sku_levels AS l (channel, sku, quantity, position)"
    " VALUES ($1, $2, $5, $4) ON CONFLICT (channel, sku) DO UPDATE"
    " SET quantity = excluded.quantity, position = excluded.position"
    " WHERE l.position < excluded.position)"
    " INSERT INTO channel_sync_state AS s"
    " (channel, listing, skus, desired_quantity, desired_position)"
    " VALUES ($1, $2, ARRAY[$2], $3, $4) ON CONFLICT (channel, listing) DO UPDATE SET"
    " desired_quantity = excluded.desired_quantity,"
    " desired_position = excluded.desired_position,"
    # A new quantity revives a dead-lettered listing; a backoff in progress stays.
    " dead_lettered = false,"
    " consecutive_failures ="
    "   CASE WHEN s.dead_lettered THEN 0 ELSE s.consecutive_failures END,"
    " next_attempt_at ="
    "   CASE WHEN s.dead_lettered THEN '-infinity' ELSE s.next_attempt_at END"
    " WHERE s.desired_position < excluded.desired_position"
)


class ChannelSync:
    def __init__(
        self,
        pool: asyncpg.Pool,
        nc: NATS,
        clients: dict[int, ChannelClient],
        clock: Clock,
        policy: SyncPolicy = SyncPolicy(),
        catalogue: CatalogueStore | None = None,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.clients = clients
        self.clock = clock
        self.policy = policy
        self.catalogue_store = catalogue
        # What the channels are synced by: refreshed by follow_catalogue, read without I/O.
        self.catalogue = Catalogue()
        self._synced: dict[ListingKey, tuple[ChannelIds, dict[str, int] | None]] = {}
        self._recheck: set[ListingKey] = set()
        self._wake = {channel: asyncio.Event() for channel in clients}
        self._paused_until: dict[int, datetime] = {}
        # (channel, listing) -> (position, span) of the newest change taken in, when traced.
        self._causes: dict[tuple[int, str], tuple[int, SpanContext]] = {}
        # Per channel: (when, outcome) of the calls of the last minute, and the last backoff.
        self._calls: dict[int, deque[tuple[datetime, str]]] = {c: deque() for c in clients}
        self._backoff: dict[int, float] = {}

    # --- figures --------------------------------------------------------------------------

    def _count_call(self, channel: int, outcome: str) -> None:
        calls = self._calls.setdefault(channel, deque())
        calls.append((self.clock(), outcome))
        self._forget_old_calls(calls)

    def _forget_old_calls(self, calls: deque[tuple[datetime, str]]) -> None:
        since = self.clock() - CALLS_WINDOW
        while calls and calls[0][0] <= since:
            calls.popleft()

    def call_figures(self, channel: int) -> CallFigures:
        calls = self._calls.get(channel, deque())
        self._forget_old_calls(calls)
        outcomes = [outcome for _, outcome in calls]
        limiter = getattr(self.clients.get(channel), "limiter", None)
        rate = limiter.rate / RateLimiter.HEADROOM if isinstance(limiter, RateLimiter) else 0.0
        paused = self._paused_until.get(channel)
        return CallFigures(
            rate_limit_per_second=rate,
            rate_limit_unit=RATE_UNITS.get(channel, "calls"),
            ok=outcomes.count("ok"),
            retried=outcomes.count("retry"),
            refused=outcomes.count("refused"),
            backoff_seconds=self._backoff.get(channel, 0.0),
            paused_until=paused if paused is not None and paused > self.clock() else None,
        )

    # --- intake ---------------------------------------------------------------------------

    async def intake(self, envelope: Envelope) -> None:
        message = envelope.decode()
        if not isinstance(message, ev.ChannelQuantityChanged):
            raise PermanentFailure(f"unexpected {envelope.type}")
        channel = message.channel
        if channel not in self.clients:
            return  # this channel is not connected
        catalogue = self.catalogue
        if not catalogue.maps_channel(channel):
            await self.pool.execute(
                _CONVENTION_INTAKE,
                channel,
                message.sku,
                shown_quantity(channel, message.quantity),
                message.sequence,
                message.quantity,  # the level itself: a multi-pack divides the whole of it
            )
            self._remember_cause(channel, message.sku, message.sequence)
            self._wake[channel].set()
            return
        keys = [k for k in catalogue.listings_affected(message.sku) if k.channel == channel]
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await conn.fetchval(
                "INSERT INTO channel_sku_levels AS l (channel, sku, quantity, position)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (channel, sku) DO UPDATE"
                " SET quantity = excluded.quantity, position = excluded.position"
                " WHERE l.position < excluded.position RETURNING true",
                channel,
                message.sku,
                message.quantity,
                message.sequence,
            )
            changed = await self._recompute(conn, channel, keys, catalogue) if moved else {}
        for listing, position in changed.items():
            self._remember_cause(channel, listing, position)
        if changed:
            self._wake[channel].set()

    async def _recompute(
        self,
        conn: asyncpg.Connection,
        channel: int,
        keys: list[ListingKey],
        catalogue: Catalogue,
    ) -> dict[str, int]:
        """Set each listing's desired quantity from its stock items' current levels on the
        channel. The listings' rows are locked (in one order) before the levels are read, so
        of two changes to a bundle's components the later to lock sees both levels. A
        retired listing shows 0. Returns the changed listings' new positions."""
        if not keys:
            return {}
        keys = sorted(set(keys))
        names = [str(key) for key in keys]
        await conn.execute(
            "INSERT INTO channel_sync_state (channel, listing, ids, desired_quantity,"
            " desired_position) SELECT $1, l, i, 0, 0 FROM unnest($2::text[], $3::jsonb[])"
            " AS u(l, i) ON CONFLICT (channel, listing) DO NOTHING",
            channel,
            names,
            [ids_to_json(catalogue.listings[key].ids) for key in keys],
        )
        current = {
            row["listing"]: row
            for row in await conn.fetch(
                "SELECT listing, ids, desired_quantity, skus, desired_position"
                " FROM channel_sync_state"
                " WHERE channel = $1 AND listing = ANY($2::text[]) ORDER BY listing FOR UPDATE",
                channel,
                names,
            )
        }
        units_of = {key: catalogue.stock_units_of.get(key) for key in keys}
        skus = sorted({sku for units in units_of.values() if units for sku in units})
        # A level not taken in yet (a listing mapped for a SKU whose stock has not moved
        # since this table existed, or on a channel connected since) is the read model's.
        levels = {
            row["sku"]: row["quantity"]
            for row in await conn.fetch(
                "SELECT s.sku, coalesce(l.quantity, q.quantity, 0) AS quantity"
                " FROM unnest($2::text[]) AS s(sku)"
                " LEFT JOIN channel_sku_levels l ON l.channel = $1 AND l.sku = s.sku"
                " LEFT JOIN channel_quantities q ON q.channel = $1 AND q.sku = s.sku",
                channel,
                skus,
            )
        }
        changed: dict[str, int] = {}
        for key, name in zip(keys, names, strict=True):
            units = units_of[key]
            quantity = shown_quantity(channel, listing_quantity(units, levels) if units else 0)
            row = current[name]
            listing_skus = sorted(units) if units else list(row["skus"])
            ids = ids_to_json(catalogue.listings[key].ids)
            if (
                row["desired_position"] > 0
                and row["desired_quantity"] == quantity
                and list(row["skus"]) == listing_skus
                and row["ids"] == ids
            ):
                continue
            changed[name] = await conn.fetchval(
                "UPDATE channel_sync_state SET desired_quantity = $3,"
                " desired_position = desired_position + 1, ids = $4, skus = $5,"
                " dead_lettered = false,"
                " consecutive_failures ="
                "   CASE WHEN dead_lettered THEN 0 ELSE consecutive_failures END,"
                " next_attempt_at ="
                "   CASE WHEN dead_lettered THEN '-infinity' ELSE next_attempt_at END"
                " WHERE channel = $1 AND listing = $2 RETURNING desired_position",
                channel,
                name,
                quantity,
                ids,
                listing_skus,
            )
        return changed

    # --- following the catalogue ----------------------------------------------------------

    async def follow_catalogue(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh_catalogue()
            except Exception as error:  # the database away, a bad row: next round
                log.warning("catalogue refresh failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CATALOGUE_POLL_S)

    async def refresh_catalogue(self) -> int:
        """Catch up with the catalogue; recompute the listings whose ids or composition (also
        through a kit) changed, on every connected channel. Returns how many were
        recomputed."""
        if self.catalogue_store is None:
            return 0
        catalogue = await self.catalogue_store.load()
        now = {
            key: (listing.ids, catalogue.stock_units_of.get(key))
            for key, listing in catalogue.listings.items()
            if key.channel in self.clients
        }
        changed = sorted(key for key in now if self._synced.get(key) != now[key])
        self.catalogue = catalogue
        by_channel: dict[int, list[ListingKey]] = {}
        # The last round's listings once more: an intake that began with the catalogue
        # before it (and so did not know a new listing) has committed its level by now.
        for key in sorted(set(changed) | self._recheck):
            if key in now:
                by_channel.setdefault(key.channel, []).append(key)
        self._recheck = set(changed)
        for channel, keys in by_channel.items():
            async with self.pool.acquire() as conn, conn.transaction():
                # A mapped channel's SKUs are no longer listings of their own.
                await conn.execute(
                    "DELETE FROM channel_sync_state WHERE channel = $1 AND ids IS NULL", channel
                )
                positions = await self._recompute(conn, channel, keys, catalogue)
            for listing, position in positions.items():
                self._remember_cause(channel, listing, position)
            self._wake[channel].set()
        self._synced = now
        return len(changed)

    def _remember_cause(self, channel: int, listing: str, sequence: int) -> None:
        """The trace of the newest change of (channel, listing), for the push that sends it."""
        if not tracing_enabled():
            return
        span = trace.get_current_span().get_span_context()
        if not span.is_valid:
            return
        known = self._causes.get((channel, listing))
        if known is None or known[0] < sequence:
            if known is None and len(self._causes) >= MAX_REMEMBERED_CAUSES:
                del self._causes[next(iter(self._causes))]  # the oldest: its push goes untraced
            self._causes[(channel, listing)] = (sequence, span)

    def _settled_cause(self, channel: int, item: _Due) -> None:
        """The change `item` sent is done with (confirmed or dead-lettered)."""
        known = self._causes.get((channel, item.listing))
        if known is not None and known[0] <= item.position:
            del self._causes[(channel, item.listing)]

    # --- pushing --------------------------------------------------------------------------

    async def run_pusher(self, channel: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                pushed = await self.push_due(channel)
            except Exception as error:  # a lost connection, an unreadable answer: next round
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
            "SELECT listing, ids, desired_quantity, desired_position, consecutive_failures"
            " FROM channel_sync_state WHERE channel = $1 AND NOT dead_lettered"
            " AND last_confirmed_quantity IS DISTINCT FROM desired_quantity"
            " AND next_attempt_at <= $2 AND ($4 OR ids IS NOT NULL)"
            " ORDER BY next_attempt_at LIMIT $3",
            channel,
            now,
            self.policy.push_batch,
            not self.catalogue.maps_channel(channel),
        )
        due = [
            _Due(
                r["listing"],
                _target(r["listing"], r["ids"]),
                r["desired_quantity"],
                r["desired_position"],
                r["consecutive_failures"],
            )
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
        self._count_call(channel, "ok")
        self._backoff[channel] = 0.0
        await self.pool.execute(
            "UPDATE channel_sync_state SET last_sent_quantity = $3, last_confirmed_quantity = $3,"
            " last_confirmed_at = $4, consecutive_failures = 0, last_error = '',"
            " next_attempt_at = '-infinity' WHERE channel = $1 AND listing = $2",
            channel,
            item.listing,
            item.desired,
            self.clock(),
        )

    async def _set_quantity(self, client: ChannelClient, channel: int, item: _Due) -> None:
        """The channel call, as a client span in the trace of the change it sends."""
        if not tracing_enabled():
            await client.set_quantity(item.target, item.desired)
            return
        known = self._causes.get((channel, item.listing))
        parent = (
            Context() if known is None else trace.set_span_in_context(NonRecordingSpan(known[1]))
        )
        with trace.get_tracer("pulsestock").start_as_current_span(
            "channel set_quantity",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "pulsestock.channel": _name(channel),
                "pulsestock.listing": item.listing,
                "pulsestock.quantity": item.desired,
                "pulsestock.attempt": item.failures + 1,
            },
        ):
            await client.set_quantity(item.target, item.desired)

    async def _failed(self, channel: int, item: _Due, error: ChannelError) -> None:
        outcome = "retry" if error.retryable else "refused"
        CHANNEL_CALLS.add(1, {"channel": _name(channel), "outcome": outcome})
        self._count_call(channel, outcome)
        attempt = item.failures + 1
        now = self.clock()
        if not error.retryable or attempt >= self.policy.max_failures:
            await self.pool.execute(
                "UPDATE channel_sync_state SET last_sent_quantity = $3, consecutive_failures = $4,"
                " last_error = $5, dead_lettered = true WHERE channel = $1 AND listing = $2",
                channel,
                item.listing,
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
        self._backoff[channel] = delay
        if error.retry_after:
            # A rate limit is the channel's, not the SKU's: pause the whole channel.
            self._paused_until[channel] = now + timedelta(seconds=error.retry_after)
        await self.pool.execute(
            "UPDATE channel_sync_state SET last_sent_quantity = $3, consecutive_failures = $4,"
            " last_error = $5, next_attempt_at = $6 WHERE channel = $1 AND listing = $2",
            channel,
            item.listing,
            item.desired,
            attempt,
            str(error)[:500],
            now + timedelta(seconds=delay),
        )

    async def _dead_letter(
        self, channel: int, item: _Due, error: ChannelError, attempts: int
    ) -> None:
        log.error(
            "channel sync dead-lettered",
            channel=_name(channel),
            listing=item.listing,
            error=str(error),
        )
        message = ev.ChannelQuantityChanged(
            sku=item.listing,
            channel=Channel.ValueType(channel),
            quantity=item.desired,
            sequence=item.position,
        )
        headers = {
            "ce-type": "pulsestock.v1.ChannelQuantityChanged",
            "ce-source": "/pulsestock/inventory-sync/channel-sync",
            "ce-subject": item.listing,
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
            " AND NOT dead_lettered AND last_confirmed_quantity IS DISTINCT FROM desired_quantity"
            " AND ($2 OR ids IS NOT NULL)",
            channel,
            not self.catalogue.maps_channel(channel),
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
        """Read back the least recently checked listings; mark drift for the pusher. Returns
        how many drifted."""
        rows = await self.pool.fetch(
            "SELECT listing, ids, desired_quantity, last_confirmed_quantity"
            " FROM channel_sync_state WHERE channel = $1 AND NOT dead_lettered"
            " AND last_confirmed_quantity IS NOT DISTINCT FROM desired_quantity"
            " AND ($3 OR ids IS NOT NULL)"
            " ORDER BY last_reconciled_at NULLS FIRST LIMIT $2",
            channel,
            self.policy.reconcile_batch,
            not self.catalogue.maps_channel(channel),
        )
        drifted = 0
        for row in rows:
            try:
                observed = await self.clients[channel].get_quantity(
                    _target(row["listing"], row["ids"])
                )
            except ChannelError as error:
                log.warning(
                    "reconcile read failed",
                    channel=_name(channel),
                    listing=row["listing"],
                    error=str(error),
                )
                continue
            if observed != row["last_confirmed_quantity"]:
                drifted += 1
                CHANNEL_DRIFT.add(1, {"channel": _name(channel)})
                log.warning(
                    "channel drifted from the ledger",
                    channel=_name(channel),
                    listing=row["listing"],
                    observed=observed,
                    expected=row["last_confirmed_quantity"],
                )
            # A changed observation makes the row differ from desired: the pusher corrects it.
            await self.pool.execute(
                "UPDATE channel_sync_state SET last_reconciled_at = $3,"
                " last_confirmed_quantity = $4 WHERE channel = $1 AND listing = $2"
                " AND last_confirmed_quantity IS NOT DISTINCT FROM $5",
                channel,
                row["listing"],
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
            except Exception as error:  # as in the pusher: the next round tries again
                log.warning("reconcile round failed", channel=_name(channel), error=repr(error))


def _name(channel: int) -> str:
    return Channel.Name(Channel.ValueType(channel))
