"""The catalogue against the real stock ledger (issue 14, item 4). Pure domain, no I/O.

test_catalogue_domain.py checks the catalogue's arithmetic against plain numbers. Here the
numbers come from real SKU ledgers (stock received, held by other orders, shipped, shrunk,
spread over warehouses), and every sale goes through the ledger's atomic multi-SKU
reservation (`decide` of a ReserveOrder with one line per stock item): what a listing shows
is what the ledger lets a buyer take, exactly, and bundles, multi-packs and kits sharing a
component never take more of it than there is. Catalogues are built through the real
commands, so only catalogues the service could hold arise; the last properties follow random
command scripts (refused commands included) against an independent model of the catalogue.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.errors import DomainError, InvalidArgument, NotFound, PreconditionFailed
from pulsestock.inventory_sync.domain.allocation import channel_quantities
from pulsestock.inventory_sync.domain.catalogue import (
    MAX_COMPONENTS,
    MAX_UNITS,
    AmazonIds,
    Catalogue,
    CatalogueEvent,
    ChannelIds,
    Component,
    Composition,
    KitDefined,
    KitRetired,
    ListingCompositionChanged,
    ListingCreated,
    ListingIdTaken,
    ListingKey,
    ListingRetired,
    ShopifyIds,
    TikTokShopIds,
    listing_quantity,
)
from pulsestock.inventory_sync.domain.commands import (
    AdjustStock,
    CancelOrder,
    Command,
    ExpireHolds,
    Outcome,
    ReceiveStock,
    ReserveOrder,
    ReserveOutcome,
    ShipReservation,
    decide,
)
from pulsestock.inventory_sync.domain.ledger import SkuLedger, reservation_id_for
from pulsestock.inventory_sync.domain.placement import NO_SITES, Site, Sites, reachable
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOLD = timedelta(minutes=10)
SKUS = ["BOX", "COASTER", "LID", "MUG", "SPOON", "TEA"]
STOCK = frozenset(SKUS)
KITS = ["GIFT", "DUO", "HAMPER", "TRIO"]
WAREHOUSES = ["W1", "W2", "W3"]
CHANNELS = [Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON]
MARKETPLACES = ["ATVPDKIKX0DER", "A1F83G8C2ARO7P"]
REGIONS = ["", "eu", "us"]
# Warehouses with regions and kinds that serve every channel: placement then prefers some
# (FBT for TikTok Shop, the buyer's region) but may still use all of them.
SITED: Sites = {"W1": Site("eu", "fbt"), "W2": Site("us", "own"), "W3": Site("eu", "3pl")}


def ids_for(channel: int, n: int, other: int = 0) -> ChannelIds:
    """Channel ids nothing like our SKUs; `other` varies the secondary id (a TikTok product,
    a Shopify inventory item, an Amazon marketplace) so scripts collide on those too."""
    if channel == Channel.CHANNEL_TIKTOK_SHOP:
        return TikTokShopIds(f"172959296971{other}", f"172959296972{n:04d}", "7068517275539719942")
    if channel == Channel.CHANNEL_SHOPIFY:
        return ShopifyIds(f"4400{n}", f"5500{(n + other) % 8}", "61920886870")
    return AmazonIds(f"SELL {n}/blue", MARKETPLACES[other % 2])


def apply_all(catalogue: Catalogue, events: list[CatalogueEvent]) -> None:
    for event in events:
        catalogue.apply(event)


# --- catalogues built through the commands ------------------------------------------------


def components_over(skus: list[str], kits: list[str]) -> st.SearchStrategy[Composition]:
    """A valid composition over these stock items and (already defined) kits."""
    part = st.builds(Component, units=st.integers(1, 3), sku=st.sampled_from(skus))
    if kits:
        part = part | st.builds(Component, units=st.integers(1, 2), kit_id=st.sampled_from(kits))
    return st.lists(part, min_size=1, max_size=3, unique_by=lambda c: (c.sku, c.kit_id)).map(tuple)


def listing_shapes(skus: list[str], kits: list[str]) -> st.SearchStrategy[Composition]:
    """A single item, a multi-pack (one item x N), a bundle (several items), or a kit
    (nested kits, possibly with an item the kit already holds: summed)."""
    single = st.builds(lambda s: (Component(1, sku=s),), st.sampled_from(skus))
    pack = st.builds(lambda s, n: (Component(n, sku=s),), st.sampled_from(skus), st.integers(2, 6))
    bundle = st.lists(
        st.builds(Component, units=st.integers(1, 2), sku=st.sampled_from(skus)),
        min_size=2,
        max_size=4,
        unique_by=lambda c: c.sku,
    ).map(tuple)
    shapes = single | pack | bundle
    if kits:
        shapes |= st.builds(
            lambda k, n, extra: (Component(n, kit_id=k), *extra),
            st.sampled_from(kits),
            st.integers(1, 2),
            st.lists(st.builds(Component, units=st.just(1), sku=st.sampled_from(skus)), max_size=1),
        )
    return shapes


@st.composite
def catalogues(draw: st.DrawFn, skus: list[str] = SKUS) -> Catalogue:
    """Kits over stock items and earlier kits, listings of every shape on every channel,
    then some kits redefined under their listings and some listings retired. Every command
    is valid, so each must be accepted."""
    catalogue = Catalogue()
    kits = KITS[: draw(st.integers(0, len(KITS)))]
    for index, kit_id in enumerate(kits):  # over earlier kits only: nested and acyclic
        composition = draw(components_over(skus, kits[:index]))
        events = catalogue.define_kit(kit_id, composition, STOCK, NOW)
        assert len(events) == 1
        apply_all(catalogue, events)
    count = draw(st.integers(1, 8))
    for n in range(count):
        ids = ids_for(draw(st.sampled_from(CHANNELS)), n)
        events = catalogue.create_listing(ids, draw(listing_shapes(skus, kits)), STOCK, NOW)
        assert len(events) == 1
        apply_all(catalogue, events)
    if kits:
        for kit_id in draw(st.lists(st.sampled_from(kits), max_size=2)):
            earlier = kits[: kits.index(kit_id)]
            composition = draw(components_over(skus, earlier))
            apply_all(catalogue, catalogue.define_kit(kit_id, composition, STOCK, NOW))
    listings = catalogue.list_listings()  # some retired, one at least left
    for listing in draw(st.lists(st.sampled_from(listings), max_size=min(2, len(listings) - 1))):
        apply_all(catalogue, catalogue.retire_listing(listing.key, NOW))
    return catalogue


# --- stock built through the ledger's commands --------------------------------------------


def fresh_ledgers() -> dict[str, SkuLedger]:
    return {name: SkuLedger(name) for name in SKUS}


def run(
    command: Command,
    ledgers: dict[str, SkuLedger],
    now: datetime = NOW,
    sites: Sites = NO_SITES,
) -> tuple[dict[str, list[Message]], Outcome]:
    """Decide and apply, as the writer does (refusals raise and change nothing)."""
    events, outcome = decide(command, ledgers, now, HOLD, sites)
    for name, sku_events in events.items():
        for event in sku_events:
            ledgers[name].apply(event)
    return events, outcome


@dataclass(frozen=True)
class StockStep:
    kind: str  # receive, other_order (single-SKU, by another shop flow), ship, shrink
    sku: str
    warehouse: str
    units: int
    paid: bool


def histories(skus: list[str], paid: st.SearchStrategy[bool]) -> st.SearchStrategy[list[StockStep]]:
    """Deliveries of these stock items, then anything: more deliveries, other orders taking
    some, shipments, write-offs."""

    def steps(kinds: list[str], units: int) -> st.SearchStrategy[StockStep]:
        return st.builds(
            StockStep,
            kind=st.sampled_from(kinds),
            sku=st.sampled_from(skus),
            warehouse=st.sampled_from(WAREHOUSES),
            units=st.integers(1, units),
            paid=paid,
        )

    deliveries = st.lists(steps(["receive"], 40), min_size=len(skus), max_size=2 * len(skus))
    anything = st.lists(steps(["receive", "other_order", "other_order", "ship", "shrink"], 25))
    return st.tuples(deliveries, anything.map(lambda s: s[:20])).map(lambda p: [*p[0], *p[1]])


def stock_from(history: list[StockStep]) -> dict[str, SkuLedger]:
    """Real ledger states: received stock in several warehouses, some of it held by other
    orders (paid and unpaid), some shipped, some written off."""
    ledgers = fresh_ledgers()
    for n, step in enumerate(history):
        ledger = ledgers[step.sku]
        command: Command
        if step.kind == "receive":
            command = ReceiveStock(step.sku, step.warehouse, step.units)
        elif step.kind == "other_order":
            lines = ((step.sku, step.units),)
            command = ReserveOrder(Channel.CHANNEL_AMAZON, f"other-{n}", lines, step.paid)
        elif step.kind == "ship":
            if not ledger.reservations:
                continue
            command = ShipReservation(step.sku, min(ledger.reservations))
        else:
            command = AdjustStock(step.sku, step.warehouse, -step.units, ev.ADJUSTMENT_REASON_COUNT)
        try:
            run(command, ledgers)
        except DomainError:
            continue  # short stock, or a write-off below what is held: refused as it would be
    return ledgers


def walk(composition: Composition, catalogue: Catalogue) -> dict[str, int]:
    """Stock units of one unit of `composition`, walked apart from the catalogue's indexes."""
    units: dict[str, int] = {}
    for c in composition:
        inner = {c.sku: 1} if c.sku else walk(catalogue.kits[c.kit_id].composition, catalogue)
        for name, n in inner.items():
            units[name] = units.get(name, 0) + n * c.units
    return units


