"""Read-side use cases of inventory-sync."""

from __future__ import annotations

from pulsestock.errors import Validator
from pulsestock.eventstore import EventStore
from pulsestock.inventory_sync.domain.sku import check_sku, ledger_stream
from pulsestock.inventory_sync.domain.stock import StockLevels


async def get_stock(store: EventStore, sku: str) -> StockLevels:
    validator = Validator()
    check_sku(validator, sku)
    validator.raise_if_invalid()
    levels = StockLevels(sku)
    for recorded in await store.read_stream(ledger_stream(sku)):
        levels.apply(recorded.decode())
    return levels
