"""The catalogue's pure rules (issue 14): listings per channel, multi-packs, bundles and kits
of kits, their quantities and reservation lines. No database: catalogues are built by random
scripts of commands (refused ones included), as the service would build them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.errors import DomainError, InvalidArgument, NotFound, PreconditionFailed
from pulsestock.inventory_sync.domain.catalogue import (
    MAX_COMPONENTS,
    MAX_UNITS,
    AmazonIds,
    Catalogue,
    CatalogueEvent,
    ChannelIds,
    Component,
    Composition,
    ListingIdTaken,
    ListingKey,
    ShopifyIds,
    TikTokShopIds,
    amazon_order_key,
    listing_quantity,
    reservation_lines,
    shopify_order_key,
    tiktok_shop_order_key,
)
from pulsestock.v1.common_pb2 import Channel

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
STOCK = frozenset({"MUG", "COASTER", "LID", "TEA", "BOX"})
SKUS = sorted(STOCK)
KITS = ["GIFT", "DUO", "HAMPER"]
MARKETPLACES = ["ATVPDKIKX0DER", "A1F83G8C2ARO7P"]
CHANNELS = [Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON]


def ids_for(channel: int, n: int, other: int = 0) -> ChannelIds:
    """Channel ids nothing like our SKUs. `other` varies the secondary id (a TikTok product,
    a Shopify inventory item, an Amazon marketplace) so scripts also collide on those."""
    if channel == Channel.CHANNEL_TIKTOK_SHOP:
        return TikTokShopIds(f"172959296971{other}", f"172959296972{n:04d}", "7068517275539719942")
    if channel == Channel.CHANNEL_SHOPIFY:
        return ShopifyIds(f"4400{n}", f"5500{(n + other) % 6}", "61920886870")
    return AmazonIds(f"SELL {n}/blue", MARKETPLACES[other % 2])


def sku(name: str, units: int = 1) -> Component:
    return Component(units, sku=name)


def kit(name: str, units: int = 1) -> Component:
    return Component(units, kit_id=name)


# --- random catalogues --------------------------------------------------------------------

valid_components = st.one_of(
    st.builds(Component, units=st.integers(1, 3), sku=st.sampled_from(SKUS)),
    st.builds(Component, units=st.integers(1, 3), kit_id=st.sampled_from(KITS)),
)
invalid_components = st.one_of(
    st.builds(Component, units=st.integers(-1, 0), sku=st.sampled_from(SKUS)),
    st.just(sku("GHOST")),  # no stock item
    st.just(Component(1, sku="MUG", kit_id="GIFT")),
    st.just(Component(1)),
)
# Mostly valid compositions (so catalogues grow), sometimes a refused one.
compositions = st.one_of(
    st.lists(valid_components, min_size=1, max_size=4, unique_by=lambda c: (c.sku, c.kit_id)),
    st.lists(valid_components, min_size=1, max_size=4, unique_by=lambda c: (c.sku, c.kit_id)),
    st.lists(valid_components, min_size=1, max_size=4, unique_by=lambda c: (c.sku, c.kit_id)),
    st.lists(st.one_of(valid_components, invalid_components), max_size=3),
).map(tuple)


@dataclass(frozen=True)
class Step:
    kind: str
    channel: int
    n: int
    other: int
    kit_id: str
    composition: Composition


steps = st.builds(
    Step,
    kind=st.sampled_from(
        ["kit", "kit", "create", "create", "create", "create", "update", "retire", "kit_retire"]
    ),
    channel=st.sampled_from(CHANNELS),
    n=st.integers(0, 3),
    other=st.integers(0, 2),
    kit_id=st.sampled_from(KITS),
    composition=compositions,
)


def run(catalogue: Catalogue, step: Step) -> list[CatalogueEvent]:
    ids = ids_for(step.channel, step.n, step.other)
    if step.kind == "create":
        return catalogue.create_listing(ids, step.composition, STOCK, NOW)
    if step.kind == "update":
        return catalogue.update_listing(ids.key, step.composition, STOCK, NOW)
    if step.kind == "retire":
        return catalogue.retire_listing(ids.key, NOW)
    if step.kind == "kit":
        return catalogue.define_kit(step.kit_id, step.composition, STOCK, NOW)
    return catalogue.retire_kit(step.kit_id, NOW)


def build(script: list[Step]) -> tuple[Catalogue, list[CatalogueEvent]]:
    """Live: each command's events applied as the writer would; refusals change nothing."""
    catalogue = Catalogue()
    log: list[CatalogueEvent] = []
    for step in script:
        try:
            events = run(catalogue, step)
        except DomainError:
            continue
        for event in events:
            catalogue.apply(event)
        log += events
    return catalogue, log