def available_of(ledgers: Mapping[str, SkuLedger]) -> dict[str, int]:
    return {name: ledger.available for name, ledger in ledgers.items()}


def reserved_units(events: Mapping[str, list[Message]]) -> dict[str, int]:
    units: dict[str, int] = {}
    for name, sku_events in events.items():
        for event in sku_events:
            if isinstance(event, ev.StockReserved):
                units[name] = units.get(name, 0) + event.quantity
    return units


# --- 1. what a listing shows is exactly what the ledger lets a buyer take ------------------


@settings(max_examples=200, deadline=None)
@given(
    catalogues(),
    histories(SKUS, st.booleans()),
    st.sampled_from([NO_SITES, SITED]),
    st.sampled_from(REGIONS),
)
def test_every_channel_shows_exactly_what_the_ledger_can_reserve(
    catalogue: Catalogue, history: list[StockStep], sites: Sites, region: str
) -> None:
    """For any catalogue and stock, every active listing on every channel: an order of its
    shown quantity is reserved whole by the ledger (every component line, all its units),
    after which the listing shows 0; an order of one more is refused, and the lines that
    fall short are exactly the ones whose stock item lacks units (none is reserved)."""
    ledgers = stock_from(history)
    available = available_of(ledgers)
    for listing in catalogue.list_listings():
        key = listing.key
        assert catalogue.stock_units(key) == walk(listing.composition, catalogue)
        shown = catalogue.quantity(key, available)
        assert shown == listing_quantity(catalogue.stock_units(key), available)
        hypothesis.event("a listing shows stock" if shown else "a listing shows 0")
        if shown > 0:
            lines = catalogue.reservation_lines(key, shown)
            order = ReserveOrder(key.channel, "probe", tuple(lines), buyer_region=region)
            after = copy.deepcopy(ledgers)
            events, outcome = run(order, after, sites=sites)
            assert isinstance(outcome, ReserveOutcome)
            assert outcome.reserved
            assert not outcome.oversold
            assert reserved_units(events) == dict(lines), key
            assert catalogue.quantity(key, available_of(after)) == 0, key
        more = catalogue.reservation_lines(key, shown + 1)
        short = {name for name, units in more if units > available[name]}
        assert short, (key, shown, more)
        refused = ReserveOrder(key.channel, "probe-more", tuple(more), buyer_region=region)
        with pytest.raises(PreconditionFailed, match="insufficient stock"):
            decide(refused, ledgers, NOW, HOLD, sites)
        # The same order already taken by the channel: a backorder on the short lines only,
        # and still nothing reserved on the others.
        sold = ReserveOrder(key.channel, "probe-sold", tuple(more), already_sold=True)
        events, outcome = decide(sold, ledgers, NOW, HOLD, sites)
        assert isinstance(outcome, ReserveOutcome)
        assert outcome.oversold
        assert not outcome.reserved
        assert set(events) == short
        assert all(isinstance(e, ev.Oversold) for sku_events in events.values() for e in sku_events)


