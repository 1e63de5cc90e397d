"""The catalogue in inventory-sync's event store: one stream, its events mapped between the
domain's dataclasses and protobuf, the folded state cached in memory and caught up from the
stream's tail before each use; and the stock items a composition may name (the SKUs the
ledger has received)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.inventory_sync.domain.catalogue import (
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
    ListingKey,
    ListingRetired,
    ShopifyIds,
    TikTokShopIds,
)
from pulsestock.inventory_sync.domain.sku import ledger_stream
from pulsestock.v1 import catalogue_events_pb2 as cev
from pulsestock.v1 import inventory_sync_events_pb2 as ev

# The whole catalogue is one stream (one aggregate: "a listing id mapped twice" is a rule
# across listings). Category `catalogue` as Message DB names streams; the id `@main` is no
# valid SKU, so the ledger's read model, which folds every stream and keys its per-stream
# versions by `sku_of_stream`, can never mistake this stream for a SKU's ledger.
CATALOGUE_STREAM = "catalogue-@main"

# A SKU is a stock item once the ledger has recorded stock for it (received, or counted in by
# an adjustment); a ledger stream holding only a policy or an oversold order is not enough.
STOCK_EVENT_TYPES = [ev.StockReceived.DESCRIPTOR.full_name, ev.StockAdjusted.DESCRIPTOR.full_name]

READ_PAGE = 1000


# --- domain <-> protobuf ------------------------------------------------------------------


def timestamp_of(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def datetime_of(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def ids_to_proto(ids: ChannelIds) -> cev.ListingIds:
    if isinstance(ids, TikTokShopIds):
        return cev.ListingIds(
            tiktok_shop=cev.TikTokShopListingIds(
                product_id=ids.product_id, sku_id=ids.sku_id, warehouse_id=ids.warehouse_id
            )
        )
    if isinstance(ids, ShopifyIds):
        return cev.ListingIds(
            shopify=cev.ShopifyListingIds(
                variant_id=ids.variant_id,
                inventory_item_id=ids.inventory_item_id,
                location_id=ids.location_id,
            )
        )
    return cev.ListingIds(
        amazon=cev.AmazonListingIds(seller_sku=ids.seller_sku, marketplace_id=ids.marketplace_id)
    )


def ids_from_proto(message: cev.ListingIds) -> ChannelIds | None:
    """None when no channel's ids are set."""
    which = message.WhichOneof("channel_ids")
    if which == "tiktok_shop":
        t = message.tiktok_shop
        return TikTokShopIds(t.product_id, t.sku_id, t.warehouse_id)
    if which == "shopify":
        s = message.shopify
        return ShopifyIds(s.variant_id, s.inventory_item_id, s.location_id)
    if which == "amazon":
        return AmazonIds(message.amazon.seller_sku, message.amazon.marketplace_id)
    return None


def ids_to_json(ids: ChannelIds) -> dict[str, str]:
    """The channel ids as plain JSON (the channel sync state keeps what it pushes to)."""
    if isinstance(ids, TikTokShopIds):
        return {"channel": "tiktok_shop", **dataclasses.asdict(ids)}
    if isinstance(ids, ShopifyIds):
        return {"channel": "shopify", **dataclasses.asdict(ids)}
    return {"channel": "amazon", **dataclasses.asdict(ids)}


def ids_from_json(data: dict[str, str]) -> ChannelIds:
    fields = {k: v for k, v in data.items() if k != "channel"}
    kind: dict[str, type[ChannelIds]] = {
        "tiktok_shop": TikTokShopIds,
        "shopify": ShopifyIds,
        "amazon": AmazonIds,
    }
    return kind[data["channel"]](**fields)


def key_to_proto(key: ListingKey) -> cev.ListingKey:
    return cev.ListingKey(
        channel=key.channel,  # type: ignore[arg-type]
        listing_id=key.listing_id,
        marketplace_id=key.marketplace_id,
    )


def key_from_proto(message: cev.ListingKey) -> ListingKey:
    return ListingKey(message.channel, message.listing_id, message.marketplace_id)


def composition_to_proto(composition: Composition) -> list[cev.CatalogueComponent]:
    return [cev.CatalogueComponent(units=c.units, sku=c.sku, kit_id=c.kit_id) for c in composition]


def composition_from_proto(components: Iterable[cev.CatalogueComponent]) -> Composition:
    return tuple(Component(c.units, sku=c.sku, kit_id=c.kit_id) for c in components)