kit_steps = st.builds(
    Step,
    kind=st.just("kit"),
    channel=st.just(Channel.CHANNEL_TIKTOK_SHOP),
    n=st.just(0),
    other=st.just(0),
    kit_id=st.sampled_from(KITS),
    composition=compositions,
)
# Kits first (so listings can use them), then anything, then kits changing under listings.
scripts = st.tuples(
    st.lists(kit_steps, max_size=5),
    st.lists(steps, min_size=4, max_size=35),
    st.lists(kit_steps, max_size=3),
).map(lambda parts: [*parts[0], *parts[1], *parts[2]])
stocks = st.dictionaries(st.sampled_from(SKUS), st.integers(-3, 40))


def oracle_units(composition: Composition, catalogue: Catalogue) -> dict[str, int]:
    """Stock units walked independently of the catalogue's indexes."""
    units: dict[str, int] = {}
    for c in composition:
        inner = (
            {c.sku: 1} if c.sku else oracle_units(catalogue.kits[c.kit_id].composition, catalogue)
        )
        for name, n in inner.items():
            units[name] = units.get(name, 0) + n * c.units
    return units


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(scripts, stocks)
def test_each_listing_shows_exactly_what_its_sale_can_fulfil(
    script: list[Step], available: dict[str, int]
) -> None:
    """For any catalogue and stock, on every channel: selling a listing's shown quantity
    never needs more of any stock item than is available, and one more could not be sold
    (the quantity is not understated either)."""
    catalogue, _ = build(script)
    for listing in catalogue.list_listings():
        shown = catalogue.quantity(listing.key, available)
        assert shown >= 0
        if shown > 0:
            for name, units in catalogue.reservation_lines(listing.key, shown):
                assert units <= max(0, available.get(name, 0)), (listing.key, name)
        more = catalogue.reservation_lines(listing.key, shown + 1)
        assert any(units > max(0, available.get(name, 0)) for name, units in more)


@settings(max_examples=300, deadline=None)
@given(scripts, stocks, st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4)), max_size=40))
def test_greedy_reservations_across_overlapping_listings_never_oversell(
    script: list[Step], available: dict[str, int], orders: list[tuple[int, int]]
) -> None:
    """Orders on any channel, one after another, each taken only if the listing shows enough
    (what a channel does) and reserving its lines from what is left: the shown quantity and
    the reservation agree at every step, and no stock item goes below zero, however many
    bundles, multi-packs and kits share it."""
    catalogue, _ = build(script)
    listings = catalogue.list_listings()
    if not listings:
        return
    remaining = {name: max(0, available.get(name, 0)) for name in SKUS}
    taken = dict.fromkeys(SKUS, 0)
    for index, quantity in orders:
        key = listings[index % len(listings)].key
        shown = catalogue.quantity(key, remaining)
        lines = catalogue.reservation_lines(key, quantity)
        assert len({name for name, _ in lines}) == len(lines)  # one line per stock item
        fits = all(units <= remaining[name] for name, units in lines)
        assert fits == (quantity <= shown), (key, quantity, shown, lines)
        if fits:
            for name, units in lines:
                remaining[name] -= units
                taken[name] += units
    for name in SKUS:
        assert remaining[name] >= 0
        assert taken[name] + remaining[name] == max(0, available.get(name, 0))


@settings(max_examples=300, deadline=None)
@given(scripts)
def test_a_catalogue_rebuilt_from_its_events_equals_the_live_one(script: list[Step]) -> None:
    live, log = build(script)
    assert live.version == len(log)
    rebuilt = Catalogue.from_events(log)
    assert rebuilt == live
    # Indexes against an independent walk of the compositions.
    for listing in live.list_listings():
        assert live.stock_units(listing.key) == oracle_units(listing.composition, live)