def channel_shown(ledger: SkuLedger, channel: int, sites: Sites) -> int:
    """What channel sync shows the channel of this stock item: the ledger's channel
    projection, counting only warehouses that fulfil the channel."""
    target = channel_quantities(
        ledger.available, ledger.policy, ledger.hot_channel, reachable(ledger, sites)
    )
    return target[channel]


def test_a_listing_shows_no_stock_its_channel_cannot_ship() -> None:
    """An Amazon-only (FBA) warehouse's units are not shown on a TikTok Shop listing (whose
    order for them the ledger would refuse), and are on an Amazon one, whose order for all of
    them succeeds."""
    sites: Sites = {"FBA": Site("us", "fba", ("amazon",)), "W1": Site("us", "own")}
    catalogue = Catalogue()
    tiktok = ids_for(Channel.CHANNEL_TIKTOK_SHOP, 1)
    amazon = ids_for(Channel.CHANNEL_AMAZON, 1)
    for ids in (tiktok, amazon):
        apply_all(catalogue, catalogue.create_listing(ids, (Component(2, sku="MUG"),), STOCK, NOW))
    ledgers = fresh_ledgers()
    run(ReceiveStock("MUG", "FBA", 10), ledgers)
    run(ReceiveStock("MUG", "W1", 1), ledgers)
    shown = {
        ids.key.channel: catalogue.quantity(
            ids.key, {"MUG": channel_shown(ledgers["MUG"], ids.key.channel, sites)}
        )
        for ids in (tiktok, amazon)
    }
    assert shown == {Channel.CHANNEL_TIKTOK_SHOP: 0, Channel.CHANNEL_AMAZON: 5}
    with pytest.raises(PreconditionFailed):  # what TikTok Shop would have oversold
        run(
            ReserveOrder(
                tiktok.key.channel, "tt-1", tuple(catalogue.reservation_lines(tiktok.key, 1))
            ),
            ledgers,
            sites=sites,
        )
    lines = tuple(catalogue.reservation_lines(amazon.key, 5))
    _, outcome = run(ReserveOrder(amazon.key.channel, "amz-1", lines), ledgers, sites=sites)
    assert outcome.reserved


