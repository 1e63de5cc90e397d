"""The services as the console calls them: one channel per peer (grpckit's, with its retries
of UNAVAILABLE and TLS from the environment), a deadline on every call, and every failure
turned into a ServiceError naming the service, its status code and what it said."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pulsestock.console.domain.errors import ServiceError
from pulsestock.grpckit.client import channel as peer_channel
from pulsestock.v1 import (
    forecast_pb2,
    forecast_pb2_grpc,
    fulfillment_pb2,
    fulfillment_pb2_grpc,
    inventory_sync_pb2,
    inventory_sync_pb2_grpc,
    signal_pb2,
    signal_pb2_grpc,
)
from pulsestock.v1 import signal_events_pb2 as sev

T = TypeVar("T")
CALL_TIMEOUT_S = 5.0
GRPC_SERVICES = {
    "signal": "pulsestock.v1.SignalService",
    "forecast": "pulsestock.v1.ForecastService",
    "inventory-sync": "pulsestock.v1.InventorySyncService",
    "fulfillment": "pulsestock.v1.FulfillmentService",
}


@dataclass(frozen=True)
class PeerAddresses:
    signal: str
    forecast: str
    inventory_sync: str
    fulfillment: str


def service_error(service: str, error: grpc.aio.AioRpcError) -> ServiceError:
    violations: list[tuple[str, str]] = []
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # inconsistent status details: keep the message
        status = None
    if status is not None:
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                violations += [(v.field, v.description) for v in bad.field_violations]
    return ServiceError(
        service, error.code().name, error.details() or "(no details)", tuple(violations)
    )


async def _call(service: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise service_error(service, error) from None


class Peers:
    """Typed calls to the four services the console reads and acts through."""

    def __init__(self, addresses: PeerAddresses, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.addresses = addresses
        self.timeout = timeout_s
        self._channels = {
            name: peer_channel(getattr(addresses, name.replace("-", "_")), [GRPC_SERVICES[name]])
            for name in GRPC_SERVICES
        }
        self.signal = signal_pb2_grpc.SignalServiceStub(self._channels["signal"])
        self.forecast = forecast_pb2_grpc.ForecastServiceStub(self._channels["forecast"])
        self.inventory = inventory_sync_pb2_grpc.InventorySyncServiceStub(
            self._channels["inventory-sync"]
        )
        self.fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(
            self._channels["fulfillment"]
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    # --- signal --------------------------------------------------------------------------

    async def rank_heat(
        self, limit: int, skus: list[str] | None = None
    ) -> signal_pb2.RankHeatResponse:
        request = signal_pb2.RankHeatRequest(limit=limit, skus=skus or [])
        return await _call("signal", self.signal.RankHeat(request, timeout=self.timeout))

    async def watch_pulses(self) -> AsyncIterator[sev.PulseDetected]:
        """New pulses as signal detects them, until the stream breaks (ServiceError)."""
        stream = self.signal.WatchPulses(signal_pb2.WatchPulsesRequest())
        try:
            async for pulse in stream:
                yield pulse
        except grpc.aio.AioRpcError as error:
            raise service_error("signal", error) from None
        finally:
            stream.cancel()

    # --- forecast ------------------------------------------------------------------------

    async def forecast_of(self, sku: str, hours: int) -> forecast_pb2.GetForecastResponse:
        horizon = Duration()
        horizon.FromTimedelta(timedelta(hours=hours))
        request = forecast_pb2.GetForecastRequest(
            sku=sku, horizon=horizon, quantiles=[0.1, 0.5, 0.9]
        )
        return await _call("forecast", self.forecast.GetForecast(request, timeout=self.timeout))

    async def demand_history(self, sku: str) -> forecast_pb2.GetDemandHistoryResponse:
        request = forecast_pb2.GetDemandHistoryRequest(sku=sku)
        return await _call(
            "forecast", self.forecast.GetDemandHistory(request, timeout=self.timeout)
        )

    async def live_sessions(self, limit: int) -> forecast_pb2.ListLiveSessionsResponse:
        request = forecast_pb2.ListLiveSessionsRequest(limit=limit)
        return await _call(
            "forecast", self.forecast.ListLiveSessions(request, timeout=self.timeout)
        )

    async def live_forecast(self, live_id: str) -> forecast_pb2.ForecastLiveSessionResponse:
        request = forecast_pb2.ForecastLiveSessionRequest(live_id=live_id)
        return await _call(
            "forecast", self.forecast.ForecastLiveSession(request, timeout=self.timeout)
        )

    # --- inventory-sync ------------------------------------------------------------------

    async def stock(self, sku: str) -> inventory_sync_pb2.GetStockResponse:
        request = inventory_sync_pb2.GetStockRequest(sku=sku)
        return await _call("inventory-sync", self.inventory.GetStock(request, timeout=self.timeout))

    async def sync_state(self, sku: str) -> inventory_sync_pb2.GetSyncStateResponse:
        request = inventory_sync_pb2.GetSyncStateRequest(sku=sku)
        return await _call(
            "inventory-sync", self.inventory.GetSyncState(request, timeout=self.timeout)
        )

    async def history(
        self, sku: str, from_version: int, limit: int
    ) -> inventory_sync_pb2.GetHistoryResponse:
        request = inventory_sync_pb2.GetHistoryRequest(
            sku=sku, from_version=from_version, limit=limit
        )
        return await _call(
            "inventory-sync", self.inventory.GetHistory(request, timeout=self.timeout)
        )

    async def channel_status(self) -> inventory_sync_pb2.GetChannelStatusResponse:
        request = inventory_sync_pb2.GetChannelStatusRequest()
        return await _call(
            "inventory-sync", self.inventory.GetChannelStatus(request, timeout=self.timeout)
        )

    # --- fulfillment ---------------------------------------------------------------------

    async def replenishment_plan(self, sku: str) -> fulfillment_pb2.GetReplenishmentPlanResponse:
        request = fulfillment_pb2.GetReplenishmentPlanRequest(sku=sku)
        return await _call(
            "fulfillment", self.fulfillment.GetReplenishmentPlan(request, timeout=self.timeout)
        )

    async def purchase_orders(self, sku: str) -> fulfillment_pb2.ListPurchaseOrdersResponse:
        request = fulfillment_pb2.ListPurchaseOrdersRequest(sku=sku, page_size=50)
        return await _call(
            "fulfillment", self.fulfillment.ListPurchaseOrders(request, timeout=self.timeout)
        )

    async def purchase_order(self, po_id: str) -> fulfillment_pb2.GetPurchaseOrderResponse:
        request = fulfillment_pb2.GetPurchaseOrderRequest(purchase_order_id=po_id)
        return await _call(
            "fulfillment", self.fulfillment.GetPurchaseOrder(request, timeout=self.timeout)
        )

    async def approve(self, recommendation_id: str) -> fulfillment_pb2.CreatePurchaseOrderResponse:
        """Idempotent by the recommendation's id: approving it again answers the same PO."""
        request = fulfillment_pb2.ApproveRecommendationRequest(recommendation_id=recommendation_id)
        return await _call(
            "fulfillment",
            self.fulfillment.ApproveRecommendation(request, timeout=self.timeout),
        )
