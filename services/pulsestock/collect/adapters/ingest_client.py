"""ingest as the collector calls it: its public gRPC API (RegisterVideo, PushVideoSamples,
PushLiveSamples), so validation and deduplication stay in ingest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from pulsestock.grpckit.client import channel as peer_channel
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2, ingest_pb2_grpc

SERVICE = "pulsestock.v1.IngestService"
CALL_TIMEOUT_S = 10.0
SAMPLES_PER_MESSAGE = 500
Sample = TypeVar("Sample", ev.VideoSampled, ev.LiveSampled)


@dataclass(frozen=True)
class PushReport:
    accepted: int
    rejected: int
    rejections: dict[int, str]  # index in what was pushed -> ingest's reason


class IngestClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> ingest_pb2_grpc.IngestServiceStub:
        if self._channel is None:
            self._channel = peer_channel(self.address, [SERVICE])
        return ingest_pb2_grpc.IngestServiceStub(self._channel)

    async def register_video(self, request: ingest_pb2.RegisterVideoRequest) -> bool:
        response = await self._stub().RegisterVideo(request, timeout=CALL_TIMEOUT_S)
        return bool(response.created)

    async def push_video_samples(self, samples: Sequence[ev.VideoSampled]) -> PushReport:
        async def requests() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
            for chunk in _messages(samples):
                yield ingest_pb2.PushVideoSamplesRequest(samples=chunk)

        return _report(await self._stub().PushVideoSamples(requests(), timeout=CALL_TIMEOUT_S))

    async def push_live_samples(self, samples: Sequence[ev.LiveSampled]) -> PushReport:
        async def requests() -> AsyncIterator[ingest_pb2.PushLiveSamplesRequest]:
            for chunk in _messages(samples):
                yield ingest_pb2.PushLiveSamplesRequest(samples=chunk)

        return _report(await self._stub().PushLiveSamples(requests(), timeout=CALL_TIMEOUT_S))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _messages(samples: Sequence[Sample]) -> Iterator[Sequence[Sample]]:
    """The samples in stream messages of at most SAMPLES_PER_MESSAGE."""
    for start in range(0, len(samples), SAMPLES_PER_MESSAGE):
        yield samples[start : start + SAMPLES_PER_MESSAGE]


def _report(response: ingest_pb2.PushSamplesResponse) -> PushReport:
    return PushReport(
        int(response.accepted),
        int(response.rejected),
        {r.index: r.reason for r in response.rejections},
    )
