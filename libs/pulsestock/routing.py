"""Which warehouse ships an order: pure, from the warehouses' master data and their
available stock, no I/O. One rule for two services: inventory-sync applies it when it
reserves a channel order (so the reservation holds the stock where the order will ship from),
and fulfillment's RouteOrder answers with it.

Rules, in order:
1. Only warehouses that fulfil the order's channel (a warehouse listing no channels fulfils
   every channel) and have stock are candidates.
2. A TikTok Shop order goes to a Fulfilled-by-TikTok warehouse first when one can ship the
   whole order.
3. Otherwise the whole order ships from the warehouse that delivers soonest to the buyer's
   region among those that can ship all of it (ties: more stock to spare, then the id).
4. When no single warehouse covers the whole order, each line ships from the soonest
   warehouse that covers the line; a line no single warehouse covers is split across
   warehouses in order of delivery time; what no warehouse has is left unallocated (a
   backorder).

Delivery time: `SAME_REGION_HOURS` within the buyer's region, `OTHER_REGION_HOURS`
otherwise (the master data has no carrier transit table yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from pulsestock.v1.common_pb2 import Channel

SAME_REGION_HOURS = 24.0
OTHER_REGION_HOURS = 72.0
FBT = "fbt"
TIKTOK_SHOP = "tiktok_shop"
_CHANNEL_KEYS: dict[int, str] = {
    int(number): name.removeprefix("CHANNEL_").lower() for name, number in Channel.items()
}


def channel_key(channel: int) -> str:
    """CHANNEL_TIKTOK_SHOP -> "tiktok_shop": how the rule, the master data and stream and
    reservation ids name a channel."""
    return _CHANNEL_KEYS[channel]


def delivery_hours(warehouse_region: str, buyer_region: str) -> float:
    # An unknown buyer region (or a warehouse of none) makes no warehouse nearer.
    if buyer_region and warehouse_region == buyer_region:
        return SAME_REGION_HOURS
    return OTHER_REGION_HOURS


class Candidate(NamedTuple):
    """A warehouse that may ship (a tuple: inventory-sync builds several per reservation)."""

    warehouse_id: str
    region: str
    kind: str
    channels: tuple[str, ...]
    available: Mapping[str, int] = MappingProxyType({})  # SKU -> units

    def serves(self, channel: str) -> bool:
        return not self.channels or channel in self.channels

    def delivery_hours(self, buyer_region: str) -> float:
        return delivery_hours(self.region, buyer_region)

    def covers(self, lines: Mapping[str, int]) -> bool:
        available = self.available
        for sku, qty in lines.items():  # noqa: SIM110 - a loop: it runs on every reservation
            if available.get(sku, 0) < qty:
                return False
        return True


class Allocation(NamedTuple):
    sku: str
    warehouse_id: str
    quantity: int
    delivery_hours: float


@dataclass(frozen=True)
class Route:
    allocations: tuple[Allocation, ...]
    unallocated: Mapping[str, int]
    reason: str

    @property
    def main_warehouse(self) -> str:
        """The warehouse shipping the most units ("" when nothing ships)."""
        units: dict[str, int] = {}
        for allocation in self.allocations:
            units[allocation.warehouse_id] = (
                units.get(allocation.warehouse_id, 0) + allocation.quantity
            )
        return min(units, key=lambda w: (-units[w], w)) if units else ""


def route(
    lines: Mapping[str, int],
    channel: str,
    buyer_region: str,
    warehouses: Sequence[Candidate],
) -> Route:
    wanted = {sku: qty for sku, qty in lines.items() if qty > 0}
    eligible = [w for w in warehouses if w.serves(channel)]

    def rank(w: Candidate) -> tuple[float, int, str]:
        spare = sum(w.available.get(sku, 0) - qty for sku, qty in wanted.items())
        return (w.delivery_hours(buyer_region), -spare, w.warehouse_id)

    def whole(w: Candidate, reason: str) -> Route:
        allocations = tuple(
            Allocation(sku, w.warehouse_id, qty, w.delivery_hours(buyer_region))
            for sku, qty in sorted(wanted.items())
        )
        return Route(allocations, {}, reason)

    covering = [w for w in eligible if w.covers(wanted)]
    if channel == TIKTOK_SHOP:
        fbt = [w for w in covering if w.kind == FBT]
        if fbt:
            return whole(min(fbt, key=rank), "fbt first for a TikTok Shop order")
    if covering:
        return whole(min(covering, key=rank), f"soonest delivery to {buyer_region or 'the buyer'}")

    allocations: list[Allocation] = []
    unallocated: dict[str, int] = {}
    split = False
    for sku, qty in sorted(wanted.items()):
        by_time = sorted(
            (w for w in eligible if w.available.get(sku, 0) > 0),
            key=lambda w: (
                w.delivery_hours(buyer_region),
                -w.available.get(sku, 0),
                w.warehouse_id,
            ),
        )
        single = [w for w in by_time if w.available.get(sku, 0) >= qty]
        if single:
            first = single[0]
            allocations.append(
                Allocation(sku, first.warehouse_id, qty, first.delivery_hours(buyer_region))
            )
            continue
        remaining = qty
        for w in by_time:
            take = min(remaining, w.available.get(sku, 0))
            allocations.append(
                Allocation(sku, w.warehouse_id, take, w.delivery_hours(buyer_region))
            )
            remaining -= take
            split = True
            if remaining == 0:
                break
        if remaining:
            unallocated[sku] = remaining
    reason = "no warehouse covers the whole order: lines routed one by one"
    if split:
        reason += "; split where no single warehouse covers a line"
    if unallocated:
        reason += "; the rest is backordered"
    return Route(tuple(allocations), unallocated, reason)
