"""The single writer: commands for the SKUs this replica owns queue up, and each batch of
waiting commands is decided in memory and committed as one append (group commit).

Every command's answer waits for its batch's commit. If the commit fails, every command in
the batch fails (callers retry; commands are idempotent). If another writer appended to one
of the streams meanwhile (optimistic concurrency, the safety net), the batch's SKUs are
reloaded from the log and the batch is decided again.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from google.protobuf.message import Message
from pulsestock.clock import Clock
from pulsestock.errors import DomainError, Unavailable
from pulsestock.eventstore import NewEvent, StreamAppend, WrongExpectedVersion
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
from pulsestock.inventory_sync.domain.placement import NO_SITES, Sites
from pulsestock.inventory_sync.domain.sku import ledger_stream
from pulsestock.telemetry import get_logger

log = get_logger(__name__)
MAX_CONFLICT_RETRIES = 3


@dataclass
class _Pending:
    command: Command
    future: asyncio.Future[Outcome]


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
        self._queue.put_nowait(_Pending(command, future))
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
        sites = self.sites()
        for item in batch:
            try:
                events_by_sku, outcome = decide(item.command, ledgers, now, self.hold, sites)
            except DomainError as error:
                outcomes.append(error)
                continue
            for sku, events in events_by_sku.items():
                for event in events:
                    ledgers[sku].apply(event)
                new_events[sku].extend(events)
            outcomes.append(outcome)
        for sku, events in new_events.items():
            # Stock that came free goes to the oldest backorders it covers before any
            # channel is told it can sell it.
            events.extend(fill_backorders(ledgers[sku], sites, now))
            quantity_events = channel_quantity_changes(ledgers[sku], now)
            for event in quantity_events:
                ledgers[sku].apply(event)
            events.extend(quantity_events)
        appends = [
            StreamAppend(ledger_stream(sku), base_versions[sku], [NewEvent.of(e) for e in events])
            for sku, events in new_events.items()
            if events
        ]
        if appends:
            await self.repository.commit(appends)
        for item, result in zip(batch, outcomes, strict=True):
            # The versions the streams have after this batch: a query can wait for them.
            if isinstance(result, Applied):
                result = Applied(result.sku, ledgers[result.sku].version)
            elif isinstance(result, ReserveOutcome):
                versions = tuple((sku, ledgers[sku].version) for sku in skus_of(item.command))
                result = replace(result, stream_versions=versions)
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
