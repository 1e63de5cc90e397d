"""The catalogue (issue 14) through inventory-sync's CatalogueService, over real gRPC,
PostgreSQL and NATS: listings of multi-packs and bundles on stock the ledger received, their
quantities following the ledger, refusals with field details, optimistic concurrency between
replicas, and a restarted service folding the same catalogue from its stream."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Iterable
from datetime import datetime

import grpc
import pytest
from pulsestock.clock import utc_now
from pulsestock.errors import Conflict, PreconditionFailed
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.inventory_sync.adapters.catalogue_store import CATALOGUE_STREAM, CatalogueStore
from pulsestock.inventory_sync.application.catalogue import CatalogueService
from pulsestock.inventory_sync.domain.catalogue import Component, ShopifyIds, TikTokShopIds
from pulsestock.inventory_sync.domain.sku import ledger_stream
from pulsestock.v1 import catalogue_events_pb2 as cev
from pulsestock.v1 import catalogue_pb2 as cpb
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.catalogue_pb2_grpc import CatalogueServiceStub
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import RunningService, running_service, service_store

TIKTOK, SHOPIFY, AMAZON = (
    Channel.CHANNEL_TIKTOK_SHOP,
    Channel.CHANNEL_SHOPIFY,
    Channel.CHANNEL_AMAZON,
)
# Channel ids nothing like our SKUs (CHANNEL_APIS.md shapes).
TT_PRODUCT, TT_SKU, TT_WAREHOUSE = (
    "1729592969712207012",
    "1729592969712272548",
    "7068517275539719942",
)
DE = "A1PA6795UKMFR9"  # Amazon's German marketplace
SHOP_VARIANT, SHOP_ITEM, SHOP_LOCATION = "44012345678901", "46098765432109", "61920886870"


def component(units: int, sku: str = "", kit_id: str = "") -> cev.CatalogueComponent:
    return cev.CatalogueComponent(units=units, sku=sku, kit_id=kit_id)


def tiktok_ids(sku_id: str = TT_SKU) -> cev.ListingIds:
    return cev.ListingIds(
        tiktok_shop=cev.TikTokShopListingIds(
            product_id=TT_PRODUCT, sku_id=sku_id, warehouse_id=TT_WAREHOUSE
        )
    )


def shopify_ids(variant: str = SHOP_VARIANT, item: str = SHOP_ITEM) -> cev.ListingIds:
    return cev.ListingIds(
        shopify=cev.ShopifyListingIds(
            variant_id=variant, inventory_item_id=item, location_id=SHOP_LOCATION
        )
    )


def key(channel: int, listing_id: str, marketplace_id: str = "") -> cev.ListingKey:
    return cev.ListingKey(
        channel=channel,  # type: ignore[arg-type]
        listing_id=listing_id,
        marketplace_id=marketplace_id,
    )


TT_KEY = key(TIKTOK, TT_SKU)
SHOP_KEY = key(SHOPIFY, SHOP_VARIANT)


@pytest.fixture
def stock_stub(inventory: RunningService) -> InventorySyncServiceStub:
    return InventorySyncServiceStub(inventory.channel)


@pytest.fixture
def catalogue(inventory: RunningService) -> CatalogueServiceStub:
    return CatalogueServiceStub(inventory.channel)


async def receive(stub: InventorySyncServiceStub, sku: str, quantity: int) -> None:
    await stub.Receive(pb.ReceiveRequest(sku=sku, warehouse_id="W1", quantity=quantity), timeout=10)


async def create(
    catalogue: CatalogueServiceStub,
    ids: cev.ListingIds,
    *components: cev.CatalogueComponent,
) -> cpb.CatalogueCommandResponse:
    reply: cpb.CatalogueCommandResponse = await catalogue.CreateListing(
        cpb.CreateListingRequest(ids=ids, composition=list(components)), timeout=10
    )
    return reply


async def quantities(
    catalogue: CatalogueServiceStub, channel: int = 0, *keys: cev.ListingKey
) -> dict[tuple[int, str], int]:
    reply = await catalogue.GetListingQuantities(
        cpb.GetListingQuantitiesRequest(channel=channel, keys=list(keys)),  # type: ignore[arg-type]
        timeout=10,
    )
    return {(q.key.channel, q.key.listing_id): q.quantity for q in reply.quantities}


async def wait_for_quantities(
    catalogue: CatalogueServiceStub, expected: dict[tuple[int, str], int]
) -> None:
    """Quantities come from the ledger's read model, which follows the log: wait for them."""
    seen: dict[tuple[int, str], int] = {}

    async def matches() -> bool:
        nonlocal seen
        seen = await quantities(catalogue)
        return seen == expected

    try:
        await eventually(matches, within=10, what=f"listing quantities {expected}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen {seen}") from None


