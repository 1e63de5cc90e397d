"""Where a new reservation holds stock (domain/placement.py): the routing rule over the
ledgers and the warehouse sites. Properties: a placement holds its whole line in warehouses
that may ship the order's channel, split only when no single one covers it; without sites
it is the warehouse with the most to spare; a TikTok Shop order goes to FBT whenever FBT can
ship all of it."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from pulsestock.inventory_sync.domain.allocation import AllocationPolicy, channel_quantities
from pulsestock.inventory_sync.domain.ledger import SkuLedger, receive
from pulsestock.inventory_sync.domain.placement import Site, place, reachable
from pulsestock.routing import channel_key
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.inventory_sync_events_pb2 import AllocationPolicyKind

NOW = datetime(2026, 12, 4, tzinfo=UTC)
WAREHOUSES = ("fbt", "east", "west")
SITES = {
    "fbt": Site("west", "fbt", ("tiktok_shop",)),
    "east": Site("east", "own", ()),
    "west": Site("west", "3pl", ("shopify", "tiktok_shop")),
}
CHANNELS = (Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON)
TIKTOK, SHOPIFY, AMAZON = CHANNELS


def stocked(sku: str, units: dict[str, int]) -> SkuLedger:
    ledger = SkuLedger(sku)
    for warehouse, quantity in units.items():
        if quantity:
            for event in receive(ledger, warehouse, quantity, "test", f"{sku}-{warehouse}", NOW):
                ledger.apply(event)
    return ledger


stock = st.dictionaries(st.sampled_from(WAREHOUSES), st.integers(0, 30))


@given(
    st.dictionaries(st.sampled_from(("A", "B")), stock, min_size=1),
    st.dictionaries(st.sampled_from(("A", "B")), st.integers(1, 40), min_size=1),
    st.sampled_from(CHANNELS),
    st.sampled_from(("east", "west", "")),
)
def test_a_placement_holds_its_line_in_warehouses_that_ship_the_channel(
    levels: dict[str, dict[str, int]], wanted: dict[str, int], channel: int, region: str
) -> None:
    ledgers = {sku: stocked(sku, levels.get(sku, {})) for sku in wanted}
    placed = place(channel, region, wanted, ledgers, SITES)
    assert set(placed) == set(wanted)
    for sku, parts in placed.items():
        eligible = {
            w: level.available
            for w, level in ledgers[sku].warehouses.items()
            if not SITES[w].channels or channel_key(channel) in SITES[w].channels
        }
        if parts is None:  # short only when all of them together fall short
            assert sum(eligible.values()) < wanted[sku]
            continue
        assert sum(units for _, units in parts) == wanted[sku]
        assert len({w for w, _ in parts}) == len(parts)
        for warehouse, units in parts:
            assert warehouse in eligible
            assert 0 < units <= eligible[warehouse]
        if any(units >= wanted[sku] for units in eligible.values()):
            assert len(parts) == 1  # split only when no single warehouse covers the line


@given(stock.filter(any), st.integers(1, 60))
def test_without_sites_the_most_to_spare_holds_the_line(
    units: dict[str, int], quantity: int
) -> None:
    ledger = stocked("A", units)
    placed = place(Channel.CHANNEL_AMAZON, "east", {"A": quantity}, {"A": ledger}, {})
    by_spare = [w for _, w in sorted((-q, w) for w, q in units.items() if q > 0)]
    covering = [w for w in by_spare if units[w] >= quantity]
    if covering:
        assert placed["A"] == ((covering[0], quantity),)
    elif sum(units.values()) >= quantity:
        warehouses = [w for w, _ in placed["A"] or ()]
        assert warehouses == by_spare[: len(warehouses)]
    else:
        assert placed["A"] is None


@given(stock, stock, st.integers(1, 10), st.integers(1, 10), st.sampled_from(("east", "west")))
def test_a_tiktok_order_goes_to_fbt_whenever_fbt_ships_all_of_it(
    a_units: dict[str, int], b_units: dict[str, int], a: int, b: int, region: str
) -> None:
    ledgers = {"A": stocked("A", a_units), "B": stocked("B", b_units)}
    placed = place(Channel.CHANNEL_TIKTOK_SHOP, region, {"A": a, "B": b}, ledgers, SITES)
    if a_units.get("fbt", 0) >= a and b_units.get("fbt", 0) >= b:
        assert placed == {"A": (("fbt", a),), "B": (("fbt", b),)}


def test_the_buyers_region_wins_over_more_stock_elsewhere() -> None:
    ledger = stocked("A", {"east": 5, "west": 30})
    placed = place(Channel.CHANNEL_SHOPIFY, "east", {"A": 4}, {"A": ledger}, SITES)
    assert placed == {"A": (("east", 4),)}
    farther = place(Channel.CHANNEL_SHOPIFY, "east", {"A": 6}, {"A": ledger}, SITES)
    assert farther == {"A": (("west", 6),)}
    split = place(Channel.CHANNEL_SHOPIFY, "east", {"A": 33}, {"A": ledger}, SITES)
    assert split == {"A": (("east", 5), ("west", 28))}  # nearest first
    assert place(Channel.CHANNEL_SHOPIFY, "east", {"A": 36}, {"A": ledger}, SITES) == {"A": None}


def test_a_channel_is_shown_only_what_warehouses_fulfilling_it_hold() -> None:
    """An FBA warehouse serves Amazon alone: TikTok Shop and Shopify are shown the own
    warehouse's units, Amazon all of them, under every allocation policy."""
    ledger = stocked("MUG", {"FBA": 30, "W1": 10})
    sites = {"FBA": Site("us", "fba", (channel_key(Channel.CHANNEL_AMAZON),))}
    reach = reachable(ledger, sites)
    assert reach == {TIKTOK: 10, SHOPIFY: 10, AMAZON: 40}
    assert channel_quantities(40, AllocationPolicy(), None, reach) == {
        TIKTOK: 10,
        SHOPIFY: 10,
        AMAZON: 40,
    }
    buffered = AllocationPolicy(buffers={SHOPIFY: 4})
    assert channel_quantities(40, buffered, None, reach)[SHOPIFY] == 6
    shares = AllocationPolicy(
        kind=AllocationPolicyKind.ALLOCATION_POLICY_KIND_FIXED_SHARES,
        shares={TIKTOK: 0.5, SHOPIFY: 0.1, AMAZON: 0.4},
    )
    assert channel_quantities(40, shares, None, reach) == {TIKTOK: 10, SHOPIFY: 4, AMAZON: 16}
    pulse = AllocationPolicy(
        kind=AllocationPolicyKind.ALLOCATION_POLICY_KIND_PULSE_PRIORITY, slow_channel_cap=3
    )
    assert channel_quantities(40, pulse, TIKTOK, reach) == {TIKTOK: 10, SHOPIFY: 3, AMAZON: 3}
    # No site on record: every warehouse fulfils every channel, as before sites existed.
    assert reachable(ledger, {}) == {TIKTOK: 40, SHOPIFY: 40, AMAZON: 40}
