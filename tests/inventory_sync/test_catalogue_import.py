"""Proposing catalogue mappings for a shop's existing listings (issue 14, item 2): exact
matches by seller SKU or barcode, never a guess; what is already mapped; why the rest is not.
Pure: no channel, no database."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.inventory_sync.domain.catalogue import (
    AmazonIds,
    Catalogue,
    ChannelIds,
    Component,
    ShopifyIds,
    TikTokShopIds,
)
from pulsestock.inventory_sync.domain.catalogue_import import (
    ChannelListing,
    ImportProposal,
    MatchReason,
    UnmatchedReason,
    propose_import,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
STOCK = frozenset({"MUG", "COASTER", "LID", "TEA"})
WAREHOUSE = "7068517275539719942"
MARKETPLACE = "ATVPDKIKX0DER"


def tiktok(n: int, seller_sku: str = "", barcode: str = "", title: str = "") -> ChannelListing:
    ids = TikTokShopIds("1729592969710000001", f"17295929697200{n:05d}", WAREHOUSE)
    return ChannelListing(ids, seller_sku, barcode, title)


def shopify(
    n: int, seller_sku: str = "", barcode: str = "", item: int | None = None
) -> ChannelListing:
    ids = ShopifyIds(f"4412000000{n:04d}", f"4623000000{(n if item is None else item):04d}", "1")
    return ChannelListing(ids, seller_sku, barcode, "")


def amazon(seller_sku: str, barcode: str = "", title: str = "") -> ChannelListing:
    return ChannelListing(AmazonIds(seller_sku, MARKETPLACE), seller_sku, barcode, title)


def catalogue_with(*mapped: tuple[ChannelIds, str]) -> Catalogue:
    catalogue = Catalogue()
    for ids, stock_item in mapped:
        for event in catalogue.create_listing(ids, (Component(1, sku=stock_item),), STOCK, NOW):
            catalogue.apply(event)
    return catalogue


def only_unmatched(proposal: ImportProposal) -> tuple[UnmatchedReason, str]:
    assert not proposal.proposed
    assert not proposal.already_mapped
    (unmatched,) = proposal.unmatched
    return unmatched.reason, unmatched.detail


def test_a_listing_whose_seller_sku_is_a_stock_item_is_proposed_as_one_of_it() -> None:
    proposal = propose_import([amazon("MUG")], STOCK, {}, Catalogue())
    (proposed,) = proposal.proposed
    assert proposed.composition == (Component(1, sku="MUG"),)
    assert proposed.reason == MatchReason.SELLER_SKU
    assert proposed.listing.ids == AmazonIds("MUG", MARKETPLACE)
    assert not proposal.unmatched


def test_a_listing_is_matched_by_its_barcode_in_the_sellers_table() -> None:
    listing = tiktok(1, seller_sku="TT-blue-mug-01", barcode="4006381333931")
    proposal = propose_import([listing], STOCK, {"4006381333931": "MUG"}, Catalogue())
    (proposed,) = proposal.proposed
    assert (proposed.stock_item, proposed.reason) == ("MUG", MatchReason.BARCODE)


def test_seller_sku_and_barcode_that_agree_are_a_seller_sku_match() -> None:
    listing = shopify(1, seller_sku="MUG", barcode="4006381333931")
    proposal = propose_import([listing], STOCK, {"4006381333931": "MUG"}, Catalogue())
    assert [(p.stock_item, p.reason) for p in proposal.proposed] == [
        ("MUG", MatchReason.SELLER_SKU)
    ]


def test_seller_sku_and_barcode_that_name_different_stock_items_are_not_guessed() -> None:
    listing = shopify(1, seller_sku="MUG", barcode="4006381333931")
    reason, detail = only_unmatched(
        propose_import([listing], STOCK, {"4006381333931": "LID"}, Catalogue())
    )
    assert reason == UnmatchedReason.CONFLICT
    assert "MUG" in detail
    assert "LID" in detail
    assert "by hand" in detail


def test_multi_packs_and_bundles_are_never_guessed_from_names() -> None:
    listings = [
        amazon("MUG-2PK", title="MUG 2-Pack"),
        amazon("Mug + Coaster set", title="MUG + COASTER"),
        amazon("mug"),  # matching is exact: not our MUG
    ]
    proposal = propose_import(listings, STOCK, {}, Catalogue())
    assert not proposal.proposed
    assert {u.listing.seller_sku for u in proposal.unmatched} == {
        "MUG-2PK",
        "Mug + Coaster set",
        "mug",
    }
    for unmatched in proposal.unmatched:
        assert unmatched.reason == UnmatchedReason.NO_MATCH
        assert repr(unmatched.listing.seller_sku) in unmatched.detail
        assert "multi-pack or bundle is mapped by hand" in unmatched.detail


def test_no_match_says_what_was_tried() -> None:
    table = {"111": "GHOST"}  # the seller's table names an item the ledger does not hold
    proposal = propose_import(
        [tiktok(1), tiktok(2, "X", "222"), tiktok(3, "Y", "111")], STOCK, table, Catalogue()
    )
    details = [u.detail for u in proposal.unmatched]
    assert "the listing has no seller SKU" in details[0]
    assert "it has no barcode" in details[0]
    assert "barcode 222 is not in the barcode table" in details[1]
    assert "barcode 111 names 'GHOST', which is not a stock item" in details[2]


def test_listings_the_catalogue_maps_are_reported_with_their_composition() -> None:
    two_pack = (Component(2, sku="MUG"),)
    catalogue = Catalogue()
    mapped = tiktok(1, seller_sku="MUG")
    for event in catalogue.create_listing(mapped.ids, two_pack, STOCK, NOW):
        catalogue.apply(event)
    proposal = propose_import([mapped], STOCK, {}, catalogue)
    (already,) = proposal.already_mapped
    assert already.composition == two_pack
    assert already.note == ""
    assert not proposal.proposed


def test_a_mapped_listing_the_channel_now_shows_elsewhere_says_so() -> None:
    listing = tiktok(1, seller_sku="MUG")
    assert isinstance(listing.ids, TikTokShopIds)
    moved = TikTokShopIds(listing.ids.product_id, listing.ids.sku_id, "7000000000000000009")
    proposal = propose_import([listing], STOCK, {}, catalogue_with((moved, "MUG")))
    (already,) = proposal.already_mapped
    assert "7000000000000000009" in already.note


def test_a_retired_listing_is_proposed_again() -> None:
    listing = amazon("MUG")
    catalogue = catalogue_with((listing.ids, "TEA"))
    for event in catalogue.retire_listing(listing.ids.key, NOW):
        catalogue.apply(event)
    (proposed,) = propose_import([listing], STOCK, {}, catalogue).proposed
    assert proposed.stock_item == "MUG"


def test_an_inventory_item_mapped_by_another_variant_is_reported_with_the_holder() -> None:
    holder = shopify(1, item=7)
    catalogue = catalogue_with((holder.ids, "LID"))
    reason, detail = only_unmatched(
        propose_import([shopify(2, seller_sku="MUG", item=7)], STOCK, {}, catalogue)
    )
    assert reason == UnmatchedReason.ID_TAKEN
    assert "inventory_item_id" in detail
    assert str(holder.ids.key) in detail


def test_no_channel_id_is_proposed_twice_in_one_import() -> None:
    first, second = shopify(1, "MUG", item=7), shopify(2, "TEA", item=7)
    proposal = propose_import([second, first], STOCK, {}, Catalogue())
    assert [p.listing for p in proposal.proposed] == [first]
    (unmatched,) = proposal.unmatched
    assert unmatched.listing == second
    assert unmatched.reason == UnmatchedReason.ID_TAKEN


def test_a_problem_the_reader_reported_is_passed_on() -> None:
    listing = ChannelListing(
        tiktok(1).ids, "MUG", "", "Mug", problem="stocked in 2 warehouses: map it by hand"
    )
    reason, detail = only_unmatched(propose_import([listing], STOCK, {}, Catalogue()))
    assert (reason, detail) == (UnmatchedReason.CHANNEL, listing.problem)


def test_ids_the_catalogue_would_refuse_are_reported_not_proposed() -> None:
    bad = ChannelListing(TikTokShopIds("p-MUG", "s-MUG", WAREHOUSE), "MUG", "", "")
    reason, detail = only_unmatched(propose_import([bad], STOCK, {}, Catalogue()))
    assert reason == UnmatchedReason.INVALID_IDS
    assert "ids.product_id" in detail
    assert "ids.sku_id" in detail


def test_shopify_gids_are_proposed_in_the_catalogues_spelling() -> None:
    listing = ChannelListing(
        ShopifyIds(
            "gid://shopify/ProductVariant/44120000000001",
            "gid://shopify/InventoryItem/46230000000001",
            "gid://shopify/Location/1",
        ),
        "MUG",
        "",
        "",
    )
    (proposed,) = propose_import([listing], STOCK, {}, Catalogue()).proposed
    assert proposed.listing.ids == ShopifyIds("44120000000001", "46230000000001", "1")


# --- properties --------------------------------------------------------------------------

SELLER_SKUS = [*sorted(STOCK), "MUG-2PK", "mug", ""]
BARCODES = ["", "111", "222", "333"]
listings_strategy = st.lists(
    st.one_of(
        st.builds(
            tiktok,
            st.integers(0, 5),
            st.sampled_from(SELLER_SKUS),
            st.sampled_from(BARCODES),
        ),
        st.builds(
            shopify,
            st.integers(0, 5),
            st.sampled_from(SELLER_SKUS),
            st.sampled_from(BARCODES),
            st.integers(0, 3),
        ),
        st.builds(
            amazon,
            st.sampled_from([s for s in SELLER_SKUS if s]),
            st.sampled_from(BARCODES),
        ),
    ),
    max_size=12,
)
tables = st.dictionaries(
    st.sampled_from(BARCODES[1:]), st.sampled_from([*sorted(STOCK), "GHOST"]), max_size=3
)


@st.composite
def catalogues(draw: st.DrawFn) -> Catalogue:
    """Some of the same listings already mapped (or retired), to anything."""
    catalogue = Catalogue()
    for listing in draw(listings_strategy):
        item = draw(st.sampled_from(sorted(STOCK)))
        try:
            events = catalogue.create_listing(
                listing.ids, (Component(draw(st.integers(1, 3)), sku=item),), STOCK, NOW
            )
        except Exception:
            continue
        for event in events:
            catalogue.apply(event)
        if draw(st.booleans()) and events:
            for event in catalogue.retire_listing(listing.ids.key, NOW):
                catalogue.apply(event)
    return catalogue


def everything(proposal: ImportProposal) -> list[ChannelListing]:
    return [
        *(p.listing for p in proposal.proposed),
        *(m.listing for m in proposal.already_mapped),
        *(u.listing for u in proposal.unmatched),
    ]


@settings(max_examples=300, deadline=None)
@given(listings=listings_strategy, table=tables, catalogue=catalogues(), seed=st.randoms())
def test_every_listing_is_sorted_once_and_proposals_are_exact_and_accepted(
    listings: list[ChannelListing],
    table: dict[str, str],
    catalogue: Catalogue,
    seed: random.Random,
) -> None:
    proposal = propose_import(listings, STOCK, table, catalogue)

    # Each listing lands in exactly one place (the multiset is kept).
    assert sorted(map(repr, everything(proposal))) == sorted(map(repr, listings))

    # Deterministic: the order the channel returned the listings in changes nothing.
    shuffled = list(listings)
    seed.shuffle(shuffled)
    assert propose_import(shuffled, STOCK, table, catalogue) == proposal

    # Already mapped means exactly: the catalogue has an active listing with that key.
    for mapped in proposal.already_mapped:
        active = catalogue.resolve(mapped.listing.ids.key)
        assert active is not None
        assert mapped.composition == active.composition
    for other in [
        *(p.listing for p in proposal.proposed),
        *(u.listing for u in proposal.unmatched),
    ]:
        assert catalogue.resolve(other.ids.key) is None

    # A proposal is one unit of a stock item the listing names exactly, and the catalogue
    # accepts all of them together.
    applied = copy.deepcopy(catalogue)
    for proposed in proposal.proposed:
        (component,) = proposed.composition
        assert component.units == 1
        assert component.sku in STOCK
        if proposed.reason == MatchReason.SELLER_SKU:
            assert proposed.listing.seller_sku == component.sku
        else:
            assert table[proposed.listing.barcode] == component.sku
            assert proposed.listing.seller_sku not in STOCK
        for event in applied.create_listing(proposed.listing.ids, proposed.composition, STOCK, NOW):
            applied.apply(event)

    # Nothing that matches exactly and cleanly is left out for no reason.
    for unmatched in proposal.unmatched:
        if unmatched.reason == UnmatchedReason.NO_MATCH:
            listing = unmatched.listing
            assert listing.seller_sku not in STOCK
            assert table.get(listing.barcode) not in STOCK
