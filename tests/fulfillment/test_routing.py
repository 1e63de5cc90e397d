"""Order routing in the pure domain: FBT first for TikTok orders, the soonest warehouse with
stock otherwise, lines split only where no single warehouse covers them; and, for any
stock and order, routing never takes more than a warehouse has, never uses a warehouse that
does not fulfil the channel, and accounts for every unit ordered."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.routing import (
    OTHER_REGION_HOURS,
    SAME_REGION_HOURS,
    Candidate,
    route,
)

EAST = Candidate("wh-east", "us-east", "own", (), {"MUG": 10, "CUP": 2})
WEST = Candidate("wh-west", "us-west", "own", (), {"MUG": 50, "CUP": 50})
FBT_WEST = Candidate("fbt-west", "us-west", "fbt", ("tiktok_shop",), {"MUG": 20, "CUP": 5})


def test_tiktok_orders_go_to_fbt_first_when_it_covers_them() -> None:
    routed = route({"MUG": 3}, "tiktok_shop", "us-east", [EAST, WEST, FBT_WEST])
    assert routed.main_warehouse == "fbt-west"
    assert "fbt first" in routed.reason
    assert routed.allocations[0].delivery_hours == OTHER_REGION_HOURS
    # FBT does not fulfil Shopify orders, and cannot cover 30 mugs.
    assert route({"MUG": 3}, "shopify", "us-east", [EAST, WEST, FBT_WEST]).main_warehouse == (
        "wh-east"
    )
    assert route({"MUG": 30}, "tiktok_shop", "us-east", [EAST, WEST, FBT_WEST]).main_warehouse == (
        "wh-west"
    )


def test_the_soonest_warehouse_that_covers_the_whole_order() -> None:
    routed = route({"MUG": 5, "CUP": 2}, "shopify", "us-east", [WEST, EAST])
    assert routed.main_warehouse == "wh-east"
    assert {a.delivery_hours for a in routed.allocations} == {SAME_REGION_HOURS}
    # Three cups: east cannot cover the order, west ships all of it (no needless split).
    routed = route({"MUG": 5, "CUP": 3}, "shopify", "us-east", [WEST, EAST])
    assert {a.warehouse_id for a in routed.allocations} == {"wh-west"}
    assert routed.unallocated == {}


def test_a_line_no_warehouse_covers_is_split_and_the_rest_backordered() -> None:
    routed = route({"MUG": 70, "CUP": 1}, "shopify", "us-east", [WEST, EAST])
    mugs = [(a.warehouse_id, a.quantity) for a in routed.allocations if a.sku == "MUG"]
    assert mugs == [("wh-east", 10), ("wh-west", 50)]  # nearest first
    assert routed.unallocated == {"MUG": 10}
    assert [(a.warehouse_id, a.quantity) for a in routed.allocations if a.sku == "CUP"] == [
        ("wh-east", 1)
    ]
    assert "split" in routed.reason
    assert "backordered" in routed.reason


warehouses = st.lists(
    st.builds(
        Candidate,
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["r1", "r2"]),
        st.sampled_from(["own", "3pl", "fbt", "fba"]),
        st.sampled_from([(), ("tiktok_shop",), ("shopify", "amazon")]),
        st.dictionaries(st.sampled_from(["X", "Y", "Z"]), st.integers(0, 30)),
    ),
    max_size=4,
    unique_by=lambda w: w.warehouse_id,
)


@settings(max_examples=300, deadline=None)
@given(
    candidates=warehouses,
    order=st.dictionaries(st.sampled_from(["X", "Y", "Z"]), st.integers(1, 60), min_size=1),
    channel=st.sampled_from(["tiktok_shop", "shopify", "amazon"]),
    region=st.sampled_from(["r1", "r2"]),
)
def test_routing_never_overdraws_and_accounts_for_every_unit(
    candidates: list[Candidate], order: dict[str, int], channel: str, region: str
) -> None:
    routed = route(order, channel, region, candidates)
    by_id = {w.warehouse_id: w for w in candidates}
    taken: dict[tuple[str, str], int] = {}
    for allocation in routed.allocations:
        assert allocation.quantity > 0
        warehouse = by_id[allocation.warehouse_id]
        assert warehouse.serves(channel)
        key = (allocation.warehouse_id, allocation.sku)
        taken[key] = taken.get(key, 0) + allocation.quantity
    for (warehouse_id, sku), units in taken.items():
        assert units <= by_id[warehouse_id].available.get(sku, 0)
    for sku, qty in order.items():
        shipped = sum(a.quantity for a in routed.allocations if a.sku == sku)
        assert shipped + routed.unallocated.get(sku, 0) == qty
        # Something is backordered only when the serving warehouses lack it in total.
        if routed.unallocated.get(sku, 0):
            total = sum(w.available.get(sku, 0) for w in candidates if w.serves(channel))
            assert shipped == total
