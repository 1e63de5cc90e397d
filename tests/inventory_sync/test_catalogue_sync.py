"""The catalogue end to end: listings whose ids look nothing like our SKUs show their
composition's quantity on every channel, follow every component's stock, resolve orders
(unknown ones recorded, then reserved once mapped), and never oversell a shared component."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import grpc
import pytest
from nats.aio.client import Client as NATS
from pulsestock.fakes import fake_channel_env
from pulsestock.fakes.shopify import ShopVariant
from pulsestock.fakes.tiktok_shop import ShopSku
from pulsestock.v1 import catalogue_events_pb2 as cev
from pulsestock.v1 import catalogue_pb2 as cpb
from pulsestock.v1 import catalogue_pb2_grpc, ingest_events_pb2
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import eventually
from tests.helpers.service import RunningService
from tests.inventory_sync.conftest import Fakes
from tests.inventory_sync.test_service import (
    channel_quantities,
    publish_order,
    receive,
    wait_for_stock,
)

TIKTOK, SHOPIFY, AMAZON = (
    Channel.CHANNEL_TIKTOK_SHOP,
    Channel.CHANNEL_SHOPIFY,
    Channel.CHANNEL_AMAZON,
)
WAREHOUSE = "7000000000000000001"  # the TikTok fake's, as fake_channel_env configures it
LOCATION = "1"  # the Shopify fake's gid://shopify/Location/1
MARKETPLACE = "ATVPDKIKX0DER"

CatalogueStub = catalogue_pb2_grpc.CatalogueServiceStub


@pytest.fixture
def service_env(fakes: Fakes) -> dict[str, str]:
    return {
        **fake_channel_env(*(fake.url for fake in fakes)),
        "CHANNEL_SYNC_RECONCILE_SECONDS": "0.5",
        "CHANNEL_SYNC_BASE_BACKOFF_SECONDS": "0.05",
        "CHANNEL_SYNC_MAX_BACKOFF_SECONDS": "0.5",
    }


@pytest.fixture
def catalogue(inventory: RunningService) -> CatalogueStub:
    return CatalogueStub(inventory.channel)


@dataclass(frozen=True)
class Mapped:
    """A listing created in the catalogue: its key and its stock units per unit."""

    key: cev.ListingKey
    ids: cev.ListingIds
    units: dict[str, int]


async def create(catalogue: CatalogueStub, ids: cev.ListingIds, **units: int) -> Mapped:
    await catalogue.CreateListing(
        cpb.CreateListingRequest(
            ids=ids,
            composition=[cev.CatalogueComponent(sku=sku, units=n) for sku, n in units.items()],
        ),
        timeout=10,
    )
    which = ids.WhichOneof("channel_ids")
    if which == "tiktok_shop":
        key = cev.ListingKey(channel=TIKTOK, listing_id=ids.tiktok_shop.sku_id)
    elif which == "shopify":
        key = cev.ListingKey(channel=SHOPIFY, listing_id=ids.shopify.variant_id)
    else:
        key = cev.ListingKey(
            channel=AMAZON,
            listing_id=ids.amazon.seller_sku,
            marketplace_id=ids.amazon.marketplace_id,
        )
    return Mapped(key, ids, dict(units))


def tiktok_ids(product_id: str, sku_id: str) -> cev.ListingIds:
    return cev.ListingIds(
        tiktok_shop=cev.TikTokShopListingIds(
            product_id=product_id, sku_id=sku_id, warehouse_id=WAREHOUSE
        )
    )


def shopify_ids(variant_id: str, inventory_item_id: str) -> cev.ListingIds:
    return cev.ListingIds(
        shopify=cev.ShopifyListingIds(
            variant_id=variant_id, inventory_item_id=inventory_item_id, location_id=LOCATION
        )
    )


def amazon_ids(seller_sku: str) -> cev.ListingIds:
    return cev.ListingIds(
        amazon=cev.AmazonListingIds(seller_sku=seller_sku, marketplace_id=MARKETPLACE)
    )


def shown_by(fakes: Fakes, listing: Mapped) -> int | None:
    """What the channel's fake shows for the listing, read by its own ids."""
    tiktok, shopify, amazon = fakes
    which = listing.ids.WhichOneof("channel_ids")
    if which == "tiktok_shop":
        t = listing.ids.tiktok_shop
        return tiktok.quantity_of_listing(t.product_id, t.sku_id, t.warehouse_id)
    if which == "shopify":
        s = listing.ids.shopify
        return shopify.quantity_of_listing(s.inventory_item_id, s.location_id)
    a = listing.ids.amazon
    return amazon.quantity_of_listing(a.seller_sku, a.marketplace_id)


