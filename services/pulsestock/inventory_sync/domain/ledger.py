"""The stock ledger of one SKU: its state, folded from its events, and the pure decisions
that turn commands into new events. No I/O and no clock: `now` comes with every command.

Invariants (per warehouse): 0 <= reserved <= on_hand; available = on_hand - reserved -
safety_hold is never reported below zero; a reservation is only made when available covers
it; an order the channel already sold without stock becomes Oversold, never negative stock.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.errors import InvalidArgument, NotFound, PreconditionFailed
from pulsestock.inventory_sync.domain.allocation import AllocationPolicy, channel_quantities
from pulsestock.routing import channel_key
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel


@functools.lru_cache(maxsize=16)
def timestamp(moment: datetime) -> Timestamp:
    """A batch decides hundreds of events at one `now`: convert it once. (Message fields
    copy what they are given, so the cached value is never changed.)"""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def reservation_id_for(channel: int, channel_order_id: str, sku: str) -> str:
    """Deterministic, so a repeated order maps to the same reservation."""
    return f"{channel_key(channel)}:{channel_order_id}:{sku}"


def part_id_for(line_reservation_id: str, warehouse_id: str) -> str:
    """A split line's later part: its own reservation, named after the line's."""
    return f"{line_reservation_id}@{warehouse_id}"


@dataclass
class WarehouseLevel:
    on_hand: int = 0
    reserved: int = 0
    safety_hold: int = 0

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.reserved - self.safety_hold)


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    channel: int
    channel_order_id: str
    warehouse_id: str
    quantity: int
    expires_at: datetime | None


class OrderStatus(enum.Enum):
    RESERVED = "reserved"
    OVERSOLD = "oversold"
    RELEASED = "released"
    SHIPPED = "shipped"


PAID = ev.ORDER_PAYMENT_PAID
AUTHORIZED = ev.ORDER_PAYMENT_AUTHORIZED
UNPAID = ev.ORDER_PAYMENT_UNPAID


def payment_of(event: ev.StockReserved) -> int:
    """Events from before payment states say it by their expiry alone."""
    if event.payment:
        return int(event.payment)
    return UNPAID if event.HasField("expires_at") else PAID


@dataclass
class OrderRecord:
    """One channel order's line on this SKU: what the ledger has done for it so far."""

    status: OrderStatus
    reservation_id: str
    quantity: int  # units reserved when the order was first taken
    expires_at: datetime | None = None
    warehouse_id: str = ""
    payment: int = PAID
    cancelled: int = 0  # units the channel cancelled: released, or never reserved
    shipped: int = 0
    returned: int = 0
    expired: bool = False  # the unpaid hold ran out and its stock went back to sale
    # The line's reservations: its own, then one per further warehouse when routing split it.
    parts: list[str] = field(default_factory=list)


