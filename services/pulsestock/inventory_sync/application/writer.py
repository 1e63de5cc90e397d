"""The single writer: commands for the SKUs this replica owns queue up, and each batch of
waiting commands is decided in memory and committed as one append (group commit).

Every command's answer waits for its batch's commit. If the commit fails, every command in
the batch fails (callers retry; commands are idempotent). If another writer appended to one
of the streams meanwhile (optimistic concurrency, the safety net), the batch's SKUs are
reloaded from the log and the batch is decided again.

The writer's task is nobody's caller, so each command carries its submitter's trace context:
its decision is a "ledger decide" span in that trace, the batch's append a "ledger commit"
span linked to every command's, and a SKU's published events (channel quantities, ...)
continue the trace of the last command in the batch that changed the SKU.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.context import Context
from pulsestock.clock import Clock
from pulsestock.errors import DomainError, Unavailable
from pulsestock.eventstore import NewEvent, StreamAppend, WrongExpectedVersion
from pulsestock.eventstore.store import traced_streams
from pulsestock.inventory_sync.adapters.ledger_repository import LedgerRepository
from pulsestock.inventory_sync.domain.commands import (
    Applied,
    Command,
    Outcome,
    ReserveOutcome,
    decide,
    fill_backorders,
    skus_of,
)
from pulsestock.inventory_sync.domain.ledger import SkuLedger, channel_quantity_changes
from pulsestock.inventory_sync.domain.placement import NO_SITES, Sites, reachable
from pulsestock.inventory_sync.domain.sku import ledger_stream
from pulsestock.metrics import RESERVATIONS
from pulsestock.telemetry import batch_span, capture_context, get_logger, tracing_enabled

log = get_logger(__name__)
MAX_CONFLICT_RETRIES = 3


@dataclass
class _Pending:
    command: Command
    future: asyncio.Future[Outcome]
    trace: Context  # the submitter's, captured when it was queued


class LedgerWriter:
    def __init__(
        self,
        repository: LedgerRepository,
        clock: Clock,
        *,
        hold: timedelta = timedelta(minutes=10),
        max_batch: int = 1000,
        owns: Callable[[str], bool] = lambda _sku: True,
        sites: Callable[[], Sites] = lambda: NO_SITES,
    ) -> None:
        self.repository = repository
        self.clock = clock
        self.hold = hold
        self.max_batch = max_batch
        self.owns = owns
        self.sites = sites  # what is known of each warehouse now, for placing reservations
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._ledgers: dict[str, SkuLedger] = {}

    async def submit(self, command: Command) -> Outcome:
        return await self.enqueue(command)

    def enqueue(self, command: Command) -> asyncio.Future[Outcome]:
        """Queue a command; the future resolves when its batch has committed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        for sku in skus_of(command):
            if not self.owns(sku):
                future.set_exception(
                    Unavailable(f"SKU {sku} belongs to a partition another replica owns; retry")
                )
                return future
        self._queue.put_nowait(_Pending(command, future, capture_context()))
        return future

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait(
                    [getting, stopping], return_when=asyncio.FIRST_COMPLETED
                )
                if getting not in done:
                    getting.cancel()
                    break
                batch = [getting.result()]
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._process(batch)
        finally:
            stopping.cancel()
            while not self._queue.empty():
                self._queue.get_nowait().future.set_exception(Unavailable("shutting down"))

    async def _process(self, batch: list[_Pending]) -> None:
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            try:
                await self._decide_and_commit(batch)
                return
            except WrongExpectedVersion as conflict:
                self._forget(batch)
                log.warning(
                    "ledger conflict, re-deciding batch", attempt=attempt, error=str(conflict)
                )
            except Exception as error:  # the commit failed: every command in it fails
                self._forget(batch)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
        for item in batch:
            if not item.future.done():
                item.future.set_exception(Unavailable("the ledger kept changing; retry"))

    def _forget(self, batch: list[_Pending]) -> None:
        for item in batch:
            for sku in skus_of(item.command):
                self._ledgers.pop(sku, None)

    async def _decide_and_commit(self, batch: list[_Pending]) -> None:
        now = self.clock()
        skus = list(dict.fromkeys(sku for item in batch for sku in skus_of(item.command)))
        for sku in skus:
            if sku not in self._ledgers:
                self._ledgers[sku] = await self.repository.load(sku)
        ledgers = self._ledgers
        base_versions = {sku: ledgers[sku].version for sku in skus}
        new_events: dict[str, list[Message]] = defaultdict(list)
        outcomes: list[Outcome | Exception] = []
        causes: dict[str, Context] = {}  # SKU -> the trace its published events continue
        sites = self.sites()
        tracing = tracing_enabled()
        for item in batch:
            span = _decision_span(item) if tracing else None
            cause = item.trace if span is None else trace.set_span_in_context(span)
            try:
                events_by_sku, outcome = decide(item.command, ledgers, now, self.hold, sites)
            except DomainError as error:
                if span is not None:
                    span.set_attribute("pulsestock.refused", str(error))
                outcomes.append(error)
                continue
            finally:
                if span is not None:
                    span.end()
            for sku, events in events_by_sku.items():
                for event in events:
                    ledgers[sku].apply(event)
                new_events[sku].extend(events)
                causes[sku] = cause
            outcomes.append(outcome)
        for sku, events in new_events.items():
            # Stock that came free goes to the oldest backorders it covers before any
            # channel is told it can sell it.
            events.extend(fill_backorders(ledgers[sku], sites, now))
            quantity_events = channel_quantity_changes(
                ledgers[sku], now, reachable(ledgers[sku], sites)
            )
            for event in quantity_events:
                ledgers[sku].apply(event)
            events.extend(quantity_events)
        appends = [
            StreamAppend(ledger_stream(sku), base_versions[sku], [NewEvent.of(e) for e in events])
            for sku, events in new_events.items()
            if events
        ]
        if appends:
            with (
                batch_span(
                    "ledger commit",
                    [item.trace for item in batch],
                    {"pulsestock.batch.size": len(batch), "pulsestock.streams": len(appends)},
                ),
                traced_streams({ledger_stream(sku): causes[sku] for sku in new_events}),
            ):
                await self.repository.commit(appends)
        for item, result in zip(batch, outcomes, strict=True):
            # The versions the streams have after this batch: a query can wait for them.
            if isinstance(result, Applied):
                result = Applied(result.sku, ledgers[result.sku].version)
            elif isinstance(result, ReserveOutcome):
                versions = tuple((sku, ledgers[sku].version) for sku in skus_of(item.command))
                result = replace(result, stream_versions=versions)
                RESERVATIONS.add(1, {"outcome": "reserved" if result.reserved else "oversold"})
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)


def _decision_span(item: _Pending) -> trace.Span:
    """The decision on one command, in the trace of whoever submitted it."""
    return trace.get_tracer("pulsestock").start_span(
        "ledger decide",
        context=item.trace,
        attributes={
            "pulsestock.command": type(item.command).__name__,
            "pulsestock.skus": list(skus_of(item.command)),
        },
    )
