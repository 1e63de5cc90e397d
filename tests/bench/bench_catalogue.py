"""Catalogue benchmark, against inventory-sync running as its own process.

- inventory.catalogue_propagation_p99_ms: the flash sale of bench_inventory's channel
  propagation (Poisson orders at 25/s, the fakes' documented rate limits), but each channel
  sells the hot stock item through three catalogue listings with ids of their own: a single,
  a 2-pack and a bundle with a second item. Per change, from sending Reserve to every listing
  on every channel showing its quantity after that change (or a newer one). The baseline is
  the same sale through the naming convention (one listing per channel), in the same run:
  the ratio is what the catalogue's fan-out costs.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from urllib.parse import unquote

import grpc
from pulsestock.fakes import fake_channel_env
from pulsestock.fakes.base import RecordedRequest
from pulsestock.fakes.shopify import ShopVariant
from pulsestock.fakes.tiktok_shop import ShopSku
from pulsestock.v1 import catalogue_events_pb2 as cev
from pulsestock.v1 import catalogue_pb2 as cpb
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.catalogue_pb2_grpc import CatalogueServiceStub
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.bench.bench_inventory import (
    PROPAGATION_CHANGES,
    PROPAGATION_STOCK,
    ROUNDS,
    Fakes,
    fresh_nats,
    inventory_process,
    percentile,
    poisson_schedule,
    propagation_round_ours,
    until,
    watched_fakes,
)
from tests.bench.report import alternating_rounds, emit
from tests.helpers.infra import Infra, eventually

HOT, SIDE = "CUP", "LID"
SIDE_STOCK = 10_000  # the bundle's other item never runs short: the hot item decides
WAREHOUSE, LOCATION, MARKETPLACE = "7000000000000000001", "1", "ATVPDKIKX0DER"


@dataclass(frozen=True)
class Listing:
    channel: int
    ids: cev.ListingIds
    shown_as: str  # how the fake's write requests name it
    units: dict[str, int]

    def quantity(self, hot_level: int) -> int:
        levels = {HOT: hot_level, SIDE: SIDE_STOCK}
        return min(levels[sku] // n for sku, n in self.units.items())


def shop_catalogue(fakes: Fakes) -> list[Listing]:
    """Per channel: the single, the 2-pack and the bundle, as the shop lists them."""
    tiktok, shopify, amazon = fakes
    compositions = [{HOT: 1}, {HOT: 2}, {HOT: 1, SIDE: 1}]
    product = tiktok.add_product("Cup", [ShopSku(f"TT-{i}") for i in range(3)])
    variants = shopify.add_product("Cup", [ShopVariant(f"SH-{i}") for i in range(3)])
    listings = []
    for index, units in enumerate(compositions):
        sku_id = product.sku_ids[index]
        listings.append(
            Listing(
                Channel.CHANNEL_TIKTOK_SHOP,
                cev.ListingIds(
                    tiktok_shop=cev.TikTokShopListingIds(
                        product_id=product.product_id, sku_id=sku_id, warehouse_id=WAREHOUSE
                    )
                ),
                sku_id,
                units,
            )
        )
        variant = variants[index]
        listings.append(
            Listing(
                Channel.CHANNEL_SHOPIFY,
                cev.ListingIds(
                    shopify=cev.ShopifyListingIds(
                        variant_id=variant.variant_id,
                        inventory_item_id=variant.inventory_item_id,
                        location_id=LOCATION,
                    )
                ),
                f"gid://shopify/InventoryItem/{variant.inventory_item_id}",
                units,
            )
        )
        seller_sku = f"cup pack {index}/amz"
        amazon.add_listing(seller_sku, "Cups")
        listings.append(
            Listing(
                Channel.CHANNEL_AMAZON,
                cev.ListingIds(
                    amazon=cev.AmazonListingIds(seller_sku=seller_sku, marketplace_id=MARKETPLACE)
                ),
                seller_sku,
                units,
            )
        )
    return listings


def _answered(record: RecordedRequest) -> bool:
    if record.status != 200 or not record.answer:
        return False
    answer = json.loads(record.answer)
    return not answer.get("errors") and answer.get("status", "ACCEPTED") == "ACCEPTED"


def confirmed_writes(fakes: Fakes) -> dict[str, list[tuple[float, int]]]:
    """Per listing (as the fakes name it), each quantity a channel accepted and when."""
    shown: dict[str, list[tuple[float, int]]] = {}
    tiktok, shopify, amazon = fakes
    for record in tiktok.writes():
        if _answered(record):
            for item in json.loads(record.body)["skus"]:
                quantity = item["inventory"][0]["quantity"]
                shown.setdefault(item["id"], []).append((record.answered_at, quantity))
    for record in shopify.writes():
        if _answered(record):
            body = json.loads(record.body)
            for item in body["variables"]["input"]["quantities"]:
                shown.setdefault(item["inventoryItemId"], []).append(
                    (record.answered_at, item["quantity"])
                )
    for record in amazon.writes():
        if _answered(record):
            patch = json.loads(record.body)["patches"][0]
            # /listings/2021-08-01/items/{sellerId}/{sku}: the SKU may hold a slash
            seller_sku = unquote(record.path.split("/", 5)[5])
            shown.setdefault(seller_sku, []).append(
                (record.answered_at, patch["value"][0]["quantity"])
            )
    return {listing: sorted(writes) for listing, writes in shown.items()}


def shown_since(writes: list[tuple[float, int]], at: float, target: int) -> float | None:
    """When the channel first showed `target` or less from `at` on: at once if what it
    showed at `at` already was (a 2-pack's quantity moves every other change), else at the
    first such write after."""
    before = [value for t, value in writes if t < at]
    if before and before[-1] <= target:
        return at
    return next((t for t, value in writes if t >= at and value <= target), None)


def listing_latencies(
    sent: list[float], listings: list[Listing], shown: dict[str, list[tuple[float, int]]]
) -> tuple[list[float], dict[int, list[float]]]:
    """Per change: ms until every listing showed its quantity after it (or a lower one)."""
    overall: list[float] = []
    by_channel: dict[int, list[float]] = {}
    for index, at in enumerate(sent):
        level = PROPAGATION_STOCK - index - 1
        worst: dict[int, float] = {}
        for listing in listings:
            when = shown_since(shown.get(listing.shown_as, []), at, listing.quantity(level))
            if when is None:
                raise AssertionError(f"{listing.shown_as} never showed change {index}")
            worst[listing.channel] = max(worst.get(listing.channel, 0.0), (when - at) * 1000)
        for channel, latency in worst.items():
            by_channel.setdefault(channel, []).append(latency)
        overall.append(max(worst.values()))
    return overall, by_channel


async def catalogue_round(infra: Infra, seed: int) -> tuple[list[float], dict[int, list[float]]]:
    async with watched_fakes() as (fakes, _convention_writes):
        listings = shop_catalogue(fakes)
        env = {
            **fake_channel_env(*(fake.url for fake in fakes)),
            "CHANNEL_SYNC_RECONCILE_SECONDS": "3600",
        }
        async with (
            fresh_nats() as nats_url,
            inventory_process(infra, nats_url, env) as (port, _schema),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = InventorySyncServiceStub(channel)
            catalogue = CatalogueServiceStub(channel)
            for sku, quantity in ((HOT, PROPAGATION_STOCK), (SIDE, SIDE_STOCK)):
                await stub.Receive(
                    pb.ReceiveRequest(sku=sku, warehouse_id="W1", quantity=quantity), timeout=30
                )
            for listing in listings:
                await catalogue.CreateListing(
                    cpb.CreateListingRequest(
                        ids=listing.ids,
                        composition=[
                            cev.CatalogueComponent(sku=sku, units=n)
                            for sku, n in listing.units.items()
                        ],
                    ),
                    timeout=30,
                )
            await all_listings_show(fakes, listings, PROPAGATION_STOCK)
            single = listings[0]
            sent: list[float] = []
            start = time.monotonic()
            for index, offset in enumerate(poisson_schedule(seed)):
                await until_monotonic(start + offset)
                sent.append(time.monotonic())
                reply = await stub.Reserve(
                    pb.ReserveRequest(
                        channel=Channel.CHANNEL_TIKTOK_SHOP,
                        channel_order_id=f"c-{seed}-{index}",
                        lines=[OrderLine(listing_id=single.ids.tiktok_shop.sku_id, quantity=1)],
                        paid=True,
                    ),
                    timeout=30,
                )
                if not reply.reserved:
                    raise AssertionError(f"reservation {index} refused with stock left")
            await all_listings_show(fakes, listings, PROPAGATION_STOCK - PROPAGATION_CHANGES)
            return listing_latencies(sent, listings, confirmed_writes(fakes))


async def until_monotonic(moment: float) -> None:
    await until(time.perf_counter() + moment - time.monotonic())


async def all_listings_show(fakes: Fakes, listings: list[Listing], level: int) -> None:
    def shown(listing: Listing) -> int | None:
        ids = listing.ids
        which = ids.WhichOneof("channel_ids")
        if which == "tiktok_shop":
            t = ids.tiktok_shop
            return fakes[0].quantity_of_listing(t.product_id, t.sku_id, t.warehouse_id)
        if which == "shopify":
            s = ids.shopify
            return fakes[1].quantity_of_listing(s.inventory_item_id, s.location_id)
        return fakes[2].quantity_of_listing(ids.amazon.seller_sku, ids.amazon.marketplace_id)

    async def agree() -> bool:
        return all(shown(listing) == listing.quantity(level) for listing in listings)

    await eventually(agree, within=60, what=f"every listing to show the level {level}")


async def bench_catalogue_propagation(infra: Infra) -> None:
    ours: list[float] = []
    ours_by_channel: dict[int, list[float]] = {}
    convention: list[float] = []
    round_ours: list[float] = []
    round_convention: list[float] = []
    for seed in range(ROUNDS):
        overall, by_channel = await catalogue_round(infra, seed)
        ours.extend(overall)
        for channel, latencies in by_channel.items():
            ours_by_channel.setdefault(channel, []).extend(latencies)
        round_ours.append(percentile(overall, 0.99))
        single, _per_channel = await propagation_round_ours(infra, seed)
        convention.extend(single)
        round_convention.append(percentile(single, 0.99))
    names = {
        Channel.CHANNEL_TIKTOK_SHOP: "tiktok_shop",
        Channel.CHANNEL_SHOPIFY: "shopify",
        Channel.CHANNEL_AMAZON: "amazon",
    }
    emit(
        "inventory.catalogue_propagation_p99_ms",
        percentile(ours, 0.99),
        "ms",
        baseline=percentile(convention, 0.99),
        lower_is_better=True,
        baseline_is=(
            "the same flash sale through the naming convention in the same run: one listing"
            " per channel (the SKU itself) instead of three catalogue listings"
        ),
        **alternating_rounds(round_ours, round_convention, lower_is_better=True),
        p50_ms=round(statistics.median(ours), 3),
        baseline_p50_ms=round(statistics.median(convention), 3),
        p99_ms_by_channel={
            names[channel]: round(percentile(latencies, 0.99), 1)
            for channel, latencies in sorted(ours_by_channel.items())
        },
        changes=len(ours),
        listings_per_channel=3,
        measured=(
            "per change of the hot item, from sending Reserve (by the TikTok single's listing"
            " id) to every listing on every channel showing its quantity after that change"
            " (single: level, 2-pack: level // 2, bundle: min(level, other item)) or a newer"
            " one; p99 of all rounds' changes, ratio per round = convention p99 / catalogue p99"
        ),
    )


async def run(infra: Infra) -> None:
    await bench_catalogue_propagation(infra)