@dataclass
class SkuLedger:
    sku: str
    version: int = 0
    warehouses: dict[str, WarehouseLevel] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    orders: dict[tuple[int, str], OrderRecord] = field(default_factory=dict)
    applied_commands: set[str] = field(default_factory=set)
    policy: AllocationPolicy = field(default_factory=AllocationPolicy)
    hot_channel: int | None = None
    pulse_id: str | None = None
    channel_quantities: dict[int, int] = field(default_factory=dict)
    # Order lines sold without stock, oldest first: filled as soon as the stock covers one.
    backorders: dict[tuple[int, str], None] = field(default_factory=dict)

    # --- reading --------------------------------------------------------------------------

    @property
    def available(self) -> int:
        return sum(level.available for level in self.warehouses.values())

    @property
    def on_hand(self) -> int:
        return sum(level.on_hand for level in self.warehouses.values())

    @property
    def reserved(self) -> int:
        return sum(level.reserved for level in self.warehouses.values())

    def level(self, warehouse_id: str) -> WarehouseLevel:
        return self.warehouses.setdefault(warehouse_id, WarehouseLevel())

    def live_parts(self, record: OrderRecord | None) -> list[Reservation]:
        """The line's reservations still holding stock, in part order (nearest first)."""
        if record is None:
            return []
        return [self.reservations[p] for p in record.parts if p in self.reservations]

    def line_of(self, reservation_id: str) -> tuple[tuple[int, str], OrderRecord] | None:
        """The order line a reservation id (the line's own, or one of its parts) belongs to:
        its (channel, order id) and record."""
        held = self.reservations.get(reservation_id)
        if held is not None:
            key = (held.channel, held.channel_order_id)
            return key, self.orders[key]
        for key, record in self.orders.items():
            if record.reservation_id == reservation_id or reservation_id in record.parts:
                return key, record
        return None

    # --- folding --------------------------------------------------------------------------

    def apply(self, event: Message) -> None:
        self.version += 1
        if isinstance(event, ev.StockReceived):
            self.level(event.warehouse_id).on_hand += event.quantity
            self._remember(event.command_id)
        elif isinstance(event, ev.StockAdjusted):
            self.level(event.warehouse_id).on_hand += event.delta
            self._remember(event.command_id)
        elif isinstance(event, ev.StockReserved):
            expires_at = (
                event.expires_at.ToDatetime(tzinfo=UTC) if event.HasField("expires_at") else None
            )
            reservation = Reservation(
                event.reservation_id,
                event.channel,
                event.channel_order_id,
                event.warehouse_id,
                event.quantity,
                expires_at,
            )
            self.reservations[reservation.reservation_id] = reservation
            if event.quantity:
                self.level(event.warehouse_id).reserved += event.quantity
            key = (event.channel, event.channel_order_id)
            self.backorders.pop(key, None)
            if event.split_of:  # a further part of a line taken just before it
                line = self.orders[key]
                line.parts.append(event.reservation_id)
                line.quantity += event.quantity
                return
            before = self.orders.get(key)
            record = OrderRecord(
                OrderStatus.RESERVED,
                event.reservation_id,
                event.quantity,
                expires_at,
                event.warehouse_id,
                payment_of(event),
            )
            record.cancelled = event.cancelled_before
            record.parts = [event.reservation_id]
            if before is not None:  # taken again after its hold expired: keep what was done
                record.cancelled = max(before.cancelled, event.cancelled_before)
                record.shipped, record.returned = before.shipped, before.returned
            self.orders[key] = record
        elif isinstance(event, ev.ReservationReleased):
            released, record = self._reduce(
                event.reservation_id, event.remaining, OrderStatus.RELEASED
            )
            if event.reason == ev.RELEASE_REASON_EXPIRED:
                record.expired = True
            elif event.reason == ev.RELEASE_REASON_CANCELLED:
                record.cancelled += released
        elif isinstance(event, ev.StockShipped):
            reservation = self.reservations[event.reservation_id]
            _, record = self._reduce(event.reservation_id, event.remaining, OrderStatus.SHIPPED)
            self.level(reservation.warehouse_id).on_hand -= event.quantity
            record.shipped += event.quantity
        elif isinstance(event, ev.ReservationConfirmed):
            expires = (
                event.expires_at.ToDatetime(tzinfo=UTC) if event.HasField("expires_at") else None
            )
            held = self.reservations[event.reservation_id]
            self.reservations[event.reservation_id] = replace(held, expires_at=expires)
            record = self.orders[(held.channel, held.channel_order_id)]
            record.payment, record.expires_at = int(event.payment), expires
        elif isinstance(event, ev.OrderReturned):
            self.orders[(event.channel, event.channel_order_id)].returned += event.quantity
            if event.restocked:
                self.level(event.warehouse_id).on_hand += event.quantity
        elif isinstance(event, ev.StockTransferred):
            self.level(event.from_warehouse_id).on_hand -= event.quantity
            self.level(event.to_warehouse_id).on_hand += event.quantity
            self._remember(event.transfer_id)
        elif isinstance(event, ev.Oversold):
            key = (event.channel, event.channel_order_id)
            self.orders[key] = OrderRecord(
                OrderStatus.OVERSOLD,
                reservation_id_for(event.channel, event.channel_order_id, self.sku),
                event.quantity,
                cancelled=event.cancelled_before,
                shipped=event.shipped_before,
            )
            if event.quantity > 0:
                self.backorders[key] = None
        elif isinstance(event, ev.BackorderChanged):
            key = (event.channel, event.channel_order_id)
            record = self.orders[key]
            record.quantity = event.owed
            record.cancelled, record.shipped = event.cancelled, event.shipped
            if event.owed <= 0:
                record.status = OrderStatus.SHIPPED if record.shipped else OrderStatus.RELEASED
                self.backorders.pop(key, None)
        elif isinstance(event, ev.AllocationPolicyChanged):
            self.policy = AllocationPolicy(
                kind=event.kind,
                buffers={Channel.Value(k): v for k, v in event.channel_buffers.items()},
                shares={Channel.Value(k): v for k, v in event.channel_shares.items()},
                slow_channel_cap=event.slow_channel_cap,
            )
            self._remember(event.command_id)
        elif isinstance(event, ev.ChannelPulseStarted):
            self.hot_channel, self.pulse_id = event.channel, event.pulse_id
        elif isinstance(event, ev.ChannelPulseEnded):
            if event.pulse_id == self.pulse_id:
                self.hot_channel = self.pulse_id = None
        elif isinstance(event, ev.ChannelQuantityChanged):
            self.channel_quantities[event.channel] = event.quantity
        else:
            raise TypeError(f"a SKU ledger does not fold {type(event).__name__}")

    def _remember(self, command_id: str) -> None:
        if command_id:
            self.applied_commands.add(command_id)

    def _reduce(
        self, reservation_id: str, remaining: int, closed_as: OrderStatus
    ) -> tuple[int, OrderRecord]:
        """Leave `remaining` units of a reservation (0 closes it, as `closed_as`); returns
        how many units it let go and the order's record."""
        reservation = self.reservations[reservation_id]
        let_go = reservation.quantity - remaining
        if let_go:
            self.level(reservation.warehouse_id).reserved -= let_go
        record = self.orders[(reservation.channel, reservation.channel_order_id)]
        if remaining > 0:
            self.reservations[reservation_id] = replace(reservation, quantity=remaining)
        else:
            del self.reservations[reservation_id]
            if not self.live_parts(record):
                # An order that shipped any unit counts as shipped, whatever closed the rest.
                record.status = OrderStatus.SHIPPED if record.shipped else closed_as
        return let_go, record


