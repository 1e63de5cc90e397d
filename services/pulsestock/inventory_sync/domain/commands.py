"""Ledger commands and the pure function that decides them against the SKU ledgers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from google.protobuf.message import Message
from pulsestock.errors import InvalidArgument, NotFound, PreconditionFailed
from pulsestock.inventory_sync.domain import ledger as rules
from pulsestock.inventory_sync.domain.ledger import (
    LineTarget,
    OrderPolicy,
    OrderStatus,
    SkuLedger,
    fresh_need,
    reservation_id_for,
)
from pulsestock.inventory_sync.domain.placement import NO_SITES, Sites, place
from pulsestock.v1 import inventory_sync_events_pb2 as ev


@dataclass(frozen=True)
class ReceiveStock:
    sku: str
    warehouse_id: str
    quantity: int
    source: str = ""
    command_id: str = ""


@dataclass(frozen=True)
class AdjustStock:
    sku: str
    warehouse_id: str
    delta: int
    reason: int
    command_id: str = ""


@dataclass(frozen=True)
class ReserveOrder:
    channel: int
    channel_order_id: str
    lines: tuple[tuple[str, int], ...]
    paid: bool = True
    already_sold: bool = False
    buyer_region: str = ""  # where the order ships to: routing holds the nearest stock


@dataclass(frozen=True)
class SettleOrder:
    """Bring a channel order to where the channel says it stands (ingest's OrderChanged)."""

    channel: int
    channel_order_id: str
    lines: tuple[tuple[str, LineTarget], ...]
    payment: int
    policy: OrderPolicy
    buyer_region: str = ""


@dataclass(frozen=True)
class ReleaseReservation:
    sku: str
    reservation_id: str
    reason: int


@dataclass(frozen=True)
class CancelOrder:
    channel: int
    channel_order_id: str
    skus: tuple[str, ...]


@dataclass(frozen=True)
class ShipReservation:
    sku: str
    reservation_id: str


@dataclass(frozen=True)
class TransferStock:
    sku: str
    from_warehouse_id: str
    to_warehouse_id: str
    quantity: int
    transfer_id: str = ""


@dataclass(frozen=True)
class SetAllocationPolicy:
    sku: str
    policy: ev.AllocationPolicyChanged


@dataclass(frozen=True)
class ExpireHolds:
    sku: str


@dataclass(frozen=True)
class StartPulse:
    sku: str
    pulse_id: str
    channel: int


@dataclass(frozen=True)
class EndPulse:
    sku: str
    pulse_id: str


@dataclass(frozen=True)
class RefreshChannelQuantities:
    """No change of its own: the writer works the SKU's channel quantities out again (after
    a warehouse's channels changed, which changes what each channel may be shown)."""

    sku: str


Command = (
    ReceiveStock
    | AdjustStock
    | ReserveOrder
    | SettleOrder
    | ReleaseReservation
    | CancelOrder
    | ShipReservation
    | TransferStock
    | SetAllocationPolicy
    | ExpireHolds
    | StartPulse
    | EndPulse
    | RefreshChannelQuantities
)


@dataclass(frozen=True)
class Applied:
    """A command took effect (or had already): the SKU's stream version after it."""

    sku: str
    version: int


class HeldPart(NamedTuple):
    """Units of an order line held in one warehouse (a split line has several)."""

    sku: str
    reservation_id: str
    warehouse_id: str
    quantity: int


@dataclass(frozen=True)
class ReserveOutcome:
    reserved: bool
    oversold: bool
    reservation_ids: tuple[str, ...]
    expires_at: datetime | None
    # Each line's SKU -> its stream version after the batch (set by the writer at commit).
    stream_versions: tuple[tuple[str, int], ...] = ()
    held: tuple[HeldPart, ...] = ()  # where the lines are held


Outcome = Applied | ReserveOutcome


def skus_of(command: Command) -> tuple[str, ...]:
    if isinstance(command, ReserveOrder):
        return tuple(dict.fromkeys(sku for sku, _ in command.lines))
    if isinstance(command, CancelOrder):
        return command.skus
    if isinstance(command, SettleOrder):
        return tuple(dict.fromkeys(sku for sku, _ in command.lines))
    return (command.sku,)


Decision = tuple[dict[str, list[Message]], Outcome]


def decide(
    command: Command,
    ledgers: dict[str, SkuLedger],
    now: datetime,
    hold: timedelta,
    sites: Sites = NO_SITES,
) -> Decision:
    """Events per SKU and the caller's answer. Reads the ledgers, never changes them.
    `sites`: what is known of each warehouse, for placing new reservations."""
    if isinstance(command, ReserveOrder):
        return _reserve(command, ledgers, now, hold, sites)
    if isinstance(command, CancelOrder):
        return _cancel(command, ledgers, now)
    if isinstance(command, SettleOrder):
        return _settle(command, ledgers, now, sites)
    ledger = ledgers[command.sku]
    events: list[Message]
    if isinstance(command, ReceiveStock):
        events = rules.receive(
            ledger, command.warehouse_id, command.quantity, command.source, command.command_id, now
        )
    elif isinstance(command, AdjustStock):
        events = rules.adjust(
            ledger, command.warehouse_id, command.delta, command.reason, command.command_id, now
        )
    elif isinstance(command, ReleaseReservation):
        events = rules.release(ledger, command.reservation_id, command.reason, now)
    elif isinstance(command, ShipReservation):
        events = rules.ship(ledger, command.reservation_id, now)
    elif isinstance(command, TransferStock):
        events = rules.transfer(
            ledger,
            command.from_warehouse_id,
            command.to_warehouse_id,
            command.quantity,
            command.transfer_id,
            now,
        )
    elif isinstance(command, SetAllocationPolicy):
        events = rules.set_policy(ledger, command.policy, now)
    elif isinstance(command, ExpireHolds):
        events = rules.expire(ledger, now)
    elif isinstance(command, StartPulse):
        events = rules.start_pulse(ledger, command.pulse_id, command.channel, now)
    elif isinstance(command, RefreshChannelQuantities):
        events = []
    else:
        events = rules.end_pulse(ledger, command.pulse_id, now)
    return {command.sku: events}, Applied(command.sku, ledger.version + len(events))


def _reserve(
    command: ReserveOrder,
    ledgers: dict[str, SkuLedger],
    now: datetime,
    hold: timedelta,
    sites: Sites,
) -> Decision:
    quantities: dict[str, int] = defaultdict(int)
    for sku, quantity in command.lines:
        if quantity <= 0:
            raise InvalidArgument.single("lines.quantity", "must be positive")
        quantities[sku] += quantity  # two lines of one SKU draw on the same stock
    key = (command.channel, command.channel_order_id)
    first = ledgers[next(iter(quantities))]
    if key in first.orders:  # a repeated order answers as the first time, appending nothing
        return {}, _outcome_of(command, ledgers, quantities)
    placements = place(command.channel, command.buyer_region, quantities, ledgers, sites)
    short = {sku for sku, parts in placements.items() if parts is None}
    if short and not command.already_sold:
        details = ", ".join(
            f"{sku} has {ledgers[sku].available} available, {quantities[sku]} requested"
            for sku in sorted(short)
        )
        raise PreconditionFailed(f"insufficient stock: {details}")
    events: dict[str, list[Message]] = {}
    if short:  # all lines or none: the channel's order becomes a backorder on its short lines
        for sku in quantities:
            events[sku] = (
                rules.oversold(
                    ledgers[sku], command.channel, command.channel_order_id, quantities[sku], now
                )
                if sku in short
                else []
            )
        return {k: v for k, v in events.items() if v}, ReserveOutcome(False, True, (), None)
    expires_at = None if command.paid else now + hold
    held: list[HeldPart] = []
    for sku in quantities:
        parts = placements[sku]
        assert parts is not None
        events[sku] = rules.reserve(
            ledgers[sku], command.channel, command.channel_order_id, parts, expires_at, now
        )
        held += [
            HeldPart(sku, e.reservation_id, e.warehouse_id, e.quantity)
            for e in events[sku]
            if isinstance(e, ev.StockReserved)
        ]
    ids = tuple(
        reservation_id_for(command.channel, command.channel_order_id, s) for s in quantities
    )
    return events, ReserveOutcome(True, False, ids, expires_at, held=tuple(held))


def _outcome_of(
    command: ReserveOrder, ledgers: dict[str, SkuLedger], quantities: dict[str, int]
) -> ReserveOutcome:
    key = (command.channel, command.channel_order_id)
    records = [ledgers[sku].orders.get(key) for sku in quantities]
    if any(r is not None and r.status is OrderStatus.OVERSOLD for r in records):
        return ReserveOutcome(False, True, (), None)
    ids = tuple(r.reservation_id for r in records if r is not None)
    expires = next((r.expires_at for r in records if r is not None), None)
    held = tuple(
        HeldPart(sku, part.reservation_id, part.warehouse_id, part.quantity)
        for sku, record in zip(quantities, records, strict=True)
        for part in ledgers[sku].live_parts(record)
    )
    return ReserveOutcome(True, False, ids, expires, held=held)


def _cancel(command: CancelOrder, ledgers: dict[str, SkuLedger], now: datetime) -> Decision:
    key = (command.channel, command.channel_order_id)
    events: dict[str, list[Message]] = {}
    known = False
    for sku in command.skus:
        record = ledgers[sku].orders.get(key)
        if record is None:
            continue
        known = True
        if record.status in (OrderStatus.RESERVED, OrderStatus.OVERSOLD):
            events[sku] = rules.release(
                ledgers[sku], record.reservation_id, ev.RELEASE_REASON_CANCELLED, now
            )
    if not known:
        raise NotFound(f"no order {command.channel_order_id!r} on this channel")
    sku = command.skus[0]
    return events, Applied(sku, ledgers[sku].version + len(events.get(sku, [])))


def _settle(
    command: SettleOrder, ledgers: dict[str, SkuLedger], now: datetime, sites: Sites
) -> Decision:
    """Each line on its own: the channel sold every one, so a line we cannot cover becomes a
    backorder without letting go of the lines we can. The lines that take a new reservation
    are placed together, as one order."""
    if not command.lines:
        raise InvalidArgument.single("lines", "an order has at least one line")
    fresh = {
        sku: need
        for sku, target in command.lines
        if (
            need := fresh_need(
                ledgers[sku], command.channel, command.channel_order_id, target, command.payment
            )
        )
        > 0
    }
    placed = place(command.channel, command.buyer_region, fresh, ledgers, sites)
    events: dict[str, list[Message]] = {}
    for sku, target in command.lines:
        line_events = rules.settle_line(
            ledgers[sku],
            command.channel,
            command.channel_order_id,
            target,
            command.payment,
            command.policy,
            now,
            placed.get(sku),
        )
        if line_events:
            events[sku] = line_events
    sku = command.lines[0][0]
    return events, Applied(sku, ledgers[sku].version + len(events.get(sku, [])))


def fill_backorders(ledger: SkuLedger, sites: Sites, now: datetime) -> list[Message]:
    """Reserve for the open backorders the available stock covers, oldest first, each placed
    by the routing rule (the buyer's region is not known by then). Applies each fill to
    `ledger` as it goes (it changes what the next one can take) and returns the events. One
    pass: stock only shrinks during it, so a backorder passed over stays uncovered."""
    filled: list[Message] = []
    for channel, channel_order_id in list(ledger.backorders):
        owed = ledger.orders[(channel, channel_order_id)].quantity
        if ledger.available <= 0:
            break
        if owed <= 0 or owed > ledger.available:
            continue
        parts = place(channel, "", {ledger.sku: owed}, {ledger.sku: ledger}, sites)[ledger.sku]
        if parts is None:  # no warehouse that may ship this channel has it
            continue
        cancelled = ledger.orders[(channel, channel_order_id)].cancelled
        events = rules.reserve(
            ledger, channel, channel_order_id, parts, None, now, rules.PAID, cancelled
        )
        for event in events:
            assert isinstance(event, ev.StockReserved)
            event.fills_backorder = True
            ledger.apply(event)
        filled += events
    return filled
