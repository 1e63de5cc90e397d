"""Wiring of signal: the content consumer and its engine, the gRPC API, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc
from pulsestock.bus import (
    ConsumerSpec,
    DurableConsumer,
    ensure_consumer,
    ensure_stream,
    service_stream,
)
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.signal.application.engine import SignalEngine
from pulsestock.signal.entrypoints.grpc_api import SignalServiceServicer
from pulsestock.v1 import signal_pb2, signal_pb2_grpc

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
CONTENT = ConsumerSpec(
    stream=service_stream("ingest").name,
    durable="signal__content",
    filter_subjects=[
        "ingest.video_registered.>",
        "ingest.video_sampled.>",
        "ingest.live_sampled.>",
    ],
    # A sample whose registration has not been folded yet is retried: leave it room.
    max_deliver=20,
    ack_wait_s=10,
)


class Signal:
    async def prepare(self, context: ServiceContext) -> None:
        self.engine = SignalEngine(context.store, context.settings.partitions)
        await self.engine.recover_pending_heat()
        js = context.nc.jetstream()
        await ensure_stream(js, service_stream("ingest"))
        await ensure_consumer(js, CONTENT)

    def register(self, server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
        servicer = SignalServiceServicer(context.pool, context.nc, self.engine)
        signal_pb2_grpc.add_SignalServiceServicer_to_server(servicer, server)
        return [signal_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name]

    async def run_content(self, context: ServiceContext, stop: asyncio.Event) -> None:
        # One batch at a time: a video's samples must be folded in order. Large batches: a
        # video sampled several times within one is snapshotted once. The heat flusher runs
        # beside the consumer, not as a role of its own: the heat it sends waits in this
        # process's memory.
        consumer = DurableConsumer(
            context.nc, CONTENT, batch_handler=self.engine.handle_batch, batch=1000
        )
        async with asyncio.TaskGroup() as both:  # one failing stops the other
            both.create_task(consumer.run(stop))
            both.create_task(self.engine.run_heat_flusher(stop))


def build() -> ServiceDefinition:
    service = Signal()
    return ServiceDefinition(
        name="signal",
        register=service.register,
        grpc_port=50052,
        migrations_dir=MIGRATIONS,
        prepare=service.prepare,
        roles=[service.run_content],
    )
