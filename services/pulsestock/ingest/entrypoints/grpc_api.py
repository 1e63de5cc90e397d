"""The IngestService gRPC servicer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
from pulsestock.ingest.application.ingestion import Ingestion, Tally
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2 as pb
from pulsestock.v1 import ingest_pb2_grpc


def _response(tally: Tally) -> pb.PushSamplesResponse:
    return pb.PushSamplesResponse(
        accepted=tally.accepted,
        rejected=tally.rejected,
        rejections=[pb.SampleRejection(index=i, reason=r) for i, r in tally.rejections],
    )


class IngestServiceServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, ingestion: Ingestion) -> None:
        self.ingestion = ingestion

    async def RegisterVideo(
        self, request: pb.RegisterVideoRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterVideoResponse:
        registered = ev.VideoRegistered(
            video_id=request.video_id,
            skus=list(request.skus),
            creator_id=request.creator_id,
            creator_followers=request.creator_followers,
            channel=request.channel,
            seller_id=request.seller_id,
        )
        if request.HasField("published_at"):
            registered.published_at.CopyFrom(request.published_at)
        return pb.RegisterVideoResponse(created=await self.ingestion.register_video(registered))

    async def PushVideoSamples(
        self,
        request_iterator: AsyncIterator[pb.PushVideoSamplesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.PushSamplesResponse:
        async def batches() -> AsyncIterator[Sequence[ev.VideoSampled]]:
            # One message at a time: a fast client waits on HTTP/2 flow control.
            async for request in request_iterator:
                yield request.samples

        return _response(await self.ingestion.push_video_samples(batches()))

    async def PushLiveSamples(
        self,
        request_iterator: AsyncIterator[pb.PushLiveSamplesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.PushSamplesResponse:
        async def batches() -> AsyncIterator[Sequence[ev.LiveSampled]]:
            async for request in request_iterator:
                yield request.samples

        return _response(await self.ingestion.push_live_samples(batches()))

    async def RecordOrder(
        self, request: pb.RecordOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOrderResponse:
        return pb.RecordOrderResponse(duplicate=await self.ingestion.record_order(request.order))