# --- decisions ------------------------------------------------------------------------------


def receive(
    ledger: SkuLedger, warehouse_id: str, quantity: int, source: str, command_id: str, now: datetime
) -> list[Message]:
    if command_id and command_id in ledger.applied_commands:
        return []
    if quantity <= 0:
        raise InvalidArgument.single("quantity", "must be positive")
    return [
        ev.StockReceived(
            sku=ledger.sku,
            warehouse_id=warehouse_id,
            quantity=quantity,
            source=source,
            at=timestamp(now),
            command_id=command_id,
        )
    ]


def adjust(
    ledger: SkuLedger, warehouse_id: str, delta: int, reason: int, command_id: str, now: datetime
) -> list[Message]:
    if command_id and command_id in ledger.applied_commands:
        return []
    if delta == 0:
        raise InvalidArgument.single("delta", "must not be zero")
    level = ledger.warehouses.get(warehouse_id, WarehouseLevel())
    if level.on_hand + delta < level.reserved:
        raise PreconditionFailed(
            f"adjusting {ledger.sku} in {warehouse_id} by {delta} would leave on hand"
            f" ({level.on_hand + delta}) below reserved ({level.reserved}); release first"
        )
    return [
        ev.StockAdjusted(
            sku=ledger.sku,
            warehouse_id=warehouse_id,
            delta=delta,
            reason=reason,  # type: ignore[arg-type]
            at=timestamp(now),
            command_id=command_id,
        )
    ]


