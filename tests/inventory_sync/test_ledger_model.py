"""The SKU ledger against a deliberately simple model, over any sequence of commands
(Hypothesis stateful testing). Pure domain code: no database. As the writer does, every
command that appends events is followed by filling backorders and channel quantities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pulsestock.errors import DomainError
from pulsestock.inventory_sync.domain.commands import (
    AdjustStock,
    Applied,
    Command,
    ExpireHolds,
    ReceiveStock,
    ReleaseReservation,
    ReserveOrder,
    ReserveOutcome,
    ShipReservation,
    TransferStock,
    decide,
    fill_backorders,
)
from pulsestock.inventory_sync.domain.ledger import (
    SkuLedger,
    channel_quantity_changes,
    reservation_id_for,
)
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

SKU = "MUG"
WAREHOUSES = ["W1", "W2"]
CHANNELS = [Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON]
HOLD = timedelta(minutes=10)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = SkuLedger(SKU)
        self.now = datetime(2026, 11, 24, tzinfo=UTC)
        # The model: plain numbers and a dict of holds.
        self.on_hand = dict.fromkeys(WAREHOUSES, 0)
        self.reserved = dict.fromkeys(WAREHOUSES, 0)
        # line reservation id -> its parts: (part's reservation id, warehouse, units)
        self.holds: dict[str, list[tuple[str, str, int]]] = {}
        self.expiry: dict[str, datetime | None] = {}
        self.backorders: dict[str, int] = {}  # line reservation id -> units owed, oldest first
        self.orders = 0

    def run(self, command: Command) -> Applied | ReserveOutcome | DomainError:
        try:
            events, outcome = decide(command, {SKU: self.ledger}, self.now, HOLD)
        except DomainError as error:
            return error
        for event in events.get(SKU, []):
            self.ledger.apply(event)
        if events.get(SKU):
            fill_backorders(self.ledger, {}, self.now)
        for event in channel_quantity_changes(self.ledger, self.now):
            self.ledger.apply(event)
        return outcome

    def fill_backorders(self) -> None:
        """The model of filling: the oldest backorder all warehouses together cover is held,
        in the one warehouse with most to spare if one covers it, else split most first."""
        for rid, owed in list(self.backorders.items()):
            if sum(self.available(w) for w in WAREHOUSES) < owed:
                continue
            by_spare = sorted(WAREHOUSES, key=lambda w: (-self.available(w), w))
            parts: list[tuple[str, str, int]] = []
            if self.available(by_spare[0]) >= owed:
                parts = [(rid, by_spare[0], owed)]
            else:
                left = owed
                for w in by_spare:
                    take = min(left, self.available(w))
                    if take:
                        parts.append((rid if not parts else f"{rid}@{w}", w, take))
                        left -= take
            for _, warehouse, units in parts:
                self.reserved[warehouse] += units
            del self.backorders[rid]
            self.holds[rid] = parts
            self.expiry[rid] = None

    def available(self, warehouse: str) -> int:
        return self.on_hand[warehouse] - self.reserved[warehouse]

    @rule(warehouse=st.sampled_from(WAREHOUSES), quantity=st.integers(-3, 20))
    def receive(self, warehouse: str, quantity: int) -> None:
        result = self.run(ReceiveStock(SKU, warehouse, quantity))
        if quantity > 0:
            assert isinstance(result, Applied)
            self.on_hand[warehouse] += quantity
            self.fill_backorders()
        else:
            assert isinstance(result, DomainError)

    @rule(warehouse=st.sampled_from(WAREHOUSES), delta=st.integers(-15, 15))
    def adjust(self, warehouse: str, delta: int) -> None:
        result = self.run(AdjustStock(SKU, warehouse, delta, ev.ADJUSTMENT_REASON_COUNT))
        if delta != 0 and self.on_hand[warehouse] + delta >= self.reserved[warehouse]:
            assert isinstance(result, Applied)
            self.on_hand[warehouse] += delta
            self.fill_backorders()
        else:
            assert isinstance(result, DomainError)

    @rule(
        quantity=st.integers(1, 12),
        channel=st.sampled_from(CHANNELS),
        paid=st.booleans(),
        already_sold=st.booleans(),
    )
    def reserve(self, quantity: int, channel: int, paid: bool, already_sold: bool) -> None:
        self.orders += 1
        order_id = f"o{self.orders}"
        result = self.run(ReserveOrder(channel, order_id, ((SKU, quantity),), paid, already_sold))
        fits = [w for w in WAREHOUSES if self.available(w) >= quantity]
        if fits or sum(self.available(w) for w in WAREHOUSES) >= quantity:
            assert isinstance(result, ReserveOutcome)
            assert result.reserved
            parts = [(rid, warehouse, units) for _, rid, warehouse, units in result.held]
            assert sum(units for _, _, units in parts) == quantity
            if fits:  # one warehouse covers it: one part, held there
                assert len(parts) == 1
                assert parts[0][1] in fits
            else:  # split: each warehouse gives what it has, the one with most first
                assert [w for _, w, _ in parts] == sorted(
                    WAREHOUSES, key=lambda w: (-self.available(w), w)
                )[: len(parts)]
            for _, warehouse, units in parts:
                assert 0 < units <= self.available(warehouse)
                self.reserved[warehouse] += units
            self.holds[result.reservation_ids[0]] = parts
            self.expiry[result.reservation_ids[0]] = None if paid else self.now + HOLD
        elif already_sold:
            assert isinstance(result, ReserveOutcome)
            assert result.oversold
            assert not result.reserved
            self.backorders[reservation_id_for(channel, order_id, SKU)] = quantity
        else:
            assert isinstance(result, DomainError)
        # Repeating the same order changes nothing and answers the same.
        again = self.run(ReserveOrder(channel, order_id, ((SKU, quantity),), paid, already_sold))
        if isinstance(result, ReserveOutcome):
            assert again == result

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.holds:
            return
        reservation_id = data.draw(st.sampled_from(sorted(self.holds)))
        result = self.run(ReleaseReservation(SKU, reservation_id, ev.RELEASE_REASON_CANCELLED))
        assert isinstance(result, Applied)
        for _, warehouse, units in self.holds.pop(reservation_id):
            self.reserved[warehouse] -= units
        self.fill_backorders()
        assert isinstance(self.run(ReleaseReservation(SKU, reservation_id, 1)), Applied)

    @rule(data=st.data())
    def cancel_backorder(self, data: st.DataObject) -> None:
        if not self.backorders:
            return
        reservation_id = data.draw(st.sampled_from(sorted(self.backorders)))
        result = self.run(ReleaseReservation(SKU, reservation_id, ev.RELEASE_REASON_CANCELLED))
        assert isinstance(result, Applied)
        del self.backorders[reservation_id]
        # Cancelled for good: it is never filled, and a second cancel changes nothing.
        before = self.ledger.version
        assert isinstance(self.run(ReleaseReservation(SKU, reservation_id, 1)), Applied)
        assert self.ledger.version == before

    @rule(data=st.data())
    def ship(self, data: st.DataObject) -> None:
        if not self.holds:
            return
        reservation_id = data.draw(st.sampled_from(sorted(self.holds)))
        result = self.run(ShipReservation(SKU, reservation_id))
        assert isinstance(result, Applied)
        for _, warehouse, units in self.holds.pop(reservation_id):
            self.reserved[warehouse] -= units
            self.on_hand[warehouse] -= units
        self.fill_backorders()

    @rule(source=st.sampled_from(WAREHOUSES), quantity=st.integers(0, 15))
    def transfer(self, source: str, quantity: int) -> None:
        target = next(w for w in WAREHOUSES if w != source)
        result = self.run(TransferStock(SKU, source, target, quantity))
        if 0 < quantity <= self.available(source):
            assert isinstance(result, Applied)
            self.on_hand[source] -= quantity
            self.on_hand[target] += quantity
            self.fill_backorders()
        else:
            assert isinstance(result, DomainError)

    @rule(minutes=st.sampled_from([0, 1, 5, 10, 11]))
    def time_passes_then_expire(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        assert isinstance(self.run(ExpireHolds(SKU)), Applied)
        for reservation_id, parts in list(self.holds.items()):
            expires = self.expiry[reservation_id]
            if expires is not None and expires <= self.now:
                del self.holds[reservation_id]
                for _, warehouse, units in parts:
                    self.reserved[warehouse] -= units
        self.fill_backorders()

    @invariant()
    def stock_never_goes_wrong(self) -> None:
        for warehouse in WAREHOUSES:
            level = self.ledger.warehouses.get(warehouse)
            on_hand = level.on_hand if level else 0
            reserved = level.reserved if level else 0
            assert 0 <= reserved <= on_hand
            assert (on_hand, reserved) == (self.on_hand[warehouse], self.reserved[warehouse])
        owed = {
            reservation_id_for(channel, order_id, SKU): self.ledger.orders[
                (channel, order_id)
            ].quantity
            for channel, order_id in self.ledger.backorders
        }
        assert owed == self.backorders  # the same backorders, owing the same, oldest first
        assert list(owed) == list(self.backorders)
        assert set(self.ledger.reservations) == {
            rid for parts in self.holds.values() for rid, _, _ in parts
        }
        for channel, quantity in self.ledger.channel_quantities.items():
            assert 0 <= quantity <= self.ledger.available, channel


LedgerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestLedgerMatchesModel = LedgerMachine.TestCase