@settings(max_examples=300, deadline=None)
@given(scripts, stocks, st.sampled_from(SKUS), st.integers(-5, 50))
def test_a_stock_change_reaches_exactly_the_listings_containing_the_item(
    script: list[Step], available: dict[str, int], changed: str, level: int
) -> None:
    """listings_affected(sku) is every active listing containing it, on every channel, and
    a change of that one item's stock moves no other listing's quantity."""
    catalogue, _ = build(script)
    affected = set(catalogue.listings_affected(changed))
    assert affected == {
        listing.key
        for listing in catalogue.list_listings()
        if changed in oracle_units(listing.composition, catalogue)
    }
    after = {**available, changed: level}
    for listing in catalogue.list_listings():
        if listing.key not in affected:
            assert catalogue.quantity(listing.key, after) == catalogue.quantity(
                listing.key, available
            )


@settings(max_examples=200, deadline=None)
@given(scripts, st.sampled_from(CHANNELS), st.lists(st.sampled_from(SKUS), min_size=1, max_size=3))
def test_create_then_retire_leaves_the_listing_unavailable(
    script: list[Step], channel: int, parts: list[str]
) -> None:
    catalogue, _ = build(script)
    fresh: dict[int, ChannelIds] = {  # a listing whose ids no script maps
        Channel.CHANNEL_TIKTOK_SHOP: TikTokShopIds("99", "99", "99"),
        Channel.CHANNEL_SHOPIFY: ShopifyIds("99", "99", "99"),
        Channel.CHANNEL_AMAZON: AmazonIds("NEW-99", MARKETPLACES[0]),
    }
    ids = fresh[channel]
    composition = tuple(sku(name, 2) for name in dict.fromkeys(parts))
    for event in catalogue.create_listing(ids, composition, STOCK, NOW):
        catalogue.apply(event)
    assert catalogue.resolve(ids.key) is not None
    assert catalogue.quantity(ids.key, dict.fromkeys(STOCK, 10)) == 5
    for event in catalogue.retire_listing(ids.key, NOW):
        catalogue.apply(event)
    assert catalogue.resolve(ids.key) is None
    assert ids.key not in {listing.key for listing in catalogue.list_listings()}
    assert all(ids.key not in catalogue.listings_affected(name) for name in SKUS)
    with pytest.raises(NotFound):
        catalogue.quantity(ids.key, dict.fromkeys(STOCK, 10))
    with pytest.raises(NotFound):
        catalogue.reservation_lines(ids.key, 1)
    with pytest.raises(PreconditionFailed):
        catalogue.update_listing(ids.key, composition, STOCK, NOW)
    assert catalogue.retire_listing(ids.key, NOW) == []  # retiring again appends nothing


# --- quantities by example ----------------------------------------------------------------


def test_multi_pack_shows_floor_of_available_over_units() -> None:
    assert listing_quantity({"MUG": 2}, {"MUG": 5}) == 2
    assert listing_quantity({"MUG": 2}, {"MUG": 1}) == 0
    assert listing_quantity({"MUG": 2}, {}) == 0
    assert listing_quantity({"MUG": 2}, {"MUG": -4}) == 0
    assert reservation_lines({"MUG": 2}, 3) == [("MUG", 6)]


def test_bundle_shows_the_minimum_over_its_components() -> None:
    units = {"MUG": 1, "COASTER": 2}
    assert listing_quantity(units, {"MUG": 7, "COASTER": 9}) == 4
    assert listing_quantity(units, {"MUG": 3, "COASTER": 9}) == 3
    assert listing_quantity(units, {"MUG": 3}) == 0
    assert reservation_lines(units, 2) == [("COASTER", 4), ("MUG", 2)]
    with pytest.raises(InvalidArgument):
        reservation_lines(units, 0)


