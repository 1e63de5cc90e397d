"""Stock levels of one SKU, folded from its ledger stream."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message
from pulsestock.v1 import inventory_sync_events_pb2 as ev


@dataclass
class WarehouseLevel:
    on_hand: int = 0
    reserved: int = 0
    safety_hold: int = 0

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.reserved - self.safety_hold)


@dataclass
class StockLevels:
    sku: str
    warehouses: dict[str, WarehouseLevel] = field(default_factory=dict)
    version: int = 0

    def apply(self, event: Message) -> None:
        if isinstance(event, ev.StockReceived):
            self._level(event.warehouse_id).on_hand += event.quantity
        elif isinstance(event, ev.StockAdjusted):
            self._level(event.warehouse_id).on_hand += event.delta
        self.version += 1

    def _level(self, warehouse_id: str) -> WarehouseLevel:
        return self.warehouses.setdefault(warehouse_id, WarehouseLevel())

    @property
    def available(self) -> int:
        return sum(level.available for level in self.warehouses.values())
