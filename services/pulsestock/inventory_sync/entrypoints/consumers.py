"""NATS consumers of inventory-sync: channel orders from ingest, pulses from signal."""

from __future__ import annotations

from pulsestock.bus import ConsumerSpec, Envelope, PermanentFailure, service_stream
from pulsestock.errors import InvalidArgument, NotFound, PreconditionFailed
from pulsestock.inventory_sync.adapters.ledger_repository import LedgerRepository
from pulsestock.inventory_sync.application.writer import LedgerWriter
from pulsestock.inventory_sync.domain.commands import (
    CancelOrder,
    EndPulse,
    ReserveOrder,
    StartPulse,
)
from pulsestock.v1 import ingest_events_pb2, signal_events_pb2
from pulsestock.v1.common_pb2 import Channel

ORDERS = ConsumerSpec(
    stream=service_stream("ingest").name,
    durable="inventory_sync__orders",
    filter_subjects=["ingest.order_placed.>", "ingest.order_cancelled.>"],
    max_deliver=8,
)
PULSES = ConsumerSpec(
    stream=service_stream("signal").name,
    durable="inventory_sync__pulses",
    filter_subjects=["signal.pulse_detected.>", "signal.pulse_ended.>"],
)


class OrderEvents:
    """Orders the channels have taken: reserve them (or record the backorder), release on
    cancellation. Idempotent through the ledger: a redelivered order changes nothing."""

    def __init__(self, writer: LedgerWriter, repository: LedgerRepository) -> None:
        self.writer = writer
        self.repository = repository

    async def handle(self, envelope: Envelope) -> None:
        message = envelope.decode()
        if isinstance(message, ingest_events_pb2.OrderPlaced):
            lines = tuple((line.sku, line.quantity) for line in message.lines)
            if not lines:
                raise PermanentFailure("an order without lines")
            try:
                await self.writer.submit(
                    ReserveOrder(
                        channel=message.channel,
                        channel_order_id=message.channel_order_id,
                        lines=lines,
                        paid=not message.awaiting_payment,
                        already_sold=True,
                    )
                )
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
