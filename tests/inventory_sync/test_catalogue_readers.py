"""Each catalogue reader against its channel's fake over real HTTP (issue 14, item 2): a shop
whose ids look nothing like our SKUs, read in several pages, with the channel throttling
mid-way (the reader waits it out), auth failures surfaced, and the ids read are the ones the
channel's stock endpoint accepts."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from pulsestock.config import Env
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.fakes.base import TokenBucket
from pulsestock.fakes.shopify import ShopVariant
from pulsestock.fakes.tiktok_shop import ShopSku
from pulsestock.inventory_sync.adapters.channels.base import ChannelError
from pulsestock.inventory_sync.adapters.channels.catalogue_readers import (
    AmazonCatalogueReader,
    ShopifyCatalogueReader,
    TikTokShopCatalogueReader,
    readers,
)
from pulsestock.inventory_sync.adapters.channels.config import ChannelConfigs
from pulsestock.inventory_sync.domain.catalogue import AmazonIds, ShopifyIds, TikTokShopIds
from pulsestock.v1.common_pb2 import Channel
from yarl import URL

Fakes = tuple[FakeTikTokShop, FakeShopify, FakeAmazon]
OTHER_WAREHOUSES = ("7000000000000000002", "7000000000000000003")


def configs(fakes: Fakes, **overrides: str) -> ChannelConfigs:
    env = fake_channel_env(*(fake.url for fake in fakes))
    env.update(overrides)
    return ChannelConfigs.from_env(Env(env))


# --- TikTok Shop -----------------------------------------------------------------------------


async def test_tiktok_reads_every_sku_with_its_barcode_through_pages_and_throttling(
    fakes: Fakes,
) -> None:
    tiktok = fakes[0]
    config = configs(fakes).tiktok_shop
    assert config is not None
    added = [
        tiktok.add_product(
            f"Ceramic mug, colour {n}",
            [ShopSku(f"MUG-{n}-S", barcode=f"40063813{n:05d}"), ShopSku(f"MUG-{n}-L")],
        )
        for n in range(12)
    ]
    everywhere = tiktok.add_product(
        "Tea", [ShopSku("TEA", warehouse_ids=(*OTHER_WAREHOUSES, config.warehouse_id))]
    )
    elsewhere = tiktok.add_product("Lid", [ShopSku("LID", warehouse_ids=OTHER_WAREHOUSES)])
    tiktok.add_product("Gone", ["GONE"], status="DELETED")
    # The shop's real limit is lower than the documented one: the reader is throttled.
    tiktok.limit = TokenBucket(rate=20, burst=6)
    reader = TikTokShopCatalogueReader(config, page_size=5)
    try:
        listings = await reader.read()
    finally:
        await reader.close()

    searches = [r for r in tiktok.requests if r.path.endswith("/products/search")]
    assert len([r for r in searches if r.status == 200]) == 3  # 14 products, 5 a page
    assert any(r.status == 429 for r in tiktok.requests)
    assert all(r.status in (200, 429) for r in tiktok.requests)

    by_sku = {listing.seller_sku: listing for listing in listings}
    assert len(listings) == 12 * 2 + 2  # the deleted product is left out
    first = by_sku["MUG-0-S"]
    assert first.ids == TikTokShopIds(added[0].product_id, added[0].sku_ids[0], tiktok.warehouse_id)
    assert len(first.ids.product_id) == 19
    assert (first.barcode, first.title, first.problem) == (
        "4006381300000",
        "Ceramic mug, colour 0",
        "",
    )
    assert by_sku["MUG-0-L"].barcode == ""
    # Several warehouses: the configured one when the SKU is stocked there, else reported.
    assert by_sku["TEA"].ids == TikTokShopIds(
        everywhere.product_id, everywhere.sku_ids[0], config.warehouse_id
    )
    assert by_sku["TEA"].problem == ""
    assert by_sku["LID"].ids.key.listing_id == elsewhere.sku_ids[0]
    assert "7000000000000000002, 7000000000000000003" in by_sku["LID"].problem
    assert listings == sorted(listings, key=lambda listing: listing.ids.key)


async def test_tiktok_catalogue_skus_take_stock_by_the_ids_read(fakes: Fakes) -> None:
    tiktok = fakes[0]
    config = configs(fakes).tiktok_shop
    assert config is not None
    added = tiktok.add_product("Mug", [ShopSku("MUG-A", warehouse_ids=OTHER_WAREHOUSES)])
    reader = TikTokShopCatalogueReader(config)
    try:
        (listing,) = await reader.read()
        ids = listing.ids
        assert isinstance(ids, TikTokShopIds)
        path = f"/product/202309/products/{ids.product_id}/inventory/update"
        for warehouse, quantity in ((OTHER_WAREHOUSES[1], 7), (config.warehouse_id, 9)):
            data = await reader._call(
                "POST",
                path,
                {},
                {
                    "skus": [
                        {
                            "id": ids.sku_id,
                            "inventory": [{"warehouse_id": warehouse, "quantity": quantity}],
                        }
                    ]
                },
            )
            errors = data["errors"]
            assert bool(errors) == (warehouse == config.warehouse_id)  # not stocked there
        stock = await reader._call(
            "POST", "/product/202309/inventory/search", {}, {"sku_ids": [ids.sku_id]}
        )
    finally:
        await reader.close()
    assert tiktok.quantity_of_listing(added.product_id, ids.sku_id, OTHER_WAREHOUSES[1]) == 7
    assert tiktok.quantity_of_listing(added.product_id, ids.sku_id, OTHER_WAREHOUSES[0]) == 0
    assert tiktok.quantity_of_listing(added.product_id, ids.sku_id, config.warehouse_id) is None
    (product,) = stock["inventory"]
    assert product["product_id"] == added.product_id
    assert product["skus"][0]["total_available_quantity"] == 7


async def test_tiktok_refuses_a_reader_with_the_wrong_secret(fakes: Fakes) -> None:
    fakes[0].add_product("Mug", ["MUG"])
    config = configs(fakes, TIKTOK_SHOP_APP_SECRET="not-the-secret").tiktok_shop
    assert config is not None
    reader = TikTokShopCatalogueReader(config)
    try:
        with pytest.raises(ChannelError, match="signature mismatch"):
            await reader.read()
    finally:
        await reader.close()
    assert len(fakes[0].requests) == 1  # refused credentials are not retried


# --- Shopify ---------------------------------------------------------------------------------


async def test_shopify_reads_every_variant_through_pages_and_throttling(fakes: Fakes) -> None:
    shopify = fakes[1]
    added = [
        shopify.add_product(
            f"Mug {n}",
            [
                ShopVariant("MUG" if n == 0 else f"mug-{n}-blue", f"0012345{n:05d}", "Blue"),
                ShopVariant(""),
            ],
        )
        for n in range(12)
    ]
    # A small, slow store bucket (50 points restoring 20/s; pages of 10 cost 32 points): the
    # reader's own pacing (the documented 100/s) runs ahead of it.
    shopify.bucket = TokenBucket(rate=20, burst=50)
    config = configs(fakes).shopify
    assert config is not None
    reader = ShopifyCatalogueReader(config, page_size=10)
    try:
        listings = await reader.read()
    finally:
        await reader.close()

    pages = [r for r in shopify.requests if b"productVariants" in r.body]
    throttled = [r for r in pages if b"THROTTLED" in r.answer]
    assert throttled  # the store throttled mid-way...
    assert len(pages) - len(throttled) == 3  # ...and every one of the 24 variants was read
    assert len(listings) == 24
    first = next(listing for listing in listings if listing.seller_sku == "MUG")
    assert first.ids == ShopifyIds(added[0][0].variant_id, added[0][0].inventory_item_id, "1")
    assert (first.barcode, first.title) == ("001234500000", "Mug 0 - Blue")
    unnamed = [listing for listing in listings if listing.seller_sku == ""]
    assert len(unnamed) == 12
    assert all(listing.barcode == "" for listing in unnamed)
    assert listings == sorted(listings, key=lambda listing: listing.ids.key)


async def test_shopify_variants_take_stock_at_their_inventory_item_and_location(
    fakes: Fakes,
) -> None:
    shopify = fakes[1]
    (added,) = shopify.add_product(
        "Mug", [ShopVariant("MUG-BLUE", quantities=(("1", 3), ("2", 0)))]
    )
    config = configs(fakes).shopify
    assert config is not None
    reader = ShopifyCatalogueReader(config)
    try:
        (listing,) = await reader.read()
    finally:
        await reader.close()
    ids = listing.ids
    assert isinstance(ids, ShopifyIds)
    mutation = """mutation M($input: InventorySetQuantitiesInput!) @idempotent(key: "%s") {
      inventorySetQuantities(input: $input) { userErrors { code } } }"""
    async with aiohttp.ClientSession() as session:
        answers = []
        for key, location in (("k1", ids.location_gid), ("k2", "gid://shopify/Location/9")):
            body = {
                "query": mutation % key,
                "variables": {
                    "input": {
                        "name": "available",
                        "reason": "correction",
                        "quantities": [
                            {
                                "inventoryItemId": ids.inventory_item_gid,
                                "locationId": location,
                                "quantity": 11,
                                "changeFromQuantity": None,
                            }
                        ],
                    }
                },
            }
            async with session.post(
                f"{config.base_url}/admin/api/2026-07/graphql.json",
                json=body,
                headers={"X-Shopify-Access-Token": config.access_token},
            ) as response:
                answers.append(await response.json())
    assert answers[0]["data"]["inventorySetQuantities"]["userErrors"] == []
    assert answers[1]["data"]["inventorySetQuantities"]["userErrors"][0]["code"] == (
        "ITEM_NOT_STOCKED_AT_LOCATION"
    )
    assert shopify.quantity_of_listing(added.inventory_item_id, "1") == 11
    assert shopify.quantity_of_listing(added.inventory_item_id, "gid://shopify/Location/2") == 0
    assert shopify.quantity_of_listing(added.inventory_item_id, "9") is None


async def test_shopify_refuses_a_reader_with_the_wrong_token(fakes: Fakes) -> None:
    config = configs(fakes, SHOPIFY_ACCESS_TOKEN="shpat_wrong").shopify
    assert config is not None
    reader = ShopifyCatalogueReader(config)
    try:
        with pytest.raises(ChannelError, match="401") as caught:
            await reader.read()
    finally:
        await reader.close()
    assert not caught.value.retryable
    assert len(fakes[1].requests) == 1


# --- Amazon ----------------------------------------------------------------------------------


def at(minutes: int) -> str:
    moment = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_amazon_reads_every_listing_through_pages_and_throttling(fakes: Fakes) -> None:
    amazon = fakes[2]
    for n in range(45):
        amazon.add_listing(
            f"Mug {n}/blue" if n else "MUG",
            f"Blue mug {n}",
            barcode="4006381333931" if n == 0 else "",
            created=at(n),
        )
    amazon.add_listing("MUG", "Tasse bleue", marketplace_id="A13V1IB3VIYZZH")  # another market
    amazon.search_limit = TokenBucket(rate=4, burst=1)  # the first page empties the bucket
    config = configs(fakes).amazon
    assert config is not None
    reader = AmazonCatalogueReader(config)
    try:
        listings = await reader.read()
    finally:
        await reader.close()

    searches = [r for r in amazon.requests if r.path == "/listings/2021-08-01/items/A1FAKESELLER"]
    assert len([r for r in searches if r.status == 200]) == 3  # 45 listings, 20 a page
    assert any(r.status == 429 for r in searches)
    assert len(listings) == 45
    first = next(listing for listing in listings if listing.seller_sku == "MUG")
    assert first.ids == AmazonIds("MUG", "ATVPDKIKX0DER")
    assert (first.barcode, first.title) == ("4006381333931", "Blue mug 0")
    assert {listing.seller_sku for listing in listings} >= {"Mug 1/blue", "Mug 44/blue"}


async def test_amazon_walks_past_the_1000_listings_one_search_can_page_through(
    fakes: Fakes,
) -> None:
    amazon = fakes[2]
    for n in range(1030):
        amazon.add_listing(f"SKU-{n:04d}", f"Item {n}", created=at(n // 7))  # 7 a minute
    amazon.search_limit = TokenBucket(rate=1000, burst=1000)
    config = configs(fakes).amazon
    assert config is not None
    reader = AmazonCatalogueReader(dataclasses.replace(config, rate_per_second=500, burst=500))
    try:
        listings = await reader.read()
    finally:
        await reader.close()
    assert sorted(listing.seller_sku for listing in listings) == [
        f"SKU-{n:04d}" for n in range(1030)
    ]
    windows = [
        r.query.get("createdAfter")
        for r in amazon.requests
        if r.path.endswith("/A1FAKESELLER") and "pageToken" not in r.query
    ]
    assert windows[0] is None
    assert len(windows) == 2  # one more search, from the last creation date seen


async def test_amazon_listings_take_stock_by_seller_sku_and_marketplace(fakes: Fakes) -> None:
    amazon = fakes[2]
    amazon.add_listing("Mug 2-Pack/blue", "Two blue mugs")
    amazon.add_listing("Mug 2-Pack/blue", "Deux tasses", marketplace_id="A13V1IB3VIYZZH")
    config = configs(fakes).amazon
    assert config is not None
    reader = AmazonCatalogueReader(config)
    try:
        (listing,) = await reader.read()
        token = await reader.client._access_token()
        url = f"{config.base_url}/listings/2021-08-01/items/{config.seller_id}/Mug%202-Pack%2Fblue"
        body = {
            "productType": "PRODUCT",
            "patches": [
                {
                    "op": "merge",
                    "path": "/attributes/fulfillment_availability",
                    "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 4}],
                }
            ],
        }
        async with reader.client.session.patch(
            URL(url, encoded=True),
            params={"marketplaceIds": "A13V1IB3VIYZZH"},
            data=json.dumps(body),
            headers={"x-amz-access-token": token},
        ) as response:
            assert (await response.json())["status"] == "ACCEPTED"
    finally:
        await reader.close()
    assert listing.ids == AmazonIds("Mug 2-Pack/blue", "ATVPDKIKX0DER")
    assert amazon.quantity_of_listing("Mug 2-Pack/blue", "A13V1IB3VIYZZH") == 4
    assert amazon.quantity_of_listing("Mug 2-Pack/blue", "ATVPDKIKX0DER") is None
    assert amazon.quantity_of("Mug 2-Pack/blue") is None  # not the naming convention's table


async def test_amazon_refuses_a_reader_with_the_wrong_credentials(fakes: Fakes) -> None:
    config = configs(fakes, AMAZON_CLIENT_SECRET="wrong").amazon
    assert config is not None
    reader = AmazonCatalogueReader(config)
    try:
        with pytest.raises(ChannelError, match="invalid_grant"):
            await reader.read()
    finally:
        await reader.close()
    assert [r.path for r in fakes[2].requests] == ["/auth/o2/token"]


async def test_one_reader_per_connected_channel(fakes: Fakes) -> None:
    opened = readers(configs(fakes))
    try:
        assert sorted(opened) == sorted(
            [Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON]
        )
        for channel, reader in opened.items():
            assert reader.channel == channel
            assert await reader.read() == []
    finally:
        for reader in opened.values():
            await reader.close()