def reserve(
    ledger: SkuLedger,
    channel: int,
    channel_order_id: str,
    parts: Sequence[tuple[str, int]],
    expires_at: datetime | None,
    now: datetime,
    payment: int = 0,
    cancelled_before: int = 0,
) -> list[Message]:
    """Reserve a line in the warehouses the caller placed it in (domain/placement.py): one
    reservation per (warehouse, units) part, the first named after the line."""
    line_id = reservation_id_for(channel, channel_order_id, ledger.sku)
    events: list[Message] = []
    for index, (warehouse_id, quantity) in enumerate(parts):
        level = ledger.warehouses.get(warehouse_id)
        if level is None or level.available < quantity or quantity <= 0:
            raise PreconditionFailed(f"{ledger.sku}: {warehouse_id} cannot cover {quantity}")
        event = ev.StockReserved(
            sku=ledger.sku,
            warehouse_id=warehouse_id,
            channel=channel,  # type: ignore[arg-type]
            channel_order_id=channel_order_id,
            quantity=quantity,
            reservation_id=part_id_for(line_id, warehouse_id) if index else line_id,
            at=timestamp(now),
            payment=payment,  # type: ignore[arg-type]
            cancelled_before=0 if index else cancelled_before,
            split_of=line_id if index else "",
        )
        if expires_at is not None:
            event.expires_at.CopyFrom(timestamp(expires_at))
        events.append(event)
    return events


def oversold(
    ledger: SkuLedger,
    channel: int,
    channel_order_id: str,
    quantity: int,
    now: datetime,
    cancelled: int = 0,
    shipped: int = 0,
) -> list[Message]:
    return [
        ev.Oversold(
            sku=ledger.sku,
            channel=channel,  # type: ignore[arg-type]
            channel_order_id=channel_order_id,
            quantity=quantity,
            at=timestamp(now),
            cancelled_before=cancelled,
            shipped_before=shipped,
        )
    ]


def backorder_settled(
    ledger: SkuLedger,
    channel: int,
    channel_order_id: str,
    cancelled: int,
    shipped: int,
    now: datetime,
) -> list[Message]:
    """A backorder brought to the channel's cancelled and shipped counts of its line: it owes
    less (nothing: closed) as they grow; counts only grow, so older news changes nothing."""
    record = ledger.orders[(channel, channel_order_id)]
    cancelled, shipped = max(cancelled, record.cancelled), max(shipped, record.shipped)
    if (cancelled, shipped) == (record.cancelled, record.shipped):
        return []
    owed = max(0, record.quantity - (cancelled - record.cancelled) - (shipped - record.shipped))
    return [
        ev.BackorderChanged(
            sku=ledger.sku,
            channel=channel,  # type: ignore[arg-type]
            channel_order_id=channel_order_id,
            owed=owed,
            cancelled=cancelled,
            shipped=shipped,
            at=timestamp(now),
        )
    ]


def release(ledger: SkuLedger, reservation_id: str, reason: int, now: datetime) -> list[Message]:
    """Let go of the whole line a reservation id names (every part of a split line)."""
    line = ledger.line_of(reservation_id)
    if line is None:
        raise NotFound(f"no reservation {reservation_id!r} for {ledger.sku}")
    (channel, channel_order_id), record = line
    if record.status is OrderStatus.OVERSOLD:  # the backorder is let go: it owes nothing
        return backorder_settled(
            ledger,
            channel,
            channel_order_id,
            record.cancelled + record.quantity,
            record.shipped,
            now,
        )
    return [  # none left: already released or shipped, nothing more to do
        ev.ReservationReleased(
            sku=ledger.sku,
            reservation_id=part.reservation_id,
            reason=reason,  # type: ignore[arg-type]
            at=timestamp(now),
        )
        for part in ledger.live_parts(record)
    ]