# --- 2. overlapping bundles, multi-packs and kits never oversell a component ---------------


@dataclass(frozen=True)
class Order:
    listing: int
    quantity: int
    paid: bool
    region: str


@dataclass(frozen=True)
class Receive:
    sku: str
    warehouse: str
    units: int


@dataclass(frozen=True)
class Cancel:
    order: int


@dataclass(frozen=True)
class Ship:
    order: int


@dataclass(frozen=True)
class Wait:
    minutes: int


Action = Order | Receive | Cancel | Ship | Wait
SHARED = ["COASTER", "LID", "MUG"]  # few items: most listings share several of them

actions = st.one_of(
    st.builds(
        Order,
        st.integers(0, 20),
        st.integers(1, 4),
        st.booleans(),
        st.sampled_from(REGIONS),
    ),
    st.builds(
        Order,
        st.integers(0, 20),
        st.integers(1, 4),
        st.booleans(),
        st.sampled_from(REGIONS),
    ),
    st.builds(Receive, st.sampled_from(SHARED), st.sampled_from(WAREHOUSES), st.integers(1, 8)),
    st.builds(Cancel, st.integers(0, 20)),
    st.builds(Ship, st.integers(0, 20)),
    st.builds(Wait, st.integers(1, 15)),
)


@dataclass
class Held:
    """One of our orders the ledger holds: its key, lines and when an unpaid hold ends."""

    channel: int
    order_id: str
    lines: dict[str, int]
    expires_at: datetime | None