def test_a_kit_naming_an_item_twice_reserves_it_once_summed() -> None:
    catalogue = Catalogue()
    for event in catalogue.define_kit("GIFT", (sku("MUG"), sku("COASTER", 2)), STOCK, NOW):
        catalogue.apply(event)
    ids = ids_for(Channel.CHANNEL_SHOPIFY, 1)
    for event in catalogue.create_listing(ids, (kit("GIFT"), sku("MUG")), STOCK, NOW):
        catalogue.apply(event)
    assert catalogue.stock_units(ids.key) == {"MUG": 2, "COASTER": 2}
    assert catalogue.reservation_lines(ids.key, 3) == [("COASTER", 6), ("MUG", 6)]
    assert catalogue.quantity(ids.key, {"MUG": 5, "COASTER": 100}) == 2


def test_changing_a_kit_moves_every_listing_that_contains_it() -> None:
    catalogue = Catalogue()
    for event in catalogue.define_kit("GIFT", (sku("MUG"),), STOCK, NOW):
        catalogue.apply(event)
    keys = []
    for channel in CHANNELS:
        ids = ids_for(channel, 1)
        keys.append(ids.key)
        for event in catalogue.create_listing(ids, (kit("GIFT", 2),), STOCK, NOW):
            catalogue.apply(event)
    assert catalogue.listings_affected("TEA") == []
    for event in catalogue.define_kit("GIFT", (sku("MUG"), sku("TEA")), STOCK, NOW):
        catalogue.apply(event)
    assert catalogue.listings_affected("TEA") == sorted(keys)
    assert catalogue.quantity(keys[0], {"MUG": 10, "TEA": 3}) == 1


def test_listings_sharing_an_item_each_show_the_whole_pool() -> None:
    """Documented choice: a single mug and a 2-pack each show what the mugs allow, so selling
    both shown quantities at once would need more mugs than there are. The ledger's atomic
    reservation of reservation_lines decides who gets the last units (see the greedy
    property); splitting the pool between listings would show each far less."""
    catalogue = Catalogue()
    single, pack = ids_for(Channel.CHANNEL_TIKTOK_SHOP, 1), ids_for(Channel.CHANNEL_TIKTOK_SHOP, 2)
    for ids, units in ((single, 1), (pack, 2)):
        for event in catalogue.create_listing(ids, (sku("MUG", units),), STOCK, NOW):
            catalogue.apply(event)
    stock = {"MUG": 4}
    assert catalogue.quantity(single.key, stock) == 4
    assert catalogue.quantity(pack.key, stock) == 2


# --- ids and order lines ------------------------------------------------------------------


def test_order_lines_resolve_through_the_ids_they_carry() -> None:
    catalogue = Catalogue()
    made = [ids_for(channel, 3) for channel in CHANNELS]
    for ids in made:
        for event in catalogue.create_listing(ids, (sku("MUG"),), STOCK, NOW):
            catalogue.apply(event)
    tiktok, shopify, amazon = made
    assert isinstance(tiktok, TikTokShopIds)
    assert isinstance(shopify, ShopifyIds)
    assert isinstance(amazon, AmazonIds)
    assert tiktok_shop_order_key(tiktok.sku_id) == tiktok.key
    assert shopify_order_key(int(shopify.variant_id)) == shopify.key
    assert shopify_order_key(f"gid://shopify/ProductVariant/{shopify.variant_id}") == shopify.key
    assert amazon_order_key(amazon.seller_sku, amazon.marketplace_id) == amazon.key
    for key in (tiktok.key, shopify.key, amazon.key):
        assert catalogue.resolve(key) is not None
    # The same seller SKU in another marketplace is another (unknown) listing.
    assert catalogue.resolve(amazon_order_key(amazon.seller_sku, MARKETPLACES[1])) is None
    assert catalogue.resolve(tiktok_shop_order_key("1")) is None