def ship(ledger: SkuLedger, reservation_id: str, now: datetime) -> list[Message]:
    """Ship the whole line a reservation id names, each part from its warehouse."""
    line = ledger.line_of(reservation_id)
    if line is None:
        raise NotFound(f"no reservation {reservation_id!r} for {ledger.sku}")
    _, record = line
    parts = ledger.live_parts(record)
    if not parts:
        if record.status is OrderStatus.SHIPPED:
            return []
        raise PreconditionFailed(
            f"reservation {reservation_id!r} is {record.status.value}, it cannot ship"
        )
    return [
        ev.StockShipped(
            sku=ledger.sku,
            reservation_id=part.reservation_id,
            warehouse_id=part.warehouse_id,
            quantity=part.quantity,
            at=timestamp(now),
        )
        for part in parts
    ]


def transfer(
    ledger: SkuLedger,
    from_warehouse_id: str,
    to_warehouse_id: str,
    quantity: int,
    transfer_id: str,
    now: datetime,
) -> list[Message]:
    if transfer_id and transfer_id in ledger.applied_commands:
        return []
    if quantity <= 0:
        raise InvalidArgument.single("quantity", "must be positive")
    if from_warehouse_id == to_warehouse_id:
        raise InvalidArgument.single("to_warehouse_id", "must differ from from_warehouse_id")
    available = ledger.warehouses.get(from_warehouse_id, WarehouseLevel()).available
    if available < quantity:
        raise PreconditionFailed(
            f"{ledger.sku}: {from_warehouse_id} has {available} available, cannot move {quantity}"
        )
    return [
        ev.StockTransferred(
            sku=ledger.sku,
            from_warehouse_id=from_warehouse_id,
            to_warehouse_id=to_warehouse_id,
            quantity=quantity,
            transfer_id=transfer_id,
            at=timestamp(now),
        )
    ]


def set_policy(
    ledger: SkuLedger, policy: ev.AllocationPolicyChanged, now: datetime
) -> list[Message]:
    if policy.command_id and policy.command_id in ledger.applied_commands:
        return []
    changed = ev.AllocationPolicyChanged()
    changed.CopyFrom(policy)
    changed.sku = ledger.sku
    changed.at.CopyFrom(timestamp(now))
    return [changed]


def expire(ledger: SkuLedger, now: datetime) -> list[Message]:
    """Release every unpaid hold whose time is up."""
    return [
        ev.ReservationReleased(
            sku=ledger.sku,
            reservation_id=r.reservation_id,
            reason=ev.RELEASE_REASON_EXPIRED,
            at=timestamp(now),
        )
        for r in sorted(ledger.reservations.values(), key=lambda r: r.reservation_id)
        if r.expires_at is not None and r.expires_at <= now
    ]


def start_pulse(ledger: SkuLedger, pulse_id: str, channel: int, now: datetime) -> list[Message]:
    if ledger.pulse_id == pulse_id:
        return []
    return [
        ev.ChannelPulseStarted(
            sku=ledger.sku,
            pulse_id=pulse_id,
            channel=channel,  # type: ignore[arg-type]
            at=timestamp(now),
        )
    ]


def end_pulse(ledger: SkuLedger, pulse_id: str, now: datetime) -> list[Message]:
    if ledger.pulse_id != pulse_id:
        return []
    return [ev.ChannelPulseEnded(sku=ledger.sku, pulse_id=pulse_id, at=timestamp(now))]


