"""The InventorySyncService gRPC servicer. RPCs not yet built answer UNIMPLEMENTED."""

from __future__ import annotations

import grpc
from pulsestock.eventstore import EventStore
from pulsestock.inventory_sync.application.queries import get_stock
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1 import inventory_sync_pb2_grpc


class InventorySyncServicer(inventory_sync_pb2_grpc.InventorySyncServiceServicer):
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def GetStock(
        self, request: pb.GetStockRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStockResponse:
        levels = await get_stock(self.store, request.sku)
        return pb.GetStockResponse(
            sku=levels.sku,
            available=levels.available,
            stream_version=levels.version,
            warehouses=[
                pb.WarehouseStock(
                    warehouse_id=warehouse_id,
                    on_hand=level.on_hand,
                    reserved=level.reserved,
                    safety_hold=level.safety_hold,
                    available=level.available,
                )
                for warehouse_id, level in sorted(levels.warehouses.items())
            ],
        )
