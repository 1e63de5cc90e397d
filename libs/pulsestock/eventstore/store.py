"""Append, read a stream, read all in commit order, wake readers. asyncpg, one schema per service.

Why appends are serialised: concurrent transactions commit out of order, so a reader tailing
`global_position` could pass a position whose transaction commits later and skip it. Every
append takes one transaction-scoped advisory lock per schema before it draws positions and
holds it to commit, so positions are handed out in commit order and a reader that has seen
position N has seen everything below N. Throughput comes from batching many events into one
append (group commit), not from parallel appends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.context import Context
from pulsestock.bus.codec import cloudevent_headers, header_block
from pulsestock.eventstore.events import NewEvent, RecordedEvent, StreamAppend, WrongExpectedVersion
from pulsestock.metrics import EVENTS_APPENDED
from pulsestock.telemetry import tracing_enabled

# Errors that mean the connection is gone (not that a statement failed): take a new one.
# A server shutting down first tells its sessions so (57P01 on a fast shutdown, 57P02 when a
# crashed backend takes the others down) before it closes them: the connection is as good as
# lost, and a writer that kept it would next fail with a confused protocol state instead.
CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    # A connection whose protocol is left mid-operation (its server went away between an
    # error and the ready-for-query that should follow it): unusable, like a closed one.
    asyncpg.InternalClientError,
)

OutboxRoute = Callable[[str, NewEvent], str | None]
"""(stream id, event) -> JetStream subject to publish it on, or None to keep it private."""

WRONG_EXPECTED_VERSION_SQLSTATE = "PS409"
# metadata and recorded_at come as text: a Python jsonb codec call and asyncpg's timestamptz
# decoding cost more per row than one json.loads over the whole page and fromisoformat. The
# time is formatted in UTC by to_char, so neither DateStyle nor TimeZone can change the text.
_SELECT_EVENTS = (
    "SELECT global_position, stream_id, stream_version, event_id, type, data, metadata::text,"
    " to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
    " FROM events"
)
_READ_ALL = f"{_SELECT_EVENTS} WHERE global_position > $1 ORDER BY global_position LIMIT $2"

_FIELDS = (
    "global_position",
    "stream_id",
    "stream_version",
    "event_id",
    "type",
    "data",
    "metadata",
    "recorded_at",
)
# _recorded builds RecordedEvents without calling their (frozen dataclass) __init__, which costs
# more than the rest of decoding a row: refuse to load if the class grows a field or a check.
if (
    tuple(f.name for f in dataclasses.fields(RecordedEvent)) != _FIELDS
    or hasattr(RecordedEvent, "__post_init__")
    or hasattr(RecordedEvent, "__slots__")
):
    raise RuntimeError("RecordedEvent changed: update pulsestock.eventstore.store._recorded")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


# How long opening a connection may take. asyncpg waits 60 s by default: a server whose
# address drops packets (a dead node) would hold each call until its gRPC deadline; this
# fails it as UNAVAILABLE instead. A refused or absent server fails at once either way.
CONNECT_TIMEOUT_S = 5.0


async def connect_pool(
    dsn: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    application_name: str = "",
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> asyncpg.Pool:
    """A pool whose connections see the service's schema first. A connection the server
    dropped (a restart) is replaced when next acquired."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout_s,
        init=_init_connection,
        server_settings={
            "search_path": schema,
            "application_name": application_name or f"pulsestock-{schema}",
        },
    )
    assert pool is not None
    return pool


_stream_traces: ContextVar[Mapping[str, Context] | None] = ContextVar(
    "pulsestock_stream_traces", default=None
)


@contextmanager
def traced_streams(contexts: Mapping[str, Context]) -> Iterator[None]:
    """Appends made inside give the outbox rows of each stream listed the trace context
    listed for it, instead of the current one: a batch writer that appends many callers'
    decisions in one statement says whose trace each stream's messages continue."""
    token = _stream_traces.set(contexts)
    try:
        yield
    finally:
        _stream_traces.reset(token)


def notify_channel(schema: str, what: str) -> str:
    return f"pulsestock_{what}_{schema}"


def _append_error(error: Exception, first: StreamAppend) -> Exception:
    """Translate what append_events raised into the store's own errors."""
    if getattr(error, "sqlstate", None) == WRONG_EXPECTED_VERSION_SQLSTATE:
        detail = json.loads(getattr(error, "detail", None) or "{}")
        return WrongExpectedVersion(detail["stream_id"], detail["expected"], detail["actual"])
    if isinstance(error, asyncpg.UniqueViolationError):
        if "event_id" in (getattr(error, "constraint_name", None) or ""):
            return ValueError(f"an event id was appended before: {error}")
        # Safety net: the version check runs under the append lock, so only a writer that
        # bypassed append_events can collide on (stream_id, stream_version).
        return WrongExpectedVersion(first.stream_id, first.expected_version, -1)
    return error