def channel_quantity_changes(
    ledger: SkuLedger, now: datetime, reachable: Mapping[int, int] | None = None
) -> list[Message]:
    """ChannelQuantityChanged for each channel whose quantity differs from the last one told,
    numbered with the stream versions they will be appended at. `reachable`: per channel,
    the available units in warehouses that fulfil it (placement.reachable); default all."""
    target = channel_quantities(ledger.available, ledger.policy, ledger.hot_channel, reachable)
    changed = [
        (channel, quantity)
        for channel, quantity in target.items()
        if ledger.channel_quantities.get(channel) != quantity
    ]
    return [
        ev.ChannelQuantityChanged(
            sku=ledger.sku,
            channel=channel,  # type: ignore[arg-type]
            quantity=quantity,
            at=timestamp(now),
            sequence=ledger.version + offset,
        )
        for offset, (channel, quantity) in enumerate(changed, start=1)
    ]


# --- an order's line brought to where its channel says it is ------------------------------------


@dataclass(frozen=True)
class LineTarget:
    """Where the channel says one order line stands (cumulative counts, each only grows)."""

    ordered: int
    cancelled: int = 0
    shipped: int = 0
    returned: int = 0


@dataclass(frozen=True)
class OrderPolicy:
    unpaid_hold: timedelta
    authorized_hold: timedelta
    restock_returns: bool = True


def _expiry(payment: int, now: datetime, policy: OrderPolicy) -> datetime | None:
    if payment == PAID:
        return None
    return now + (policy.authorized_hold if payment == AUTHORIZED else policy.unpaid_hold)


def fresh_need(
    ledger: SkuLedger, channel: int, channel_order_id: str, target: LineTarget, payment: int
) -> int:
    """Units a new reservation must take to bring this line to `target`: the line is not
    held yet (or its unpaid hold expired and it is now paid for); 0 otherwise."""
    record = ledger.orders.get((channel, channel_order_id))
    if record is None:
        return max(0, target.ordered - min(target.cancelled, target.ordered))
    taken_again = (
        record.status is not OrderStatus.OVERSOLD
        and record.expired
        and not ledger.live_parts(record)
        and payment >= AUTHORIZED
    )
    if not taken_again:
        return 0
    net_of = max(min(target.cancelled, target.ordered), record.cancelled)
    return max(0, target.ordered - net_of - record.shipped)


@dataclass
class _Part:
    reservation_id: str
    warehouse_id: str
    quantity: int