def test_shopify_gids_are_one_listing_with_their_numbers() -> None:
    catalogue = Catalogue()
    gids = ShopifyIds(
        "gid://shopify/ProductVariant/44001",
        "gid://shopify/InventoryItem/55001",
        "gid://shopify/Location/61920886870",
    )
    events = catalogue.create_listing(gids, (sku("MUG"),), STOCK, NOW)
    for event in events:
        catalogue.apply(event)
    created = catalogue.resolve(ListingKey(Channel.CHANNEL_SHOPIFY, "44001"))
    assert created is not None
    assert created.ids == ShopifyIds("44001", "55001", "61920886870")
    assert isinstance(created.ids, ShopifyIds)
    assert created.ids.inventory_item_gid == "gid://shopify/InventoryItem/55001"
    # The numeric spelling of the same listing is the same creation: nothing appended.
    numbers = ShopifyIds("44001", "55001", "61920886870")
    assert catalogue.create_listing(numbers, (sku("MUG"),), STOCK, NOW) == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: tiktok_shop_order_key("p-MUG"), "sku_id"),
        (lambda: shopify_order_key("gid://shopify/InventoryItem/1"), "variant_id"),
        (lambda: shopify_order_key(""), "variant_id"),
        (lambda: amazon_order_key(" MUG", "ATVPDKIKX0DER"), "seller_sku"),
        (lambda: amazon_order_key("MUG", "atvp"), "marketplace_id"),
        (lambda: amazon_order_key("x" * 41, "ATVPDKIKX0DER"), "seller_sku"),
    ],
)
def test_malformed_order_line_ids_are_refused(call: Callable[[], ListingKey], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert [v.field for v in caught.value.violations] == [field]


# --- validation by example ----------------------------------------------------------------


def violations(call: Callable[[], object]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        call()
    return [(v.field, v.description) for v in caught.value.violations]


def fields(call: Callable[[], object]) -> list[str]:
    return [name for name, _ in violations(call)]


def with_listing(channel: int = Channel.CHANNEL_TIKTOK_SHOP) -> tuple[Catalogue, ChannelIds]:
    catalogue = Catalogue()
    ids = ids_for(channel, 1)
    for event in catalogue.create_listing(ids, (sku("MUG"),), STOCK, NOW):
        catalogue.apply(event)
    return catalogue, ids


def test_unknown_stock_item_is_refused() -> None:
    catalogue = Catalogue()
    ids = ids_for(Channel.CHANNEL_AMAZON, 1)
    assert violations(lambda: catalogue.create_listing(ids, (sku("GHOST"),), STOCK, NOW)) == [
        ("composition[0].sku", "unknown stock item")
    ]
    assert fields(lambda: catalogue.create_listing(ids, (sku("bad sku"),), STOCK, NOW)) == [
        "composition[0].sku"
    ]


@pytest.mark.parametrize("units", [0, -1, MAX_UNITS + 1])
def test_units_out_of_range_are_refused(units: int) -> None:
    catalogue = Catalogue()
    ids = ids_for(Channel.CHANNEL_SHOPIFY, 1)
    composition = (sku("MUG"), sku("COASTER", units))
    assert fields(lambda: catalogue.create_listing(ids, composition, STOCK, NOW)) == [
        "composition[1].units"
    ]


def test_empty_and_oversized_compositions_are_refused() -> None:
    catalogue = Catalogue()
    ids = ids_for(Channel.CHANNEL_TIKTOK_SHOP, 1)
    assert fields(lambda: catalogue.create_listing(ids, (), STOCK, NOW)) == ["composition"]
    many = frozenset(f"S{i}" for i in range(MAX_COMPONENTS + 1))
    too_many = tuple(sku(name) for name in sorted(many))
    assert fields(lambda: catalogue.create_listing(ids, too_many, many, NOW)) == ["composition"]
    just_enough = too_many[:MAX_COMPONENTS]
    assert len(catalogue.create_listing(ids, just_enough, many, NOW)) == 1


def test_a_component_names_exactly_one_item_once() -> None:
    catalogue = Catalogue()
    ids = ids_for(Channel.CHANNEL_TIKTOK_SHOP, 1)
    both = (Component(1, sku="MUG", kit_id="GIFT"),)
    neither = (Component(1),)
    twice = (sku("MUG"), sku("MUG", 2))
    assert fields(lambda: catalogue.create_listing(ids, both, STOCK, NOW)) == ["composition[0]"]
    assert fields(lambda: catalogue.create_listing(ids, neither, STOCK, NOW)) == ["composition[0]"]
    assert fields(lambda: catalogue.create_listing(ids, twice, STOCK, NOW)) == ["composition[1]"]
    assert fields(lambda: catalogue.create_listing(ids, (kit("NOPE"),), STOCK, NOW)) == [
        "composition[0].kit_id"
    ]


@pytest.mark.parametrize(
    ("ids", "bad"),
    [
        (TikTokShopIds("p-MUG", "s-MUG", "7068517275539719942"), ["ids.product_id", "ids.sku_id"]),
        (TikTokShopIds("1729", "1730", ""), ["ids.warehouse_id"]),
        (ShopifyIds("gid://shopify/InventoryItem/1", "2", "3"), ["ids.variant_id"]),
        (ShopifyIds("1", "gid://shopify/InventoryItem/MUG", "3"), ["ids.inventory_item_id"]),
        (ShopifyIds("1", "2", "warehouse"), ["ids.location_id"]),
        (AmazonIds("", "ATVPDKIKX0DER"), ["ids.seller_sku"]),
        (AmazonIds("MUG\n", "ATVPDKIKX0DER"), ["ids.seller_sku"]),
        (AmazonIds("MUG", "amazon.com"), ["ids.marketplace_id"]),
    ],
)
def test_malformed_channel_ids_are_refused_with_every_field(
    ids: ChannelIds, bad: list[str]
) -> None:
    """All violations at once, and with a bad composition too (one round trip to fix)."""
    catalogue = Catalogue()
    assert fields(lambda: catalogue.create_listing(ids, (sku("MUG", 0),), STOCK, NOW)) == [
        *bad,
        "composition[0].units",
    ]


def test_a_listing_id_mapped_twice_is_a_failed_precondition() -> None:
    catalogue, ids = with_listing(Channel.CHANNEL_TIKTOK_SHOP)
    assert isinstance(ids, TikTokShopIds)
    other_product = TikTokShopIds("1111", ids.sku_id, ids.warehouse_id)
    with pytest.raises(ListingIdTaken) as caught:
        catalogue.create_listing(other_product, (sku("MUG"),), STOCK, NOW)
    assert caught.value.field == "ids.sku_id"
    assert caught.value.held_by == ids.key
    with pytest.raises(ListingIdTaken):  # same ids, another composition: not a repeat
        catalogue.create_listing(ids, (sku("MUG", 2),), STOCK, NOW)
    assert catalogue.create_listing(ids, (sku("MUG"),), STOCK, NOW) == []  # a repeat


def test_a_shopify_inventory_item_mapped_twice_is_a_failed_precondition() -> None:
    catalogue, ids = with_listing(Channel.CHANNEL_SHOPIFY)
    assert isinstance(ids, ShopifyIds)
    same_item = ShopifyIds("999", f"gid://shopify/InventoryItem/{ids.inventory_item_id}", "1")
    with pytest.raises(ListingIdTaken) as caught:
        catalogue.create_listing(same_item, (sku("TEA"),), STOCK, NOW)
    assert caught.value.field == "ids.inventory_item_id"
    assert isinstance(caught.value, PreconditionFailed)


def test_retired_ids_can_be_mapped_again() -> None:
    catalogue, ids = with_listing(Channel.CHANNEL_AMAZON)
    for event in catalogue.retire_listing(ids.key, NOW):
        catalogue.apply(event)
    for event in catalogue.create_listing(ids, (sku("TEA", 3),), STOCK, NOW):
        catalogue.apply(event)
    assert catalogue.stock_units(ids.key) == {"TEA": 3}
    assert catalogue.listings_affected("MUG") == []


def test_unknown_listing_commands_are_not_found() -> None:
    catalogue = Catalogue()
    key = ids_for(Channel.CHANNEL_AMAZON, 1).key
    with pytest.raises(NotFound):
        catalogue.update_listing(key, (sku("MUG"),), STOCK, NOW)
    with pytest.raises(NotFound):
        catalogue.retire_listing(key, NOW)
    with pytest.raises(NotFound):
        catalogue.retire_kit("GIFT", NOW)


def test_update_changes_the_composition_and_repeats_append_nothing() -> None:
    catalogue, ids = with_listing()
    events = catalogue.update_listing(ids.key, (sku("MUG", 2), sku("LID")), STOCK, NOW)
    assert len(events) == 1
    for event in events:
        catalogue.apply(event)
    assert catalogue.stock_units(ids.key) == {"MUG": 2, "LID": 1}
    assert catalogue.listings_affected("LID") == [ids.key]
    assert catalogue.update_listing(ids.key, (sku("MUG", 2), sku("LID")), STOCK, NOW) == []
    assert fields(lambda: catalogue.update_listing(ids.key, (), STOCK, NOW)) == ["composition"]


def define(catalogue: Catalogue, kit_id: str, *composition: Component) -> None:
    for event in catalogue.define_kit(kit_id, composition, STOCK, NOW):
        catalogue.apply(event)


def test_a_kit_that_contains_itself_is_refused() -> None:
    catalogue = Catalogue()
    # Directly: refused as an unknown kit when new, as a cycle when it exists.
    assert fields(lambda: catalogue.define_kit("GIFT", (kit("GIFT"),), STOCK, NOW)) == [
        "composition[0].kit_id",
        "composition",
    ]
    define(catalogue, "GIFT", sku("MUG"))
    assert violations(lambda: catalogue.define_kit("GIFT", (kit("GIFT"),), STOCK, NOW)) == [
        ("composition", "kit GIFT contains itself: GIFT -> GIFT")
    ]
    # Through others: HAMPER holds DUO holds GIFT; GIFT may not come to hold HAMPER.
    define(catalogue, "DUO", kit("GIFT"), sku("TEA"))
    define(catalogue, "HAMPER", kit("DUO", 2))
    assert violations(
        lambda: catalogue.define_kit("GIFT", (sku("MUG"), kit("HAMPER")), STOCK, NOW)
    ) == [("composition", "kit GIFT contains itself: GIFT -> HAMPER -> DUO -> GIFT")]
    assert catalogue.kits["GIFT"].composition == (sku("MUG"),)


def test_kits_nest_flattened_to_stock_items() -> None:
    catalogue = Catalogue()
    define(catalogue, "GIFT", sku("MUG"), sku("COASTER", 2))
    define(catalogue, "HAMPER", kit("GIFT", 2), sku("TEA"), sku("MUG"))
    ids = ids_for(Channel.CHANNEL_AMAZON, 1)
    for event in catalogue.create_listing(ids, (kit("HAMPER"),), STOCK, NOW):
        catalogue.apply(event)
    assert catalogue.stock_units(ids.key) == {"MUG": 3, "COASTER": 4, "TEA": 1}
    assert catalogue.listings_affected("COASTER") == [ids.key]


def test_a_kit_change_that_would_push_a_listing_past_the_bounds_is_refused() -> None:
    catalogue = Catalogue()
    define(catalogue, "GIFT", sku("MUG", 100))
    ids = ids_for(Channel.CHANNEL_SHOPIFY, 1)
    for event in catalogue.create_listing(ids, (kit("GIFT", 100),), STOCK, NOW):
        catalogue.apply(event)
    with pytest.raises(InvalidArgument, match=r"listing shopify:44001 would take 20000 units"):
        catalogue.define_kit("GIFT", (sku("MUG", 200),), STOCK, NOW)
    assert catalogue.stock_units(ids.key) == {"MUG": 10_000}


def test_a_kit_in_use_cannot_be_retired() -> None:
    catalogue = Catalogue()
    define(catalogue, "GIFT", sku("MUG"))
    define(catalogue, "DUO", kit("GIFT", 2))
    with pytest.raises(PreconditionFailed, match="kit GIFT is still used by kit DUO"):
        catalogue.retire_kit("GIFT", NOW)
    for event in catalogue.retire_kit("DUO", NOW):
        catalogue.apply(event)
    for event in catalogue.retire_kit("GIFT", NOW):
        catalogue.apply(event)
    assert catalogue.list_kits() == []
    ids = ids_for(Channel.CHANNEL_SHOPIFY, 1)
    assert fields(lambda: catalogue.create_listing(ids, (kit("GIFT"),), STOCK, NOW)) == [
        "composition[0].kit_id"
    ]


def test_a_malformed_kit_id_is_refused_with_its_composition() -> None:
    catalogue = Catalogue()
    assert fields(lambda: catalogue.define_kit("gift set", (sku("MUG", 0),), STOCK, NOW)) == [
        "kit_id",
        "composition[0].units",
    ]
