"""forecast as fulfillment calls it: its public gRPC API (GetForecast, GetDemandQuantiles)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from pulsestock.clock import timestamp as _stamp
from pulsestock.grpckit.client import channel as peer_channel
from pulsestock.v1 import forecast_pb2 as fpb
from pulsestock.v1 import forecast_pb2_grpc

SERVICE = "pulsestock.v1.ForecastService"
CALL_TIMEOUT_S = 10.0


class ForecastClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> forecast_pb2_grpc.ForecastServiceStub:
        if self._channel is None:
            self._channel = peer_channel(self.address, [SERVICE])
        return forecast_pb2_grpc.ForecastServiceStub(self._channel)

    async def forecast(self, sku: str, horizon_hours: int) -> fpb.GetForecastResponse:
        horizon = Duration()
        horizon.FromTimedelta(timedelta(hours=horizon_hours))
        request = fpb.GetForecastRequest(sku=sku, horizon=horizon, quantiles=[0.5])
        response: fpb.GetForecastResponse = await self._stub().GetForecast(
            request, timeout=CALL_TIMEOUT_S
        )
        return response

    async def window_quantiles(
        self, sku: str, start: datetime, end: datetime, levels: Sequence[float]
    ) -> list[float]:
        request = fpb.GetDemandQuantilesRequest(sku=sku, levels=list(levels), to=_stamp(end))
        getattr(request, "from").CopyFrom(_stamp(start))
        response = await self._stub().GetDemandQuantiles(request, timeout=CALL_TIMEOUT_S)
        return [q.value for q in response.quantiles]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