@dataclass
class Stock:
    """The model: units on hand and held per stock item, as plain numbers."""

    on_hand: dict[str, int]
    reserved: dict[str, int]
    held: list[Held] = field(default_factory=list)

    def available(self, name: str) -> int:
        return self.on_hand[name] - self.reserved[name]

    def let_go(self, order: Held, shipped: bool) -> None:
        for name, units in order.lines.items():
            self.reserved[name] -= units
            if shipped:
                self.on_hand[name] -= units
        self.held.remove(order)


def held_for(ledger: SkuLedger, channel: int, order_id: str) -> int:
    return sum(
        r.quantity
        for r in ledger.reservations.values()
        if (r.channel, r.channel_order_id) == (channel, order_id)
    )


@settings(max_examples=200, deadline=None)
@given(
    catalogues(SHARED),
    histories(SHARED, st.just(True)),  # paid: the model follows only our orders' holds
    st.lists(actions, min_size=1, max_size=40),
    st.sampled_from([NO_SITES, SITED]),
)
def test_reservations_across_overlapping_listings_never_oversell_a_component(
    catalogue: Catalogue,
    history: list[StockStep],
    script: list[Action],
    sites: Sites,
) -> None:
    """Orders for listings sharing components, each reserved through the ledger's atomic
    multi-line reservation, between deliveries, cancellations, shipments and unpaid holds
    running out: at every step no stock item is held beyond its stock, each order holds all
    its lines or none, an order is refused exactly when some component lacks the units at
    that moment, and that is exactly when it asks for more than the listing shows."""
    listings = catalogue.list_listings()
    if not listings:
        return
    ledgers = stock_from(history)
    model = Stock(
        {name: ledgers[name].on_hand for name in SKUS},
        {name: ledgers[name].reserved for name in SKUS},
    )
    now = NOW
    for step, action in enumerate(script):
        if isinstance(action, Order):
            key = listings[action.listing % len(listings)].key
            shown = catalogue.quantity(key, available_of(ledgers))
            lines = dict(catalogue.reservation_lines(key, action.quantity))
            fits = all(units <= model.available(name) for name, units in lines.items())
            order_id = f"order-{step}"
            command = ReserveOrder(
                key.channel, order_id, tuple(lines.items()), action.paid, False, action.region
            )
            try:
                events, outcome = run(command, ledgers, now, sites)
            except PreconditionFailed:
                hypothesis.event("an order refused")
                assert not fits, (key, lines, model.on_hand, model.reserved)
                assert action.quantity > shown
                for name in lines:  # none of its lines is held
                    assert held_for(ledgers[name], key.channel, order_id) == 0
                continue
            hypothesis.event("an order reserved")
            assert fits, (key, lines, model.on_hand, model.reserved)
            assert action.quantity <= shown
            assert isinstance(outcome, ReserveOutcome)
            assert outcome.reserved
            assert reserved_units(events) == lines
            expires = None if action.paid else now + HOLD
            model.held.append(Held(key.channel, order_id, lines, expires))
            for name, units in lines.items():
                model.reserved[name] += units
        elif isinstance(action, Receive):
            run(ReceiveStock(action.sku, action.warehouse, action.units), ledgers, now)
            model.on_hand[action.sku] += action.units
        elif isinstance(action, Cancel | Ship):
            if not model.held:
                continue
            held = model.held[action.order % len(model.held)]
            if isinstance(action, Cancel):
                run(CancelOrder(held.channel, held.order_id, tuple(held.lines)), ledgers, now)
            else:
                for name in held.lines:
                    rid = reservation_id_for(held.channel, held.order_id, name)
                    run(ShipReservation(name, rid), ledgers, now)
            model.let_go(held, shipped=isinstance(action, Ship))
        else:
            now += timedelta(minutes=action.minutes)
            for name in SKUS:
                run(ExpireHolds(name), ledgers, now)
            for held in list(model.held):
                if held.expires_at is not None and held.expires_at <= now:
                    model.let_go(held, shipped=False)
        # What must always hold, after every step.
        for name, ledger in ledgers.items():
            assert ledger.on_hand == model.on_hand[name], name
            assert ledger.reserved == model.reserved[name], name
            assert 0 <= ledger.reserved <= ledger.on_hand, name
            for level in ledger.warehouses.values():
                assert 0 <= level.reserved <= level.on_hand, name
        for held in model.held:  # every line of every order still held, whole
            for name, units in held.lines.items():
                assert held_for(ledgers[name], held.channel, held.order_id) == units