def event_to_proto(
    event: CatalogueEvent,
) -> (
    cev.ListingCreated
    | cev.ListingCompositionChanged
    | cev.ListingRetired
    | cev.KitDefined
    | cev.KitRetired
):
    at = timestamp_of(event.at)
    if isinstance(event, ListingCreated):
        return cev.ListingCreated(
            ids=ids_to_proto(event.ids),
            composition=composition_to_proto(event.composition),
            at=at,
        )
    if isinstance(event, ListingCompositionChanged):
        return cev.ListingCompositionChanged(
            key=key_to_proto(event.key),
            composition=composition_to_proto(event.composition),
            at=at,
        )
    if isinstance(event, ListingRetired):
        return cev.ListingRetired(key=key_to_proto(event.key), at=at)
    if isinstance(event, KitDefined):
        return cev.KitDefined(
            kit_id=event.kit_id, composition=composition_to_proto(event.composition), at=at
        )
    return cev.KitRetired(kit_id=event.kit_id, at=at)


def event_from_proto(message: object) -> CatalogueEvent:
    if isinstance(message, cev.ListingCreated):
        ids = ids_from_proto(message.ids)
        if ids is None:
            raise ValueError("a stored ListingCreated carries no channel ids")
        return ListingCreated(
            ids, composition_from_proto(message.composition), datetime_of(message.at)
        )
    if isinstance(message, cev.ListingCompositionChanged):
        return ListingCompositionChanged(
            key_from_proto(message.key),
            composition_from_proto(message.composition),
            datetime_of(message.at),
        )
    if isinstance(message, cev.ListingRetired):
        return ListingRetired(key_from_proto(message.key), datetime_of(message.at))
    if isinstance(message, cev.KitDefined):
        return KitDefined(
            message.kit_id, composition_from_proto(message.composition), datetime_of(message.at)
        )
    if isinstance(message, cev.KitRetired):
        return KitRetired(message.kit_id, datetime_of(message.at))
    raise ValueError(f"not a catalogue event: {type(message).__name__}")


# --- the store ------------------------------------------------------------------------------


class CatalogueStore:
    """The catalogue stream and the state folded from it. Not safe for concurrent use: the
    application serialises its calls (one lock per process); replicas meet at the append's
    expected version."""

    def __init__(self, store: EventStore, stream_id: str = CATALOGUE_STREAM) -> None:
        self.store = store
        self.stream_id = stream_id
        self._state = Catalogue()

    async def load(self) -> Catalogue:
        """The cached catalogue, caught up with whatever was appended since (by this process or
        another replica). The caller must not change it."""
        while True:
            recorded = await self.store.read_stream(
                self.stream_id, self._state.version + 1, READ_PAGE
            )
            for event in recorded:
                if event.stream_version != self._state.version + 1:
                    raise RuntimeError(
                        f"{self.stream_id}: version {event.stream_version} follows"
                        f" {self._state.version}"
                    )
                self._state.apply(event_from_proto(event.decode()))
            if len(recorded) < READ_PAGE:
                return self._state

    async def append(self, expected_version: int, events: Sequence[CatalogueEvent]) -> int:
        """Append a command's events at `expected_version` (WrongExpectedVersion, a Conflict,
        when another writer got there first); the cache folds them once they are stored.
        Returns the stream's new version."""
        version = await self.store.append(
            self.stream_id,
            expected_version,
            [NewEvent.of(event_to_proto(event)) for event in events],
        )
        if self._state.version == expected_version:
            for event in events:
                self._state.apply(event)
        return version

    async def stock_items(self, skus: Iterable[str]) -> frozenset[str]:
        """Which of `skus` the ledger holds stock records for (a SKU never received is no
        stock item). One indexed probe per SKU into its ledger stream."""
        wanted = sorted(set(skus))
        if not wanted:
            return frozenset()
        rows = await self.store.pool.fetch(
            "SELECT s.sku FROM unnest($1::text[], $2::text[]) AS s(sku, stream_id)"
            " WHERE EXISTS (SELECT 1 FROM events e"
            "   WHERE e.stream_id = s.stream_id AND e.type = ANY($3::text[]))",
            wanted,
            [ledger_stream(sku) for sku in wanted],
            STOCK_EVENT_TYPES,
        )
        return frozenset(row["sku"] for row in rows)

    async def available(self, skus: Iterable[str]) -> dict[str, int]:
        """Available units per SKU over all warehouses, from the ledger's read model (each
        warehouse's on hand - reserved - safety hold, at least 0, as GetStock sums them)."""
        wanted = sorted(set(skus))
        if not wanted:
            return {}
        rows = await self.store.pool.fetch(
            "SELECT sku, sum(greatest(0, on_hand - reserved - safety_hold))::bigint AS available"
            " FROM stock_levels WHERE sku = ANY($1::text[]) GROUP BY sku",
            wanted,
        )
        return {row["sku"]: int(row["available"]) for row in rows}