async def listings(
    catalogue: CatalogueServiceStub, channel: int = 0, include_retired: bool = False
) -> cpb.ListListingsResponse:
    reply: cpb.ListListingsResponse = await catalogue.ListListings(
        cpb.ListListingsRequest(channel=channel, include_retired=include_retired),  # type: ignore[arg-type]
        timeout=10,
    )
    return reply


async def test_multipack_and_bundle_follow_the_ledger_through_update_and_retire(
    stock_stub: InventorySyncServiceStub, catalogue: CatalogueServiceStub
) -> None:
    await receive(stock_stub, "MUG", 10)
    await receive(stock_stub, "COASTER", 3)

    # A TikTok Shop 2-pack of mugs and a Shopify "mug + coaster" bundle share the mug.
    created = await create(catalogue, tiktok_ids(), component(2, sku="MUG"))
    assert created.changed
    assert created.catalogue_version == 1
    # The Shopify ids as GIDs: stored as their numbers, one listing whatever the spelling.
    bundle = await create(
        catalogue,
        shopify_ids(
            f"gid://shopify/ProductVariant/{SHOP_VARIANT}",
            f"gid://shopify/InventoryItem/{SHOP_ITEM}",
        ),
        component(1, sku="MUG"),
        component(1, sku="COASTER"),
    )
    assert bundle.changed
    assert bundle.catalogue_version == 2
    again = await create(catalogue, tiktok_ids(), component(2, sku="MUG"))
    assert not again.changed
    assert again.catalogue_version == 2

    every = await listings(catalogue)
    assert [(li.key.channel, li.key.listing_id) for li in every.listings] == [
        (TIKTOK, TT_SKU),
        (SHOPIFY, SHOP_VARIANT),
    ]
    assert every.catalogue_version == 2
    tiktok, shopify = every.listings
    assert tiktok.ids.tiktok_shop.product_id == TT_PRODUCT
    assert dict(tiktok.stock_units) == {"MUG": 2}
    assert shopify.ids.shopify.inventory_item_id == SHOP_ITEM
    assert dict(shopify.stock_units) == {"MUG": 1, "COASTER": 1}
    only_shopify = await listings(catalogue, SHOPIFY)
    assert [li.key.listing_id for li in only_shopify.listings] == [SHOP_VARIANT]

    # floor(10 / 2) for the 2-pack; min(10, 3) for the bundle.
    await wait_for_quantities(catalogue, {(TIKTOK, TT_SKU): 5, (SHOPIFY, SHOP_VARIANT): 3})
    reply = await catalogue.GetListingQuantities(
        cpb.GetListingQuantitiesRequest(keys=[SHOP_KEY]), timeout=10
    )
    (only,) = reply.quantities
    assert [(c.sku, c.units, c.available) for c in only.components] == [
        ("COASTER", 1, 3),
        ("MUG", 1, 10),
    ]

    # Stock moves: more coasters, then an order takes 5 mugs.
    await receive(stock_stub, "COASTER", 20)
    await wait_for_quantities(catalogue, {(TIKTOK, TT_SKU): 5, (SHOPIFY, SHOP_VARIANT): 10})
    reserved = await stock_stub.Reserve(
        pb.ReserveRequest(
            channel=TIKTOK,
            channel_order_id="o-1",
            lines=[OrderLine(sku="MUG", quantity=5)],
        ),
        timeout=10,
    )
    assert reserved.reserved
    await wait_for_quantities(catalogue, {(TIKTOK, TT_SKU): 2, (SHOPIFY, SHOP_VARIANT): 5})

    # The TikTok listing becomes a 3-pack: floor(5 / 3).
    updated = await catalogue.UpdateListing(
        cpb.UpdateListingRequest(key=TT_KEY, composition=[component(3, sku="MUG")]), timeout=10
    )
    assert updated.changed
    assert updated.catalogue_version == 3
    await wait_for_quantities(catalogue, {(TIKTOK, TT_SKU): 1, (SHOPIFY, SHOP_VARIANT): 5})

    # Retired: gone from the listings and the quantities, shown when asked for retired ones.
    retired = await catalogue.RetireListing(cpb.RetireListingRequest(key=SHOP_KEY), timeout=10)
    assert retired.changed
    assert retired.catalogue_version == 4
    assert [li.key.listing_id for li in (await listings(catalogue)).listings] == [TT_SKU]
    with_retired = await listings(catalogue, include_retired=True)
    assert [(li.key.listing_id, li.retired) for li in with_retired.listings] == [
        (TT_SKU, False),
        (SHOP_VARIANT, True),
    ]
    assert await quantities(catalogue) == {(TIKTOK, TT_SKU): 1}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quantities(catalogue, 0, SHOP_KEY)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalogue.UpdateListing(
            cpb.UpdateListingRequest(key=SHOP_KEY, composition=[component(1, sku="MUG")]),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Its ids are free again: a new listing may map them.
    remapped = await create(catalogue, shopify_ids(), component(4, sku="COASTER"))
    assert remapped.changed
    assert remapped.catalogue_version == 5
    await wait_for_quantities(catalogue, {(TIKTOK, TT_SKU): 1, (SHOPIFY, SHOP_VARIANT): 5})


async def test_refusals_carry_the_fields_and_the_rule(
    stock_stub: InventorySyncServiceStub, catalogue: CatalogueServiceStub
) -> None:
    await receive(stock_stub, "MUG", 4)
    # A SKU the ledger has only seen oversold (never received) is no stock item either.
    oversold = await stock_stub.Reserve(
        pb.ReserveRequest(
            channel=AMAZON,
            channel_order_id="o-ghost",
            lines=[OrderLine(sku="GHOST", quantity=1)],
            already_sold=True,
        ),
        timeout=10,
    )
    assert oversold.oversold

    async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        return caught.value

    error = await refused(
        create(
            catalogue,
            tiktok_ids("not-a-number"),
            component(0, sku="MUG"),
            component(1, sku="GHOST"),
            component(1, sku="NEVER-SEEN"),
            component(1, sku="MUG", kit_id="GIFT"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {
        "ids.tiktok_shop.sku_id": "must be the channel's numeric id (1-32 digits)",
        "composition[0].units": "must be 1-10000",
        "composition[1].sku": "unknown stock item",
        "composition[2].sku": "unknown stock item",
        "composition[3]": "names exactly one of sku or kit_id",
    }
    error = await refused(catalogue.CreateListing(cpb.CreateListingRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"ids"}
    error = await refused(create(catalogue, tiktok_ids()))
    assert field_violations(error) == {"composition": "needs at least one component"}
    error = await refused(
        catalogue.UpdateListing(
            cpb.UpdateListingRequest(key=key(0, "x"), composition=[component(1, sku="MUG")]),
            timeout=10,
        )
    )
    assert set(field_violations(error)) == {"key.channel"}
    error = await refused(
        catalogue.RetireListing(cpb.RetireListingRequest(key=key(SHOPIFY, "gid://x")), timeout=10)
    )
    assert set(field_violations(error)) == {"key.listing_id"}
    error = await refused(
        catalogue.RetireListing(cpb.RetireListingRequest(key=key(SHOPIFY, "123")), timeout=10)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    # A listing id mapped twice: the TikTok SKU id, and a Shopify inventory item.
    await create(catalogue, tiktok_ids(), component(2, sku="MUG"))
    error = await refused(create(catalogue, tiktok_ids(), component(1, sku="MUG")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ids.sku_id" in (error.details() or "")
    assert TT_SKU in (error.details() or "")
    await create(catalogue, shopify_ids(), component(1, sku="MUG"))
    error = await refused(create(catalogue, shopify_ids("1"), component(1, sku="MUG")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "inventory_item_id" in (error.details() or "")

    # A kit that would contain itself, through another kit.
    await catalogue.DefineKit(
        cpb.DefineKitRequest(kit_id="GIFT", composition=[component(1, sku="MUG")]), timeout=10
    )
    await catalogue.DefineKit(
        cpb.DefineKitRequest(kit_id="HAMPER", composition=[component(2, kit_id="GIFT")]),
        timeout=10,
    )
    error = await refused(
        catalogue.DefineKit(
            cpb.DefineKitRequest(kit_id="GIFT", composition=[component(1, kit_id="HAMPER")]),
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {
        "composition": "kit GIFT contains itself: GIFT -> HAMPER -> GIFT"
    }
    # A kit in use cannot be retired.
    error = await refused(catalogue.RetireKit(cpb.RetireKitRequest(kit_id="GIFT"), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    # None of the refusals appended anything: 2 listings and 2 kits.
    assert (await listings(catalogue)).catalogue_version == 4
    kits = await catalogue.ListKits(cpb.ListKitsRequest(), timeout=10)
    assert [k.kit_id for k in kits.kits] == ["GIFT", "HAMPER"]


async def test_a_restarted_service_folds_the_same_catalogue_from_its_stream(
    infra: Infra, nats_url: str
) -> None:
    schema = unique_name("inv")
    try:
        async with running_service("inventory-sync", infra.database_url, nats_url, schema) as first:
            stock = InventorySyncServiceStub(first.channel)
            catalogue = CatalogueServiceStub(first.channel)
            await receive(stock, "MUG", 9)
            await receive(stock, "COASTER", 2)
            await catalogue.DefineKit(
                cpb.DefineKitRequest(
                    kit_id="SET", composition=[component(1, sku="MUG"), component(1, sku="COASTER")]
                ),
                timeout=10,
            )
            await create(catalogue, tiktok_ids(), component(3, sku="MUG"))
            await create(catalogue, shopify_ids(), component(2, kit_id="SET"))
            await create(
                catalogue,
                cev.ListingIds(
                    amazon=cev.AmazonListingIds(
                        seller_sku="MUG 3er", marketplace_id="A1PA6795UKMFR9"
                    )
                ),
                component(1, sku="MUG"),
            )
            await catalogue.UpdateListing(
                cpb.UpdateListingRequest(key=TT_KEY, composition=[component(2, sku="MUG")]),
                timeout=10,
            )
            await catalogue.RetireListing(
                cpb.RetireListingRequest(key=key(AMAZON, "MUG 3er", DE)), timeout=10
            )
            expected: dict[tuple[int, str], int] = {(TIKTOK, TT_SKU): 4, (SHOPIFY, SHOP_VARIANT): 1}
            await wait_for_quantities(catalogue, expected)
            before = await listings(catalogue, include_retired=True)
            kits_before = await catalogue.ListKits(cpb.ListKitsRequest(), timeout=10)
        assert before.catalogue_version == 6
        assert len(before.listings) == 3

        async with running_service("inventory-sync", infra.database_url, nats_url, schema) as again:
            catalogue = CatalogueServiceStub(again.channel)
            assert await listings(catalogue, include_retired=True) == before
            assert await catalogue.ListKits(cpb.ListKitsRequest(), timeout=10) == kits_before
            await wait_for_quantities(catalogue, expected)
            # It continues the stream where it was (an append at the version it folded).
            moved = await create(
                catalogue, tiktok_ids("1729592969712200001"), component(1, kit_id="SET")
            )
            assert moved.catalogue_version == 7
            # The mapping rules hold across the restart.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await create(catalogue, tiktok_ids(), component(1, sku="MUG"))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await drop_schema(infra.database_url, schema)


# --- two replicas on one stream (the application layer over a real store) ------------------


_RIVAL_VARIANTS = itertools.count(900)


class RacedStore(CatalogueStore):
    """A catalogue store whose command, after reading the catalogue, loses the race to
    another replica's write `races` times (a real append, between load and append)."""

    def __init__(self, store: EventStore, rival: CatalogueService, races: int) -> None:
        super().__init__(store)
        self.rival = rival
        self.races = races
        self.loads = 0

    async def stock_items(self, skus: Iterable[str]) -> frozenset[str]:
        self.loads += 1
        if self.races > 0:
            self.races -= 1
            variant = str(next(_RIVAL_VARIANTS))
            await self.rival.create_listing(
                ShopifyIds(variant, variant, SHOP_LOCATION), (Component(1, sku="MUG"),)
            )
        return await super().stock_items(skus)


async def _with_mugs(store: EventStore) -> None:
    received = ev.StockReceived(sku="MUG", warehouse_id="W1", quantity=5)
    await store.append(ledger_stream("MUG"), 0, [NewEvent.of(received)])


def _clock() -> datetime:
    return utc_now()


async def test_replicas_meet_at_the_expected_version(infra: Infra) -> None:
    async with service_store(infra.database_url, "inventory-sync") as store:
        await _with_mugs(store)
        one = CatalogueService(CatalogueStore(store), _clock)
        two = CatalogueService(CatalogueStore(store), _clock)
        tiktok = TikTokShopIds(TT_PRODUCT, TT_SKU, TT_WAREHOUSE)
        assert (await one.create_listing(tiktok, (Component(2, sku="MUG"),))).version == 1
        # The other replica's cache is behind; it catches up before deciding, so it sees the
        # mapping and refuses the same id.
        with pytest.raises(PreconditionFailed):
            await two.create_listing(tiktok, (Component(1, sku="MUG"),))
        assert (await two.list_listings(None, False)).version == 1

        # Lost once: decided again on the new state, and appended.
        raced = RacedStore(store, one, races=1)
        three = CatalogueService(raced, _clock)
        shopify = ShopifyIds(SHOP_VARIANT, SHOP_ITEM, SHOP_LOCATION)
        result = await three.create_listing(shopify, (Component(1, sku="MUG"),))
        assert result.changed
        assert result.version == 3
        assert raced.loads == 2
        # Lost twice: ABORTED for the caller to retry; nothing of it was appended.
        raced = RacedStore(store, one, races=2)
        four = CatalogueService(raced, _clock)
        with pytest.raises(Conflict):
            await four.create_listing(ShopifyIds("77", "77", "1"), (Component(1, sku="MUG"),))
        assert raced.loads == 2
        recorded = await store.read_stream(CATALOGUE_STREAM)
        assert [e.type for e in recorded] == ["pulsestock.v1.ListingCreated"] * 5
        assert (await one.list_listings(None, False)).version == 5
        keys = {str(li.key) for li in (await one.list_listings(None, False)).listings}
        assert not any(k.endswith(":77") for k in keys)