def settle_line(
    ledger: SkuLedger,
    channel: int,
    channel_order_id: str,
    target: LineTarget,
    payment: int,
    policy: OrderPolicy,
    now: datetime,
    placement: Sequence[tuple[str, int]] | None,
) -> list[Message]:
    """The events that bring this SKU's part of an order to `target`. State-based and
    monotone: a target already reached, or older than one reached, appends nothing, so the
    order's notifications converge in any order and any number of times.

    `placement`: where a new reservation holds the line, when it takes one ((warehouse,
    units) parts of its `fresh_need` units; None when the warehouses cannot cover them).
    A split line's cancelled units are let go from its farthest part first, and its shipped
    units leave from its nearest part first."""
    key = (channel, channel_order_id)
    rid = reservation_id_for(channel, channel_order_id, ledger.sku)
    record = ledger.orders.get(key)
    if record is not None and record.status is OrderStatus.OVERSOLD:
        # A backorder: it owes less as the channel cancels or ships it from elsewhere.
        return backorder_settled(
            ledger,
            channel,
            channel_order_id,
            min(target.cancelled, target.ordered),
            target.shipped,
            now,
        )
    events: list[Message] = []
    parts = [_Part(r.reservation_id, r.warehouse_id, r.quantity) for r in ledger.live_parts(record)]
    cancelled = record.cancelled if record else 0
    shipped = record.shipped if record else 0
    returned = record.returned if record else 0
    current_payment = record.payment if record and parts else 0
    warehouse_id = parts[0].warehouse_id if parts else (record.warehouse_id if record else "")
    expiry = ledger.reservations[parts[0].reservation_id].expires_at if parts else None
    cancel_more = max(0, min(target.cancelled, target.ordered) - cancelled)

    net_of = max(min(target.cancelled, target.ordered), cancelled)
    needed = fresh_need(ledger, channel, channel_order_id, target, payment)
    if needed > 0:
        if placement is None:  # the channel sold it; we no longer have it where it can ship
            return oversold(ledger, channel, channel_order_id, needed, now, net_of, shipped)
        expiry = _expiry(payment, now, policy)
        taken = reserve(ledger, channel, channel_order_id, placement, expiry, now, payment, net_of)
        events += taken
        parts = [
            _Part(e.reservation_id, e.warehouse_id, e.quantity)
            for e in taken
            if isinstance(e, ev.StockReserved)
        ]
        warehouse_id, current_payment = parts[0].warehouse_id, payment
        cancel_more = 0  # the reservation was made net of the cancelled units
    elif record is None:
        # Cancelled before we took it: remembered (an empty reservation, closed at once), so
        # a late, older notification of the same order cannot take stock for it.
        return _noted_as_cancelled(ledger, channel, channel_order_id, net_of, now)

    live = sum(part.quantity for part in parts)
    release = min(cancel_more, live)
    for part in reversed(parts):  # the farthest part first
        take = min(release, part.quantity)
        if not take:
            continue
        release -= take
        part.quantity -= take
        events.append(
            ev.ReservationReleased(
                sku=ledger.sku,
                reservation_id=part.reservation_id,
                reason=ev.RELEASE_REASON_CANCELLED,
                at=timestamp(now),
                quantity=take,
                warehouse_id=part.warehouse_id,
                remaining=part.quantity,
            )
        )
    ship = min(max(0, target.shipped - shipped), sum(part.quantity for part in parts))
    shipped += ship
    for part in parts:  # the nearest part first
        take = min(ship, part.quantity)
        if not take:
            continue
        ship -= take
        part.quantity -= take
        events.append(
            ev.StockShipped(
                sku=ledger.sku,
                reservation_id=part.reservation_id,
                warehouse_id=part.warehouse_id,
                quantity=take,
                at=timestamp(now),
                remaining=part.quantity,
            )
        )
    if payment > current_payment:
        expires = _expiry(payment, now, policy)
        if expires is not None and expiry is not None:
            expires = max(expires, expiry)  # a hold is only ever made longer
        for part in parts:
            if not part.quantity:
                continue
            confirmed = ev.ReservationConfirmed(
                sku=ledger.sku,
                reservation_id=part.reservation_id,
                payment=payment,  # type: ignore[arg-type]
                at=timestamp(now),
            )
            if expires is not None:
                confirmed.expires_at.CopyFrom(timestamp(expires))
            events.append(confirmed)
    back = min(target.returned, shipped) - returned
    if back > 0:
        events.append(
            ev.OrderReturned(
                sku=ledger.sku,
                reservation_id=rid,
                channel=channel,  # type: ignore[arg-type]
                channel_order_id=channel_order_id,
                warehouse_id=warehouse_id,
                quantity=back,
                restocked=policy.restock_returns,
                at=timestamp(now),
            )
        )
    return events


def _noted_as_cancelled(
    ledger: SkuLedger, channel: int, channel_order_id: str, cancelled: int, now: datetime
) -> list[Message]:
    rid = reservation_id_for(channel, channel_order_id, ledger.sku)
    return [
        ev.StockReserved(
            sku=ledger.sku,
            warehouse_id=min(ledger.warehouses, default=""),
            channel=channel,  # type: ignore[arg-type]
            channel_order_id=channel_order_id,
            quantity=0,
            reservation_id=rid,
            at=timestamp(now),
            cancelled_before=cancelled,
        ),
        ev.ReservationReleased(
            sku=ledger.sku,
            reservation_id=rid,
            reason=ev.RELEASE_REASON_CANCELLED,
            at=timestamp(now),
        ),
    ]