async def expected_of(stub: Stub, listing: Mapped) -> int:
    """min over its stock items of floor(the channel's projected quantity / units)."""
    quantities = [
        (await channel_quantities(stub, sku)).get(listing.key.channel, 0) // n
        for sku, n in listing.units.items()
    ]
    return min(quantities)


async def channels_follow(stub: Stub, fakes: Fakes, *listings: Mapped, within: float = 20) -> None:
    async def agree() -> bool:
        for listing in listings:
            if shown_by(fakes, listing) != await expected_of(stub, listing):
                return False
        return True

    await eventually(agree, within=within, what="every listing to show its composition")


async def sell(stub: Stub, channel: int, order: str, listing: Mapped, quantity: int) -> bool:
    """Reserve by listing through gRPC; True when reserved, False when refused."""
    try:
        reply: pb.ReserveResponse = await stub.Reserve(
            pb.ReserveRequest(
                channel=channel,  # type: ignore[arg-type]
                channel_order_id=order,
                lines=[OrderLine(listing_id=listing.key.listing_id, quantity=quantity)],
                marketplace_id=listing.key.marketplace_id,
                paid=True,
            ),
            timeout=20,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        return False
    assert reply.reserved
    return True


async def test_listings_show_their_composition_and_follow_every_component(
    stub: Stub, catalogue: CatalogueStub, fakes: Fakes
) -> None:
    tiktok, shopify, amazon = fakes
    await receive(stub, "MUG", 10)
    await receive(stub, "COASTER", 7)
    product = tiktok.add_product("Mug", [ShopSku("TT-MUG"), ShopSku("TT-MUG-2PK")])
    (variant,) = shopify.add_product("Mug and coaster", [ShopVariant("SET-01")])
    amazon.add_listing("Mug 4-Pack/blue", "Four mugs")
    single = await create(catalogue, tiktok_ids(product.product_id, product.sku_ids[0]), MUG=1)
    pair = await create(catalogue, tiktok_ids(product.product_id, product.sku_ids[1]), MUG=2)
    bundle = await create(
        catalogue, shopify_ids(variant.variant_id, variant.inventory_item_id), MUG=1, COASTER=1
    )
    four = await create(catalogue, amazon_ids("Mug 4-Pack/blue"), MUG=4)
    listings = (single, pair, bundle, four)
    await channels_follow(stub, fakes, *listings)
    assert [shown_by(fakes, li) for li in listings] == [10, 5, 7, 2]

    # One component's stock moves: every listing containing it follows, on every channel.
    assert await sell(stub, TIKTOK, "o-1", pair, 2)  # 4 mugs
    await wait_for_stock(stub, "MUG", reserved=4, available=6)
    await channels_follow(stub, fakes, *listings)
    assert [shown_by(fakes, li) for li in listings] == [6, 3, 6, 1]
    # The other component of the bundle only moves the bundle.
    await stub.Adjust(
        pb.AdjustRequest(
            sku="COASTER", warehouse_id="W1", delta=-5, reason=ev.ADJUSTMENT_REASON_COUNT
        ),
        timeout=10,
    )
    await channels_follow(stub, fakes, *listings)
    assert [shown_by(fakes, li) for li in listings] == [6, 3, 2, 1]

    # A mapped channel syncs its listings only; the state says which stock items each draws on.
    state = await stub.GetSyncState(pb.GetSyncStateRequest(channel=TIKTOK, sku="MUG"), timeout=10)
    assert sorted(s.listing for s in state.states) == sorted(
        f"tiktok_shop:{sku_id}" for sku_id in product.sku_ids
    )
    assert all(list(s.skus) == ["MUG"] for s in state.states)
    state = await stub.GetSyncState(pb.GetSyncStateRequest(sku="COASTER"), timeout=10)
    assert [(s.listing, list(s.skus)) for s in state.states] == [
        (f"shopify:{variant.variant_id}", ["COASTER", "MUG"])
    ]

    # A retired listing shows 0 (no sale through it can be resolved any more).
    await catalogue.RetireListing(cpb.RetireListingRequest(key=pair.key), timeout=10)
    await eventually(
        lambda: _shows(fakes, pair, 0), what="the retired listing to show 0", within=20
    )


async def _shows(fakes: Fakes, listing: Mapped, quantity: int) -> bool:
    return shown_by(fakes, listing) == quantity


async def test_channel_orders_resolve_listings_and_unknown_ones_wait_for_their_mapping(
    stub: Stub, catalogue: CatalogueStub, fakes: Fakes, bus: NATS
) -> None:
    tiktok, shopify, _ = fakes
    await receive(stub, "MUG", 20)
    await receive(stub, "COASTER", 20)
    product = tiktok.add_product("Mug", [ShopSku("TT-MUG-2PK")])
    (variant,) = shopify.add_product("Set", [ShopVariant("SET-01")])
    pair = await create(catalogue, tiktok_ids(product.product_id, product.sku_ids[0]), MUG=2)
    bundle = await create(
        catalogue, shopify_ids(variant.variant_id, variant.inventory_item_id), MUG=1, COASTER=1
    )

    await publish_order(
        bus,
        ingest_events_pb2.OrderPlaced(
            channel=SHOPIFY,
            channel_order_id="shop-1",
            lines=[OrderLine(sku="SET-01", listing_id=bundle.key.listing_id, quantity=2)],
        ),
        "shop-1",
    )
    await publish_order(
        bus,
        ingest_events_pb2.OrderPlaced(
            channel=TIKTOK,
            channel_order_id="tt-1",
            lines=[OrderLine(listing_id=pair.key.listing_id, quantity=3)],  # no seller SKU
        ),
        "tt-1",
    )
    await wait_for_stock(stub, "MUG", reserved=8, available=12)
    await wait_for_stock(stub, "COASTER", reserved=2, available=18)

    # A variant nobody mapped: recorded and reported, nothing reserved, nothing guessed (its
    # seller SKU happens to equal a stock item's).
    unknown = "44120000000999999"
    await publish_order(
        bus,
        ingest_events_pb2.OrderPlaced(
            channel=SHOPIFY,
            channel_order_id="shop-2",
            lines=[OrderLine(sku="COASTER", listing_id=unknown, quantity=1)],
        ),
        "shop-2",
    )

    async def reported() -> bool:
        listed = await catalogue.ListUnresolvedOrders(cpb.ListUnresolvedOrdersRequest(), timeout=10)
        return [(o.channel_order_id, [li.listing_id for li in o.lines]) for o in listed.orders] == [
            ("shop-2", [unknown])
        ]

    await eventually(reported, what="the unknown listing's order to be reported")
    await wait_for_stock(stub, "COASTER", reserved=2)

    # Mapped later: the waiting order is reserved, and reported as resolved.
    await create(catalogue, shopify_ids(unknown, "46230000000999999"), COASTER=1)
    await wait_for_stock(stub, "COASTER", reserved=3, available=17)

    async def resolved() -> bool:
        listed = await catalogue.ListUnresolvedOrders(
            cpb.ListUnresolvedOrdersRequest(include_resolved=True), timeout=10
        )
        return [o.HasField("resolved_at") for o in listed.orders] == [True]

    await eventually(resolved, what="the order to be reported resolved")
    open_orders = await catalogue.ListUnresolvedOrders(
        cpb.ListUnresolvedOrdersRequest(), timeout=10
    )
    assert list(open_orders.orders) == []

    # A channel without a catalogue keeps the naming convention: Amazon's seller SKU is ours.
    await publish_order(
        bus,
        ingest_events_pb2.OrderPlaced(
            channel=AMAZON,
            channel_order_id="amz-1",
            marketplace_id=MARKETPLACE,
            lines=[OrderLine(sku="COASTER", listing_id="COASTER", quantity=1)],
        ),
        "amz-1",
    )
    await wait_for_stock(stub, "COASTER", reserved=4)


async def test_reserving_an_unknown_listing_is_refused_and_changes_nothing(
    stub: Stub, catalogue: CatalogueStub, fakes: Fakes
) -> None:
    tiktok = fakes[0]
    await receive(stub, "MUG", 5)
    product = tiktok.add_product("Mug", [ShopSku("TT-MUG")])
    await create(catalogue, tiktok_ids(product.product_id, product.sku_ids[0]), MUG=1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Reserve(
            pb.ReserveRequest(
                channel=TIKTOK,
                channel_order_id="o-x",
                lines=[OrderLine(listing_id="1729999999999999999", quantity=1)],
            ),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "1729999999999999999" in (refused.value.details() or "")
    await wait_for_stock(stub, "MUG", reserved=0, available=5)


async def test_six_hundred_orders_for_bundles_and_multipacks_sharing_one_component(
    stub: Stub, catalogue: CatalogueStub, fakes: Fakes
) -> None:
    """Listings on three channels share the CUP: a single, a 2-pack, a cup-and-lid bundle and
    a 3-pack with a straw race for 100 cups. No cup is sold twice, every order holds all of
    its components or none, and the channels end showing what is left."""
    tiktok, shopify, amazon = fakes
    await receive(stub, "CUP", 100)
    await receive(stub, "LID", 1000)
    await receive(stub, "STRAW", 1000)
    product = tiktok.add_product("Cup", [ShopSku("TT-CUP"), ShopSku("TT-CUP-2")])
    (variant,) = shopify.add_product("Cup with lid", [ShopVariant("CUP-LID")])
    amazon.add_listing("cup 3pk + straw", "Three cups")
    listings = [
        (
            TIKTOK,
            await create(catalogue, tiktok_ids(product.product_id, product.sku_ids[0]), CUP=1),
        ),
        (
            TIKTOK,
            await create(catalogue, tiktok_ids(product.product_id, product.sku_ids[1]), CUP=2),
        ),
        (
            SHOPIFY,
            await create(
                catalogue, shopify_ids(variant.variant_id, variant.inventory_item_id), CUP=1, LID=1
            ),
        ),
        (AMAZON, await create(catalogue, amazon_ids("cup 3pk + straw"), CUP=3, STRAW=1)),
    ]
    rng = random.Random(14)
    picks = [rng.randrange(len(listings)) for _ in range(600)]
    outcomes = await asyncio.gather(
        *(
            sell(stub, listings[pick][0], f"o-{index}", listings[pick][1], 1)
            for index, pick in enumerate(picks)
        )
    )
    sold: dict[str, int] = {"CUP": 0, "LID": 0, "STRAW": 0}
    for pick, reserved in zip(picks, outcomes, strict=True):
        if reserved:
            for sku, n in listings[pick][1].units.items():
                sold[sku] += n
    assert 0 < sold["CUP"] <= 100
    # The ledger holds exactly what the successful orders took, component by component:
    # no order held its cup without its lid or straw, or the reverse.
    await wait_for_stock(stub, "CUP", reserved=sold["CUP"], available=100 - sold["CUP"])
    await wait_for_stock(stub, "LID", reserved=sold["LID"])
    await wait_for_stock(stub, "STRAW", reserved=sold["STRAW"])
    # A refusal was genuine: the orders were taken in some order, so the last refusal of a
    # listing happened with fewer cups left than it needs, and no fewer are left now.
    refused_units = {
        listings[p][1].units["CUP"] for p, ok in zip(picks, outcomes, strict=True) if not ok
    }
    if refused_units:
        assert 100 - sold["CUP"] < max(refused_units)
    await channels_follow(stub, fakes, *(listing for _, listing in listings), within=30)


async def test_import_proposes_exact_matches_reports_the_rest_and_applies(
    stub: Stub, catalogue: CatalogueStub, fakes: Fakes
) -> None:
    tiktok, shopify, amazon = fakes
    for sku in ("MUG", "LAMP", "CAP"):
        await receive(stub, sku, 6)
    product = tiktok.add_product(
        "Mugs",
        [ShopSku("MUG"), ShopSku("MUG-2PK"), ShopSku("", barcode="0012345678905")],
    )
    request = cpb.ImportListingsRequest(channel=TIKTOK, barcodes={"0012345678905": "LAMP"})
    proposal = await catalogue.ImportListings(request, timeout=30)
    proposed = {p.listing.ids.tiktok_shop.sku_id: p for p in proposal.proposed}
    assert set(proposed) == {product.sku_ids[0], product.sku_ids[2]}
    assert proposed[product.sku_ids[0]].matched_by == "seller_sku"
    assert [(c.sku, c.units) for c in proposed[product.sku_ids[0]].composition] == [("MUG", 1)]
    assert proposed[product.sku_ids[2]].matched_by == "barcode"
    assert [(c.sku, c.units) for c in proposed[product.sku_ids[2]].composition] == [("LAMP", 1)]
    (unmatched,) = proposal.unmatched
    assert unmatched.listing.seller_sku == "MUG-2PK"  # a multi-pack is not guessed
    assert "by hand" in unmatched.reason
    listed = await catalogue.ListListings(cpb.ListListingsRequest(), timeout=10)
    assert list(listed.listings) == []  # proposing changes nothing

    applied = await catalogue.ImportListings(
        cpb.ImportListingsRequest(channel=TIKTOK, barcodes={"0012345678905": "LAMP"}, apply=True),
        timeout=30,
    )
    assert [(p.created, p.error) for p in applied.proposed] == [(True, "")] * 2
    listed = await catalogue.ListListings(cpb.ListListingsRequest(channel=TIKTOK), timeout=10)
    assert sorted(li.key.listing_id for li in listed.listings) == sorted(
        [product.sku_ids[0], product.sku_ids[2]]
    )
    again = await catalogue.ImportListings(request, timeout=30)
    assert list(again.proposed) == []
    assert len(again.already_mapped) == 2

    # The imported listings are synced by their own ids.
    async def pushed() -> bool:
        return (
            tiktok.quantity_of_listing(product.product_id, product.sku_ids[0], WAREHOUSE) == 6
            and tiktok.quantity_of_listing(product.product_id, product.sku_ids[2], WAREHOUSE) == 6
        )

    await eventually(pushed, what="the imported listings to show their stock", within=20)

    # Shopify and Amazon read through their own endpoints.
    shopify.add_product("Cap", [ShopVariant("CAP"), ShopVariant("", barcode="4006381333931")])
    amazon.add_listing("LAMP", "A lamp")
    shop = await catalogue.ImportListings(cpb.ImportListingsRequest(channel=SHOPIFY), timeout=30)
    assert [p.listing.seller_sku for p in shop.proposed] == ["CAP"]
    assert [u.listing.barcode for u in shop.unmatched] == ["4006381333931"]
    amz = await catalogue.ImportListings(cpb.ImportListingsRequest(channel=AMAZON), timeout=30)
    assert [p.listing.ids.amazon.seller_sku for p in amz.proposed] == ["LAMP"]


async def test_import_refuses_bad_barcodes_with_field_details(catalogue: CatalogueStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await catalogue.ImportListings(
            cpb.ImportListingsRequest(channel=TIKTOK, barcodes={"12ab": "MUG", "00123456": ""}),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = field_violations(refused.value)
    assert "barcodes['12ab']" in fields
    assert "barcodes['00123456']" in fields
    with pytest.raises(grpc.aio.AioRpcError) as unspecified:
        await catalogue.ImportListings(cpb.ImportListingsRequest(), timeout=10)
    assert unspecified.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unresolved_order_cancelled_before_its_mapping_is_never_reserved(
    stub: Stub, catalogue: CatalogueStub, fakes: Fakes, bus: NATS
) -> None:
    shopify = fakes[1]
    await receive(stub, "SOAP", 10)
    (mapped,) = shopify.add_product("Soap", [ShopVariant("SOAP-1")])
    await create(catalogue, shopify_ids(mapped.variant_id, mapped.inventory_item_id), SOAP=1)
    late = "44120000000777777"  # a variant mapped only later

    def placed(order_id: str) -> ingest_events_pb2.OrderPlaced:
        return ingest_events_pb2.OrderPlaced(
            channel=SHOPIFY,
            channel_order_id=order_id,
            lines=[OrderLine(listing_id=late, quantity=2)],
        )

    await publish_order(bus, placed("keep"), "keep")
    await publish_order(bus, placed("gone"), "gone")
    await publish_order(
        bus,
        ingest_events_pb2.OrderCancelled(channel=SHOPIFY, channel_order_id="gone"),
        "gone",
    )

    async def recorded() -> bool:
        listed = await catalogue.ListUnresolvedOrders(cpb.ListUnresolvedOrdersRequest(), timeout=10)
        return {o.channel_order_id: o.cancelled for o in listed.orders} == {
            "keep": False,
            "gone": True,
        }

    await eventually(recorded, what="both orders recorded, one of them cancelled")
    await create(catalogue, shopify_ids(late, "46230000000777777"), SOAP=1)
    # The open one is reserved once its listing is mapped; the cancelled one never is.
    await wait_for_stock(stub, "SOAP", reserved=2, available=8)
    listed = await catalogue.ListUnresolvedOrders(
        cpb.ListUnresolvedOrdersRequest(include_resolved=True), timeout=10
    )
    states = {o.channel_order_id: (o.cancelled, o.HasField("resolved_at")) for o in listed.orders}
    assert states == {"keep": (False, True), "gone": (True, False)}
