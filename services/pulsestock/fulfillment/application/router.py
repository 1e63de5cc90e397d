"""Where each order ships from, recorded per order (stream `route-<channel>:<order>`) as
`OrderRouted`, so asking again answers what was decided.

One rule (libs/pulsestock/routing.py) in two places: inventory-sync places every channel
order's reservation by it when it takes the order, so RouteOrder first asks where
inventory-sync holds the order (GetOrderHolds) and answers that, recording it whenever it
differs from the last record (a hold taken after an earlier answer, a line let go). An
order inventory-sync does not hold (not seen yet, or asked before it is placed) is routed
here over the master data's warehouses and inventory-sync's available stock, and that
answer is recorded once: asked again, it answers the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

from pulsestock.errors import FieldViolation, InvalidArgument
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.eventstore.events import NO_STREAM, WrongExpectedVersion
from pulsestock.fulfillment.adapters.inventory_sync_client import InventorySyncClient
from pulsestock.fulfillment.application.master_records import MasterRecords, candidate_of
from pulsestock.fulfillment.domain.order_lines import check_lines, summed
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.routing import Allocation, Candidate, Route, channel_key, delivery_hours, route
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1.common_pb2 import Channel, OrderLine

MAX_LINES = 100
MAX_REGION = 64
HELD = "held where inventory-sync reserved it (the routing rule, at reservation)"


def stream_of(channel: int, channel_order_id: str) -> str:
    return f"route-{channel_key(channel)}:{channel_order_id}"


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

    async def _recorded(self, stream: str) -> tuple[ev.OrderRouted | None, int]:
        """The order's latest routing record and the stream's version."""
        events = await self.store.read_stream(stream)
        if not events:
            return None, NO_STREAM
        return ev.OrderRouted.FromString(events[-1].data), events[-1].stream_version

    async def _as_held(
        self, request: pb.RouteOrderRequest, held: list[inv.ReservedPart]
    ) -> ev.OrderRouted:
        warehouses = (await self.master.load()).warehouses
        allocations = tuple(
            Allocation(
                part.sku,
                part.warehouse_id,
                part.quantity,
                delivery_hours(
                    warehouses[part.warehouse_id].region if part.warehouse_id in warehouses else "",
                    request.buyer_region,
                ),
            )
            for part in held
        )
        return _as_event(request, Route(allocations, {}, HELD))

    async def _candidates(self, skus: list[str]) -> list[Candidate]:
        data = await self.master.load()
        available: dict[str, dict[str, int]] = {}
        for sku in skus:
            stock = await self.inventory.stock(sku)
            for level in stock.warehouses:
                available.setdefault(level.warehouse_id, {})[sku] = int(level.available)
        return [
            candidate_of(profile, units)
            if (profile := data.warehouses.get(warehouse_id)) is not None
            # stock where the master data says nothing: any channel
            else Candidate(warehouse_id, "", "own", (), units)
            for warehouse_id, units in sorted(available.items())
        ]

    async def route(self, request: pb.RouteOrderRequest) -> ev.OrderRouted:
        lines = _check(request)
        stream = stream_of(request.channel, request.channel_order_id)
        held = await self.inventory.order_holds(request.channel, request.channel_order_id)
        recorded, version = await self._recorded(stream)
        if held:  # what inventory-sync holds is where the order ships from
            event = await self._as_held(request, held)
            if (
                recorded is not None
                and recorded.reason == HELD
                and list(recorded.allocations) == list(event.allocations)
            ):
                return recorded
            event.at.FromDatetime(self.clock())
            await self._record(stream, version, event)
            return event
        if recorded is not None:
            return recorded
        candidates = await self._candidates(sorted(lines))
        decided = route(lines, channel_key(request.channel), request.buyer_region, candidates)
        event = _as_event(request, decided)
        event.at.FromDatetime(self.clock())
        await self._record(stream, NO_STREAM, event)
        first, _ = await self._recorded(stream)  # routed concurrently: the first answer stands
        assert first is not None
        return first

    async def _record(self, stream: str, version: int, event: ev.OrderRouted) -> None:
        with contextlib.suppress(WrongExpectedVersion):  # recorded concurrently: it stands
            await self.store.append(stream, version, [NewEvent.of(event)])


def _as_event(request: pb.RouteOrderRequest, decided: Route) -> ev.OrderRouted:
    return ev.OrderRouted(
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
