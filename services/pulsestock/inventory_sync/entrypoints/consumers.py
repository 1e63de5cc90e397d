"""NATS consumers of inventory-sync: channel orders from ingest, pulses from signal; the
warehouse sites from fulfillment are consumed by application/warehouse_sites.py."""

from __future__ import annotations

import asyncio

from pulsestock.bus import ConsumerSpec, Envelope, PermanentFailure, service_stream
from pulsestock.errors import InvalidArgument, NotFound, PreconditionFailed
from pulsestock.inventory_sync.adapters.ledger_repository import LedgerRepository
from pulsestock.inventory_sync.application.writer import LedgerWriter
from pulsestock.inventory_sync.domain.commands import (
    CancelOrder,
    EndPulse,
    ReserveOrder,
    SettleOrder,
    StartPulse,
)
from pulsestock.inventory_sync.domain.ledger import LineTarget, OrderPolicy
from pulsestock.telemetry import use_context
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
WAREHOUSES = ConsumerSpec(
    stream=service_stream("fulfillment").name,
    durable="inventory_sync__warehouses",
    filter_subjects=["fulfillment.warehouse_set.>"],
)


class OrderEvents:
    """Orders the channels have taken: reserve them (or record the backorder), release on
    cancellation, and bring each to where its channel says it stands (OrderChanged: paid,
    partly cancelled, shipped, returned). Idempotent through the ledger: a redelivered order
    changes nothing."""

    def __init__(
        self, writer: LedgerWriter, repository: LedgerRepository, policy: OrderPolicy
    ) -> None:
        self.writer = writer
        self.repository = repository
        self.policy = policy

    async def handle_batch(self, envelopes: list[Envelope]) -> list[Exception | None]:
        """Every order of a fetched batch into the writer at once: one group commit, and no
        task per message. Each is queued in its own message's trace."""
        pending: list[asyncio.Future[object]] = []
        for envelope in envelopes:
            future: asyncio.Future[object]
            try:
                with use_context(envelope.trace_context):
                    message = envelope.decode()
                    if isinstance(message, ingest_events_pb2.OrderPlaced):
                        future = self.writer.enqueue(self._reserve(message))  # type: ignore[assignment]
                    elif isinstance(message, ingest_events_pb2.OrderChanged):
                        future = self.writer.enqueue(self._settle(message))  # type: ignore[assignment]
                    else:
                        future = asyncio.ensure_future(self.handle(envelope))
            except Exception as error:
                future = asyncio.get_running_loop().create_future()
                future.set_exception(error)
            pending.append(future)
        results = await asyncio.gather(*pending, return_exceptions=True)
        return [_as_failure(r) if isinstance(r, BaseException) else None for r in results]

    @staticmethod
    def _reserve(message: ingest_events_pb2.OrderPlaced) -> ReserveOrder:
        lines = tuple((line.sku, line.quantity) for line in message.lines)
        if not lines:
            raise PermanentFailure("an order without lines")
        return ReserveOrder(
            channel=message.channel,
            channel_order_id=message.channel_order_id,
            lines=lines,
            paid=not message.awaiting_payment,
            already_sold=True,
            buyer_region=message.buyer_region,
        )

    def _settle(self, message: ingest_events_pb2.OrderChanged) -> SettleOrder:
        lines = tuple(
            (line.sku, LineTarget(line.ordered, line.cancelled, line.shipped, line.returned))
            for line in message.lines
        )
        if not lines:
            raise PermanentFailure("an order change without lines")
        return SettleOrder(
            channel=message.channel,
            channel_order_id=message.channel_order_id,
            lines=lines,
            payment=int(message.payment),  # ingest numbers payment states as the ledger does
            policy=self.policy,
        )

    async def handle(self, envelope: Envelope) -> None:
        message = envelope.decode()
        if isinstance(message, ingest_events_pb2.OrderChanged):
            try:
                await self.writer.submit(self._settle(message))
            except (InvalidArgument, PreconditionFailed) as error:
                raise PermanentFailure(str(error)) from error
        elif isinstance(message, ingest_events_pb2.OrderPlaced):
            try:
                await self.writer.submit(self._reserve(message))
            except (InvalidArgument, PreconditionFailed) as error:
                raise PermanentFailure(str(error)) from error
        elif isinstance(message, ingest_events_pb2.OrderCancelled):
            skus = await self.repository.skus_of_order(message.channel, message.channel_order_id)
            if not skus:
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
