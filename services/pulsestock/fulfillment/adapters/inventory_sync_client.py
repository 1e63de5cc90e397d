"""inventory-sync as fulfillment calls it: a gRPC client of its public API (never its tables)."""

from __future__ import annotations

import grpc
from pulsestock.grpckit.client import channel as peer_channel
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1 import inventory_sync_pb2_grpc

SERVICE = "pulsestock.v1.InventorySyncService"
CALL_TIMEOUT_S = 10.0
# What says "try again later" (the call may or may not have been applied: the command id
# makes the retry safe); anything else is inventory-sync refusing the command for good.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


class StockRefused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code, self.message = code, message


class StockUnavailable(Exception):
    """inventory-sync could not be reached or answered a transient failure: retry later."""


class InventorySyncClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> inventory_sync_pb2_grpc.InventorySyncServiceStub:
        if self._channel is None:
            self._channel = peer_channel(self.address, [SERVICE])
        return inventory_sync_pb2_grpc.InventorySyncServiceStub(self._channel)

    async def receive(
        self, sku: str, warehouse_id: str, quantity: int, source: str, command_id: str
    ) -> None:
        request = inv.ReceiveRequest(
            sku=sku,
            warehouse_id=warehouse_id,
            quantity=quantity,
            source=source,
            command_id=command_id,
        )
        try:
            await self._stub().Receive(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() in TRANSIENT:
                raise StockUnavailable(f"{error.code().name}: {error.details()}") from error
            raise StockRefused(error.code(), error.details() or "") from error

    async def transfer(
        self,
        sku: str,
        from_warehouse_id: str,
        to_warehouse_id: str,
        quantity: int,
        transfer_id: str,
    ) -> int:
        """Move available stock between warehouses; `transfer_id` is inventory-sync's
        idempotency key (the same id again moves nothing more). Returns the SKU's ledger
        version after it."""
        request = inv.TransferRequest(
            sku=sku,
            from_warehouse_id=from_warehouse_id,
            to_warehouse_id=to_warehouse_id,
            quantity=quantity,
            transfer_id=transfer_id,
        )
        try:
            response: inv.LedgerCommandResponse = await self._stub().Transfer(
                request, timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in TRANSIENT:
                raise StockUnavailable(f"{error.code().name}: {error.details()}") from error
            raise StockRefused(error.code(), error.details() or "") from error
        return int(response.stream_version)

    async def stock(self, sku: str, min_stream_version: int = 0) -> inv.GetStockResponse:
        """The SKU's stock per warehouse (inventory-sync's read model)."""
        try:
            response: inv.GetStockResponse = await self._stub().GetStock(
                inv.GetStockRequest(sku=sku, min_stream_version=min_stream_version),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise StockUnavailable(f"{error.code().name}: {error.details()}") from error
        return response

    async def order_holds(self, channel: int, channel_order_id: str) -> list[inv.ReservedPart]:
        """Where inventory-sync holds a channel order's lines now (empty: not held)."""
        try:
            response: inv.GetOrderHoldsResponse = await self._stub().GetOrderHolds(
                inv.GetOrderHoldsRequest(
                    channel=channel,  # type: ignore[arg-type]
                    channel_order_id=channel_order_id,
                ),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise StockUnavailable(f"{error.code().name}: {error.details()}") from error
        return list(response.held)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