# --- 3 and 4. the catalogue follows any command script, rebuilt or live --------------------


stock_parts = st.builds(Component, units=st.integers(1, 3), sku=st.sampled_from(SKUS))
kit_parts = st.builds(Component, units=st.integers(1, 3), kit_id=st.sampled_from(KITS))
valid_parts = st.one_of(stock_parts, stock_parts, kit_parts)
invalid_parts = st.one_of(
    st.builds(Component, units=st.integers(-1, 0), sku=st.sampled_from(SKUS)),
    st.just(Component(1, sku="GHOST")),  # well-formed, but no such stock item
    st.just(Component(1, sku="MUG", kit_id="GIFT")),
    st.just(Component(1)),
)
script_compositions = st.one_of(
    st.lists(valid_parts, min_size=1, max_size=4, unique_by=lambda c: (c.sku, c.kit_id)),
    st.lists(valid_parts, min_size=1, max_size=4, unique_by=lambda c: (c.sku, c.kit_id)),
    st.lists(valid_parts, min_size=1, max_size=4, unique_by=lambda c: (c.sku, c.kit_id)),
    st.lists(st.one_of(valid_parts, invalid_parts), max_size=3),
).map(tuple)


@dataclass(frozen=True)
class Step:
    kind: str  # create, update, retire, kit (define), kit_retire
    ids: ChannelIds
    kit_id: str
    composition: Composition
    target: int | None  # the target-th listing (kit to retire) known so far, or None

    def concrete(self, live: Catalogue) -> Step:
        """Aimed at what exists (most listing and kit commands are), else as drawn."""
        if self.target is None:
            return self
        if self.kind == "kit_retire" and live.kits:
            kit_id = sorted(live.kits)[self.target % len(live.kits)]
            return Step(self.kind, self.ids, kit_id, self.composition, None)
        if self.kind != "kit" and live.listings:
            key = sorted(live.listings)[self.target % len(live.listings)]
            return Step(self.kind, live.listings[key].ids, self.kit_id, self.composition, None)
        return self


script_steps = st.builds(
    Step,
    kind=st.sampled_from(
        ["kit"] * 3 + ["create"] * 4 + ["update"] * 3 + ["retire", "kit_retire", "kit_retire"]
    ),
    ids=st.builds(ids_for, st.sampled_from(CHANNELS), st.integers(0, 2), st.integers(0, 2)),
    kit_id=st.sampled_from(KITS),
    composition=script_compositions,
    target=st.none() | st.integers(0, 10),
)


def command_of(step: Step) -> Callable[[Catalogue], list[CatalogueEvent]]:
    ids = step.ids
    if step.kind == "create":
        return lambda c: c.create_listing(ids, step.composition, STOCK, NOW)
    if step.kind == "update":
        return lambda c: c.update_listing(ids.key, step.composition, STOCK, NOW)
    if step.kind == "retire":
        return lambda c: c.retire_listing(ids.key, NOW)
    if step.kind == "kit":
        return lambda c: c.define_kit(step.kit_id, step.composition, STOCK, NOW)
    return lambda c: c.retire_kit(step.kit_id, NOW)