def _recorded(rows: Sequence[asyncpg.Record]) -> list[RecordedEvent]:
    """Rows of _SELECT_EVENTS as events, with the cyclic GC paused meanwhile: every event is
    live until the page is returned, so collections during the loop only promote them (a page
    read with collections running cost a third more, mostly in full collections)."""
    if not rows:
        return []
    metadata = json.loads("[" + ",".join([row[6] for row in rows]) + "]")
    new, setattr_, parse_time = object.__new__, object.__setattr__, datetime.fromisoformat
    events: list[RecordedEvent] = []
    append = events.append
    collecting = gc.isenabled()
    gc.disable()
    try:
        for (position, stream_id, version, event_id, type_, data, _, recorded_at), meta in zip(
            rows, metadata, strict=True
        ):
            event = new(RecordedEvent)
            setattr_(
                event,
                "__dict__",
                {
                    "global_position": position,
                    "stream_id": stream_id,
                    "stream_version": version,
                    "event_id": event_id,
                    "type": type_,
                    "data": data,
                    "metadata": meta,
                    "recorded_at": parse_time(recorded_at),
                },
            )
            append(event)
    finally:
        if collecting:
            gc.enable()
    return events


class EventStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        *,
        source: str = "",
        outbox_route: OutboxRoute | None = None,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.source = source or f"/pulsestock/{schema}"
        self._outbox_route = outbox_route

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        conn: asyncpg.Connection | None = None,
    ) -> int:
        """Append to one stream; returns its new version. Raises WrongExpectedVersion."""
        (version,) = await self.append_many(
            [StreamAppend(stream_id, expected_version, list(events))], conn=conn
        )
        return version

    async def append_many(
        self, appends: Sequence[StreamAppend], *, conn: asyncpg.Connection | None = None
    ) -> list[int]:
        """Append to several streams atomically: all succeed or none (one transaction)."""
        if not tracing_enabled():
            versions = await self._append_many(appends, conn)
        else:
            with trace.get_tracer("pulsestock").start_as_current_span(
                "eventstore append",
                attributes={
                    "db.system.name": "postgresql",
                    "db.namespace": self.schema,
                    "pulsestock.streams": len(appends),
                    "pulsestock.events": sum(len(a.events) for a in appends),
                },
            ):
                versions = await self._append_many(appends, conn)
        _count_appended(appends)
        return versions

    async def _append_many(
        self, appends: Sequence[StreamAppend], conn: asyncpg.Connection | None
    ) -> list[int]:
        stream_ids = [a.stream_id for a in appends]
        if len(set(stream_ids)) != len(stream_ids):
            raise ValueError("append_many got the same stream twice")
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        outbox: tuple[list[Any], ...] = ([], [], [], [], [])
        route = self._outbox_route
        traces = _stream_traces.get()
        for append in appends:
            trace_context = traces.get(append.stream_id) if traces else None
            for offset, event in enumerate(append.events, start=1):
                for column, value in zip(
                    columns,
                    (
                        append.stream_id,
                        append.expected_version + offset,
                        event.event_id,
                        event.type,
                        event.data,
                        event.metadata,
                    ),
                    strict=True,
                ):
                    column.append(value)
                subject = route(append.stream_id, event) if route else None
                if subject is not None:
                    self._add_to_outbox(outbox, append.stream_id, event, subject, trace_context)
        try:
            await (conn or self.pool).execute(
                "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                stream_ids,
                [a.expected_version for a in appends],
                *columns,
                *outbox,
            )
        except asyncpg.PostgresError as error:
            raise _append_error(error, appends[0]) from error
        return [a.expected_version + len(a.events) for a in appends]

    def _add_to_outbox(
        self,
        outbox: tuple[list[Any], ...],
        stream_id: str,
        event: NewEvent,
        subject: str,
        trace_context: Context | None = None,
    ) -> None:
        """Queue an event; its `traceparent` is the current span's unless `trace_context`
        names the trace it continues."""
        headers = cloudevent_headers(
            event_id=str(event.event_id),
            event_type=event.type,
            source=self.source,
            subject=stream_id,
            context=trace_context,
        )
        for column, value in zip(
            outbox,
            (event.event_id, subject, event.type, event.data, header_block(headers)),
            strict=True,
        ):
            column.append(value)

    async def enqueue_messages(
        self,
        messages: Sequence[tuple[str, NewEvent, str]],
        *,
        conn: asyncpg.Connection | None = None,
    ) -> None:
        """Put (subject, event, ce-subject) in the outbox without logging them as stream events
        (for services whose facts are not event-sourced, e.g. ingest's samples). One statement,
        so it joins the caller's transaction (or is its own) without a savepoint."""
        if not messages:
            return
        if not tracing_enabled():
            await self._enqueue_messages(messages, conn)
            return
        with trace.get_tracer("pulsestock").start_as_current_span(
            "outbox enqueue",
            attributes={
                "db.system.name": "postgresql",
                "db.namespace": self.schema,
                "pulsestock.events": len(messages),
            },
        ):
            await self._enqueue_messages(messages, conn)

    async def _enqueue_messages(
        self,
        messages: Sequence[tuple[str, NewEvent, str]],
        conn: asyncpg.Connection | None,
    ) -> None:
        outbox: tuple[list[Any], ...] = ([], [], [], [], [])
        for subject, event, ce_subject in messages:
            self._add_to_outbox(outbox, ce_subject, event, subject)
        await (conn or self.pool).execute(
            "WITH queued AS (INSERT INTO outbox (event_id, subject, type, data, headers)"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[]))"
            " SELECT pg_notify($6, '')",
            *outbox,
            notify_channel(self.schema, "outbox"),
        )

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        limit: int | None = None,
        *,
        conn: asyncpg.Connection | None = None,
    ) -> list[RecordedEvent]:
        query = (
            f"{_SELECT_EVENTS} WHERE stream_id = $1 AND stream_version >= $2"
            " ORDER BY stream_version LIMIT $3"
        )
        rows = await (conn or self.pool).fetch(query, stream_id, from_version, limit)
        return _recorded(rows)

    async def stream_version(
        self, stream_id: str, *, conn: asyncpg.Connection | None = None
    ) -> int:
        version = await (conn or self.pool).fetchval(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1", stream_id
        )
        return int(version)

    async def read_all(
        self,
        after_position: int,
        limit: int = 1000,
        *,
        conn: asyncpg.Connection | None = None,
    ) -> list[RecordedEvent]:
        """Events after a global position, in commit order, never skipping one (see module doc)."""
        return _recorded(await (conn or self.pool).fetch(_READ_ALL, after_position, limit))

    async def read_all_pages(
        self, after_position: int, page_size: int = 1000, *, conn: asyncpg.Connection
    ) -> AsyncGenerator[list[RecordedEvent]]:
        """Every page read_all would return from `after_position` on, until an empty one (not
        yielded), for bulk catch-up: the query for page n+1 is sent before page n is decoded,
        so PostgreSQL reads while Python decodes. Each page is the read_all of the position
        after the previous one, so order and the no-skip rule are read_all's. No query is in
        flight while a page is yielded: the caller may use `conn` (e.g. fold the page in its
        transaction) between pages."""
        rows = await conn.fetch(_READ_ALL, after_position, page_size)
        while rows:
            following = asyncio.ensure_future(conn.fetch(_READ_ALL, rows[-1][0], page_size))
            try:
                await asyncio.sleep(0)  # let it send the query
                page = _recorded(rows)
            finally:
                rows = await following
            yield page

    async def head_position(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(global_position), 0) FROM events"))


