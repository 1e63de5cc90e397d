"""The CollectService gRPC servicer."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from pulsestock.clock import timestamp as stamp
from pulsestock.collect.application.commands import CollectCommands
from pulsestock.v1 import collect_pb2 as pb
from pulsestock.v1 import collect_pb2_grpc


class CollectServicer(collect_pb2_grpc.CollectServiceServicer):
    def __init__(self, commands: CollectCommands) -> None:
        self.commands = commands

    async def ConnectCreator(
        self, request: pb.ConnectCreatorRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectCreatorResponse:
        open_id = await self.commands.connect_creator(
            request.code,
            request.redirect_uri,
            list(request.default_skus),
            request.seller_id,
            request.channel,
        )
        return pb.ConnectCreatorResponse(open_id=open_id)

    async def MapVideo(
        self, request: pb.MapVideoRequest, context: grpc.aio.ServicerContext
    ) -> pb.MapVideoResponse:
        changed = await self.commands.map_video(request.video_id, list(request.skus))
        return pb.MapVideoResponse(changed=changed)

    async def ListVideos(
        self, request: pb.ListVideosRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVideosResponse:
        creators, videos = await self.commands.list(request.open_id)
        response = pb.ListVideosResponse(
            creators=[
                pb.CollectedCreator(
                    open_id=c.open_id,
                    default_skus=list(c.default_skus),
                    needs_reauthorisation=c.needs_reauthorisation,
                    reason=c.reason,
                )
                for c in creators
            ]
        )
        for view in videos:
            video = response.videos.add(
                video_id=view.video.video_id,
                open_id=view.video.open_id,
                skus=view.skus,
                created_at=stamp(view.video.created_at),
                interval_minutes=view.interval_minutes,
                rising=view.rising,
                pulse_active=view.pulse_active,
            )
            if view.video.samples:
                last = view.video.samples[-1]
                video.last_sampled_at.CopyFrom(stamp(datetime.fromtimestamp(last.at, UTC)))
                video.views = last.views
        return response