@dataclass
class Model:
    """The catalogue as plain dicts, changed by the commands the rules accept (written from
    the issue's rules, not from the catalogue's code)."""

    listings: dict[ListingKey, tuple[ChannelIds, Composition, bool]] = field(default_factory=dict)
    kits: dict[str, tuple[Composition, bool]] = field(default_factory=dict)

    def active_kit(self, kit_id: str) -> bool:
        return kit_id in self.kits and not self.kits[kit_id][1]

    def units(self, composition: Composition) -> dict[str, int]:
        units: dict[str, int] = {}
        for c in composition:
            inner = {c.sku: 1} if c.sku else self.units(self.kits[c.kit_id][0])
            for name, n in inner.items():
                units[name] = units.get(name, 0) + n * c.units
        return units

    def valid(self, composition: Composition) -> bool:
        refs = [(c.sku, c.kit_id) for c in composition]
        return (
            0 < len(composition) <= MAX_COMPONENTS
            and len(set(refs)) == len(refs)
            and all(
                0 < c.units <= MAX_UNITS
                and bool(c.sku) != bool(c.kit_id)
                and (c.sku in STOCK if c.sku else self.active_kit(c.kit_id))
                for c in composition
            )
        )

    def reaches(self, composition: Composition, kit_id: str) -> bool:
        return any(
            c.kit_id == kit_id
            or (c.kit_id in self.kits and self.reaches(self.kits[c.kit_id][0], kit_id))
            for c in composition
            if c.kit_id
        )

    def within_bounds(self) -> bool:
        """Every active listing and kit flattens within the bounds."""
        compositions = [comp for _, comp, retired in self.listings.values() if not retired]
        compositions += [comp for comp, retired in self.kits.values() if not retired]
        for composition in compositions:
            units = self.units(composition)
            if len(units) > MAX_COMPONENTS or any(n > MAX_UNITS for n in units.values()):
                return False
        return True

    def expect(self, step: Step) -> type[DomainError] | CatalogueEvent | None:
        """What the catalogue must answer: an error, one event, or None (nothing to do)."""
        ids = step.ids
        key, comp = ids.key, step.composition
        held = self.listings.get(key)
        if step.kind == "create":
            if not self.valid(comp):
                return InvalidArgument
            if held is not None and not held[2]:
                return None if held[:2] == (ids, comp) else ListingIdTaken
            if isinstance(ids, ShopifyIds) and any(
                isinstance(other, ShopifyIds)
                and not retired
                and other.inventory_item_id == ids.inventory_item_id
                for other, _, retired in self.listings.values()
            ):
                return ListingIdTaken
            trial = Model({**self.listings, key: (ids, comp, False)}, self.kits)
            return ListingCreated(ids, comp, NOW) if trial.within_bounds() else InvalidArgument
        if step.kind == "update":
            if held is None:
                return NotFound
            if held[2]:
                return PreconditionFailed
            if not self.valid(comp):
                return InvalidArgument
            if held[1] == comp:
                return None
            trial = Model({**self.listings, key: (held[0], comp, False)}, self.kits)
            if not trial.within_bounds():
                return InvalidArgument
            return ListingCompositionChanged(key, comp, NOW)
        if step.kind == "retire":
            if held is None:
                return NotFound
            return None if held[2] else ListingRetired(key, NOW)
        kit = self.kits.get(step.kit_id)
        if step.kind == "kit":
            if not self.valid(comp) or self.reaches(comp, step.kit_id):
                return InvalidArgument
            if kit == (comp, False):
                return None
            trial = Model(self.listings, {**self.kits, step.kit_id: (comp, False)})
            return KitDefined(step.kit_id, comp, NOW) if trial.within_bounds() else InvalidArgument
        if kit is None:
            return NotFound
        if kit[1]:
            return None
        users = [comp for _, comp, retired in self.listings.values() if not retired]
        users += [comp for comp, retired in self.kits.values() if not retired]
        if any(c.kit_id == step.kit_id for composition in users for c in composition):
            return PreconditionFailed
        return KitRetired(step.kit_id, NOW)

    def follow(self, event: CatalogueEvent) -> None:
        if isinstance(event, ListingCreated):
            self.listings[event.ids.key] = (event.ids, event.composition, False)
        elif isinstance(event, ListingCompositionChanged):
            self.listings[event.key] = (self.listings[event.key][0], event.composition, False)
        elif isinstance(event, ListingRetired):
            ids, comp, _ = self.listings[event.key]
            self.listings[event.key] = (ids, comp, True)
        elif isinstance(event, KitDefined):
            self.kits[event.kit_id] = (event.composition, False)
        else:
            self.kits[event.kit_id] = (self.kits[event.kit_id][0], True)


