"""NATS consumers of inventory-sync: channel orders from ingest, pulses from signal; the
warehouse sites from fulfillment are consumed by application/warehouse_sites.py."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from pulsestock.bus import ConsumerSpec, Envelope, PermanentFailure, service_stream
from pulsestock.clock import Clock, utc_now
from pulsestock.errors import InvalidArgument, NotFound, PreconditionFailed
from pulsestock.inventory_sync.adapters.catalogue_store import CatalogueStore
from pulsestock.inventory_sync.adapters.ledger_repository import LedgerRepository
from pulsestock.inventory_sync.adapters.unresolved_orders import UnresolvedOrders
from pulsestock.inventory_sync.application.order_lines import (
    OrderMessage,
    Unresolved,
    placed_lines,
    settled_lines,
)
from pulsestock.inventory_sync.application.writer import LedgerWriter
from pulsestock.inventory_sync.domain.catalogue import Catalogue
from pulsestock.inventory_sync.domain.commands import (
    CancelOrder,
    EndPulse,
    ReserveOrder,
    SettleOrder,
    StartPulse,
)
from pulsestock.inventory_sync.domain.ledger import LineTarget, OrderPolicy
from pulsestock.telemetry import get_logger, use_context
from pulsestock.v1 import ingest_events_pb2, signal_events_pb2
from pulsestock.v1.common_pb2 import Channel

ORDERS = ConsumerSpec(
    stream=service_stream("ingest").name,
    durable="inventory_sync__orders",
    filter_subjects=["ingest.order_placed.>", "ingest.order_cancelled.>", "ingest.order_changed.>"],
    max_deliver=8,
)
PULSES = ConsumerSpec(
    stream=service_stream("signal").name,
    durable="inventory_sync__pulses",
    filter_subjects=["signal.pulse_detected.>", "signal.pulse_ended.>"],
)
log = get_logger(__name__)

WAREHOUSES = ConsumerSpec(
    stream=service_stream("fulfillment").name,
    durable="inventory_sync__warehouses",
    filter_subjects=["fulfillment.warehouse_set.>"],
)


_ORDER_TYPES: dict[str, type[OrderMessage]] = {
    kind.DESCRIPTOR.full_name: kind
    for kind in (ingest_events_pb2.OrderPlaced, ingest_events_pb2.OrderChanged)
}
REDRIVE_PAGE = 500


class OrderEvents:
    """Orders the channels have taken: resolve their lines through the catalogue, reserve them
    (or record the backorder), release on cancellation, and bring each to where its channel
    says it stands (OrderChanged: paid, partly cancelled, shipped, returned). Idempotent
    through the ledger: a redelivered order changes nothing. An order the catalogue cannot
    resolve is recorded (UnresolvedOrders) and acknowledged: never dropped, never guessed."""

    def __init__(
        self,
        writer: LedgerWriter,
        repository: LedgerRepository,
        policy: OrderPolicy,
        catalogue: CatalogueStore,
        unresolved: UnresolvedOrders,
        clock: Clock = utc_now,
    ) -> None:
        self.writer = writer
        self.repository = repository
        self.policy = policy
        self.catalogue = catalogue
        self.unresolved = unresolved
        self.clock = clock
        self._catalogue_lock = asyncio.Lock()  # the store's cache is not for concurrent use

    async def current_catalogue(self) -> Catalogue:
        """Caught up with the catalogue's stream: one indexed read, per batch of orders."""
        async with self._catalogue_lock:
            return await self.catalogue.load()

    async def handle_batch(self, envelopes: list[Envelope]) -> list[Exception | None]:
        """Every order of a fetched batch into the writer at once: one group commit, and no
        task per message. Each is queued in its own message's trace."""
        catalogue = await self.current_catalogue()
        pending: list[asyncio.Future[object]] = []
        for envelope in envelopes:
            future: asyncio.Future[object]
            try:
                with use_context(envelope.trace_context):
                    message = envelope.decode()
                    if isinstance(message, OrderMessage):
                        future = self._enqueue(catalogue, message)
                    else:
                        future = asyncio.ensure_future(self.handle(envelope))
            except Exception as error:
                future = asyncio.get_running_loop().create_future()
                future.set_exception(error)
            pending.append(future)
        results = await asyncio.gather(*pending, return_exceptions=True)
        return [_as_failure(r) if isinstance(r, BaseException) else None for r in results]

    def _enqueue(self, catalogue: Catalogue, message: OrderMessage) -> asyncio.Future[object]:
        command = self._command(catalogue, message)
        if isinstance(command, Unresolved):
            return asyncio.ensure_future(self._record_unresolved(message, command))
        return self.writer.enqueue(command)  # type: ignore[return-value]

    def _command(
        self, catalogue: Catalogue, message: OrderMessage
    ) -> ReserveOrder | SettleOrder | Unresolved:
        if not message.lines:
            raise PermanentFailure("an order without lines")
        if isinstance(message, ingest_events_pb2.OrderPlaced):
            placed = placed_lines(catalogue, message)
            return placed if isinstance(placed, Unresolved) else self._reserve(message, placed)
        settled = settled_lines(catalogue, message)
        return settled if isinstance(settled, Unresolved) else self._settle(message, settled)

    async def _record_unresolved(self, message: OrderMessage, unresolved: Unresolved) -> None:
        revision = message.revision if isinstance(message, ingest_events_pb2.OrderChanged) else 0
        await self.unresolved.record(
            message.channel,
            message.channel_order_id,
            message.marketplace_id,
            unresolved.lines,
            message.DESCRIPTOR.full_name,
            message.SerializeToString(),
            revision,
            self.clock(),
        )
        log.warning(
            "order not resolved by the catalogue: recorded, not reserved",
            channel=message.channel,
            channel_order_id=message.channel_order_id,
            listings=[line.listing_id or line.sku for line in unresolved.lines],
        )

    async def follow_catalogue(
        self, stop: asyncio.Event, every_s: float = 1.0, anyway_every_s: float = 30.0
    ) -> None:
        """Once the catalogue changes (and every `anyway_every_s` regardless, for orders
        recorded by a batch that read an older catalogue, or left by a failed attempt), try
        the unresolved orders again: an order waiting for its listing is reserved as soon as
        the listing is mapped."""
        seen, last = -1, 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            try:
                catalogue = await self.current_catalogue()
                if catalogue.version != seen or loop.time() - last >= anyway_every_s:
                    await self.redrive(catalogue)
                    seen, last = catalogue.version, loop.time()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("unresolved orders not retried", error=repr(error))

    async def redrive(self, catalogue: Catalogue) -> int:
        """Submit every unresolved order the catalogue now resolves; returns how many.

        Each order is claimed (marked resolved) before it is submitted, so a cancellation
        arriving meanwhile no longer finds it unresolved and waits for the reservation like
        any cancellation that overtakes its order; a claim whose submission fails is let go
        for the next pass."""
        done = 0
        async for unresolved in self.unresolved.open_orders(REDRIVE_PAGE):
            kind = _ORDER_TYPES.get(unresolved.message_type)
            if kind is None:
                continue
            message = kind.FromString(unresolved.message)
            command = self._command(catalogue, message)
            if isinstance(command, Unresolved):
                continue
            if not await self.unresolved.claim(unresolved, self.clock()):
                continue  # cancelled, superseded by a newer message, or claimed elsewhere
            try:
                await self.writer.submit(command)
            except (InvalidArgument, PreconditionFailed) as error:
                log.warning(
                    "unresolved order refused once resolved",
                    channel_order_id=message.channel_order_id,
                    error=str(error),
                )
            except Exception as error:  # e.g. its SKUs' partition is another replica's
                await self.unresolved.release(unresolved)
                log.warning(
                    "unresolved order not submitted: retried later",
                    channel_order_id=message.channel_order_id,
                    error=repr(error),
                )
                continue
            done += 1
        return done

    @staticmethod
    def _reserve(
        message: ingest_events_pb2.OrderPlaced, lines: tuple[tuple[str, int], ...]
    ) -> ReserveOrder:
        return ReserveOrder(
            channel=message.channel,
            channel_order_id=message.channel_order_id,
            lines=lines,
            paid=not message.awaiting_payment,
            already_sold=True,
            buyer_region=message.buyer_region,
        )

    def _settle(
        self,
        message: ingest_events_pb2.OrderChanged,
        lines: tuple[tuple[str, LineTarget], ...],
    ) -> SettleOrder:
        return SettleOrder(
            channel=message.channel,
            channel_order_id=message.channel_order_id,
            lines=lines,
            payment=int(message.payment),  # ingest numbers payment states as the ledger does
            policy=self.policy,
        )

    async def handle(self, envelope: Envelope) -> None:
        message = envelope.decode()
        if isinstance(message, OrderMessage):
            try:
                await self._enqueue(await self.current_catalogue(), message)
            except (InvalidArgument, PreconditionFailed) as error:
                raise PermanentFailure(str(error)) from error
        elif isinstance(message, ingest_events_pb2.OrderCancelled):
            skus = await self.repository.skus_of_order(message.channel, message.channel_order_id)
            if not skus:
                if await self.unresolved.cancel(
                    message.channel, message.channel_order_id, self.clock()
                ):
                    return  # it was never reserved: noted on the unresolved order
                # The cancellation may overtake its order: retry until the order lands.
                raise NotFound(f"order {message.channel_order_id} not seen yet")
            await self.writer.submit(CancelOrder(message.channel, message.channel_order_id, skus))
        else:
            raise PermanentFailure(f"unexpected {envelope.type}")


def _as_failure(error: BaseException) -> Exception:
    """A rejected order can never succeed: dead-letter it rather than retry it."""
    if isinstance(error, InvalidArgument | PreconditionFailed):
        return PermanentFailure(str(error))
    return error if isinstance(error, Exception) else RuntimeError(repr(error))


class PulseEvents:
    """A pulse makes its channel the SKU's hot channel while it lasts (pulse priority)."""

    def __init__(self, writer: LedgerWriter) -> None:
        self.writer = writer

    async def handle(self, envelope: Envelope) -> None:
        message = envelope.decode()
        if isinstance(message, signal_events_pb2.PulseDetected):
            try:
                channel = Channel.Value(message.hot_channel or "CHANNEL_TIKTOK_SHOP")
            except ValueError as error:
                raise PermanentFailure(f"unknown channel {message.hot_channel!r}") from error
            await self.writer.submit(StartPulse(message.sku, message.pulse_id, channel))
        elif isinstance(message, signal_events_pb2.PulseEnded):
            await self.writer.submit(EndPulse(message.sku, message.pulse_id))
        else:
            raise PermanentFailure(f"unexpected {envelope.type}")
