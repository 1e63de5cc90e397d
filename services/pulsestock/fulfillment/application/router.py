"""RouteOrder: the routing rule (libs pulsestock/routing.py) over the master data's warehouses and
inventory-sync's available stock, recorded once per order (stream `route-<channel>:<order>`),
so asking again answers what was decided, whatever the stock is by then.

Where the routed stock is reserved stays inventory-sync's decision for now (its
reservation takes the warehouse with the most to spare): making it hold the routed
warehouse is not built yet.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pulsestock.errors import FieldViolation, InvalidArgument
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.eventstore.events import NO_STREAM, WrongExpectedVersion
from pulsestock.fulfillment.adapters.inventory_sync_client import InventorySyncClient
from pulsestock.fulfillment.application.master_records import MasterRecords, channel_name
from pulsestock.fulfillment.domain.order_lines import check_lines, summed
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.routing import Candidate, route
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine

MAX_LINES = 100
MAX_REGION = 64


def stream_of(channel: int, channel_order_id: str) -> str:
    return f"route-{channel_name(channel)}:{channel_order_id}"


def _check(request: pb.RouteOrderRequest) -> dict[str, int]:
    violations: list[FieldViolation] = []
    if request.channel == Channel.CHANNEL_UNSPECIFIED or request.channel not in Channel.values():
        violations.append(FieldViolation("channel", "must be a known channel"))
    if not valid_id(request.channel_order_id):
        violations.append(FieldViolation("channel_order_id", ID_RULE))
    if len(request.buyer_region) > MAX_REGION:
        violations.append(FieldViolation("buyer_region", f"at most {MAX_REGION} characters"))
    violations.extend(check_lines(request.lines, "lines", MAX_LINES))
    if violations:
        raise InvalidArgument(violations)
    return summed(request.lines)


class OrderRouter:
    def __init__(
        self,
        store: EventStore,
        master: MasterRecords,
        inventory: InventorySyncClient,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.master, self.inventory, self.clock = store, master, inventory, clock

    async def _recorded(self, stream: str) -> ev.OrderRouted | None:
        events = await self.store.read_stream(stream, limit=1)
        return ev.OrderRouted.FromString(events[0].data) if events else None

    async def _candidates(self, skus: list[str]) -> list[Candidate]:
        data = await self.master.load()
        available: dict[str, dict[str, int]] = {}
        for sku in skus:
            stock = await self.inventory.stock(sku)
            for level in stock.warehouses:
                available.setdefault(level.warehouse_id, {})[sku] = int(level.available)
        candidates = []
        for warehouse_id, units in sorted(available.items()):
            profile = data.warehouses.get(warehouse_id)
            if profile is None:  # stock where the master data says nothing: any channel
                candidates.append(Candidate(warehouse_id, "", "own", (), units))
                continue
            channels = tuple(channel_name(c) for c in profile.channels)
            candidates.append(
                Candidate(warehouse_id, profile.region, profile.kind or "own", channels, units)
            )
        return candidates

    async def route(self, request: pb.RouteOrderRequest) -> ev.OrderRouted:
        lines = _check(request)
        stream = stream_of(request.channel, request.channel_order_id)
        recorded = await self._recorded(stream)
        if recorded is not None:
            return recorded
        candidates = await self._candidates(sorted(lines))
        decided = route(lines, channel_name(request.channel), request.buyer_region, candidates)
        event = ev.OrderRouted(
            channel=request.channel,
            channel_order_id=request.channel_order_id,
            warehouse_id=decided.main_warehouse,
            buyer_region=request.buyer_region,
            reason=decided.reason,
            allocations=[
                ev.RoutedLine(
                    sku=a.sku,
                    warehouse_id=a.warehouse_id,
                    quantity=a.quantity,
                    delivery_hours=a.delivery_hours,
                )
                for a in decided.allocations
            ],
            unallocated=[
                OrderLine(sku=sku, quantity=qty) for sku, qty in sorted(decided.unallocated.items())
            ],
        )
        event.at.FromDatetime(self.clock())
        try:
            await self.store.append(stream, NO_STREAM, [NewEvent.of(event)])
        except WrongExpectedVersion:  # routed concurrently: the first answer stands
            first = await self._recorded(stream)
            assert first is not None
            return first
        return event