def outcome_of(
    command: Callable[[Catalogue], list[CatalogueEvent]], catalogue: Catalogue
) -> list[CatalogueEvent] | DomainError:
    try:
        return command(catalogue)
    except DomainError as error:
        return error


# Kits first (so listings can use them), then anything, then kits changing under listings.
kit_steps = script_steps.map(lambda s: Step("kit", s.ids, s.kit_id, s.composition, None))
scripts = st.tuples(
    st.lists(kit_steps, max_size=5),
    st.lists(script_steps, min_size=10, max_size=40),
    st.lists(kit_steps, max_size=3),
).map(lambda parts: [*parts[0], *parts[1], *parts[2]])


@settings(max_examples=200, deadline=None)
@given(scripts)
def test_any_script_keeps_the_catalogue_its_events_and_the_model_in_step(
    script: list[Step],
) -> None:
    """After every command of any script (creations, updates, retirements, kits defined,
    redefined under their listings, retired and defined again; refused commands included):
    the command is accepted or refused as the rules say; a catalogue rebuilt from the events
    so far equals the live one and decides the next command the same way; each active
    listing's stock units are its composition flattened through the current kits; and for
    every stock item, listings_affected is exactly the active listings containing it."""
    live = Catalogue()
    log: list[CatalogueEvent] = []
    model = Model()
    for drawn in script:
        step = drawn.concrete(live)
        command = command_of(step)
        rebuilt = Catalogue.from_events(log)
        assert rebuilt == live
        assert live.version == len(log)
        answer = outcome_of(command, live)
        again = outcome_of(command, rebuilt)
        if isinstance(answer, DomainError):
            assert type(again) is type(answer)
            assert str(again) == str(answer)
        else:
            assert again == answer
        expected = model.expect(step)
        if isinstance(expected, type):
            assert isinstance(answer, expected), (step, answer)
            hypothesis.event(f"{step.kind} refused: {expected.__name__}")
            continue
        assert answer == ([] if expected is None else [expected]), step
        hypothesis.event(f"{step.kind} accepted" if answer else f"{step.kind}: nothing to do")
        if answer and step.kind == "kit" and model.kits.get(step.kit_id, ((), False))[1]:
            hypothesis.event("a retired kit defined again")
        for event in answer:
            live.apply(event)
            model.follow(event)
        log += answer
        check_against(live, model)
    assert Catalogue.from_events(log) == live


def check_against(live: Catalogue, model: Model) -> None:
    assert {k: (li.ids, li.composition, li.retired) for k, li in live.listings.items()} == (
        model.listings
    )
    assert {k: (kit.composition, kit.retired) for k, kit in live.kits.items()} == model.kits
    containing: dict[str, set[ListingKey]] = {}
    for key, (_, composition, retired) in model.listings.items():
        if retired:
            assert live.resolve(key) is None
            with pytest.raises(NotFound):
                live.stock_units(key)
            continue
        # an active listing or kit only ever names active kits
        assert all(model.active_kit(c.kit_id) for c in composition if c.kit_id)
        units = model.units(composition)
        assert live.stock_units(key) == units
        for name in units:
            containing.setdefault(name, set()).add(key)
    for composition, retired in model.kits.values():
        if not retired:
            assert all(model.active_kit(c.kit_id) for c in composition if c.kit_id)
    for name in [*SKUS, "GHOST"]:
        assert live.listings_affected(name) == sorted(containing.get(name, set())), name