class Wakeup:
    """LISTEN on a store channel; `wait` returns on a notification or after `timeout` (the
    polling fallback, e.g. when a notification was lost with a dropped connection).

    A listening connection the server dropped (a restart) is opened again by a later `wait`,
    at most once per `timeout`, so the reader goes back from polling to being woken."""

    def __init__(self, dsn: str | None, channel: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._next_attempt = 0.0

    async def __aenter__(self) -> Wakeup:
        await self._listen(again=False)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._conn is not None:
            with contextlib.suppress(*CONNECTION_LOST):
                await self._conn.close()
            self._conn = None

    async def _listen(self, *, again: bool) -> None:
        if self._dsn is None:
            return
        try:
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return  # poll meanwhile
        try:
            await conn.add_listener(self._channel, self._notified)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            with contextlib.suppress(Exception):
                conn.terminate()
            return
        self._conn = conn
        if again:  # notifications were missed while not listening: look once, at once
            self._event.set()

    def _notified(self, *_: object) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        if self._dsn is not None and (self._conn is None or self._conn.is_closed()):
            now = asyncio.get_running_loop().time()
            if now >= self._next_attempt:
                self._next_attempt = now + seconds
                self._conn = None
                await self._listen(again=True)
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()


def _count_appended(appends: Sequence[StreamAppend]) -> None:
    """pulsestock_events_appended_total by stream category (`sku-ABC` -> `sku`); appended in
    the caller's transaction when it passed one, which may still roll back (rare: a count)."""
    by_category: dict[str, int] = {}
    for append in appends:
        category = append.stream_id.split("-", 1)[0]
        by_category[category] = by_category.get(category, 0) + len(append.events)
    for category, count in by_category.items():
        EVENTS_APPENDED.add(count, {"stream_category": category})
