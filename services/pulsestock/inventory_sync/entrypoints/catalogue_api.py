"""The CatalogueService gRPC servicer: maps requests to catalogue commands and queries. The
domain validates ids and compositions (field violations named after the request's fields);
the gRPC kit maps its errors to status codes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import grpc
from pulsestock.clock import timestamp
from pulsestock.errors import FieldViolation, InvalidArgument, PreconditionFailed, Validator
from pulsestock.inventory_sync.adapters.catalogue_store import (
    composition_from_proto,
    composition_to_proto,
    ids_from_proto,
    ids_to_proto,
    key_to_proto,
)
from pulsestock.inventory_sync.adapters.channels.catalogue_readers import CatalogueReader
from pulsestock.inventory_sync.adapters.unresolved_orders import UnresolvedOrders
from pulsestock.inventory_sync.application.catalogue import CatalogueService, CommandResult
from pulsestock.inventory_sync.domain.catalogue import (
    ChannelIds,
    Composition,
    ListingKey,
    amazon_order_key,
    shopify_order_key,
    tiktok_shop_order_key,
)
from pulsestock.inventory_sync.domain.catalogue_import import ChannelListing
from pulsestock.inventory_sync.domain.sku import check_sku
from pulsestock.v1 import catalogue_events_pb2 as cev
from pulsestock.v1 import catalogue_pb2 as pb
from pulsestock.v1 import catalogue_pb2_grpc
from pulsestock.v1.common_pb2 import Channel

CHANNEL_RULE = "must be CHANNEL_TIKTOK_SHOP, CHANNEL_SHOPIFY or CHANNEL_AMAZON"
MAX_KEYS = 1000
MAX_BARCODES = 100_000
_BARCODE = re.compile(r"[0-9]{8,14}")


def _response(result: CommandResult) -> pb.CatalogueCommandResponse:
    return pb.CatalogueCommandResponse(catalogue_version=result.version, changed=result.changed)


def _prefixed(error: InvalidArgument, rename: Mapping[str, str]) -> InvalidArgument:
    """The domain's violations with field names as the request spells them."""
    return InvalidArgument(
        [FieldViolation(rename.get(v.field, v.field), v.description) for v in error.violations]
    )


def _channel_filter(channel: int) -> int | None:
    """CHANNEL_UNSPECIFIED: every channel; an unknown value is refused."""
    if channel not in Channel.values():
        raise InvalidArgument.single("channel", "unknown channel")
    return None if channel == Channel.CHANNEL_UNSPECIFIED else channel


def listing_key(message: cev.ListingKey, field: str = "key") -> ListingKey:
    """A request's listing key in its one spelling (a Shopify GID as its number)."""
    channel = message.channel
    validator = Validator()
    known = validator.check(
        channel in Channel.values() and channel != Channel.CHANNEL_UNSPECIFIED,
        f"{field}.channel",
        CHANNEL_RULE,
    )
    if known and channel != Channel.CHANNEL_AMAZON:
        validator.check(
            not message.marketplace_id, f"{field}.marketplace_id", "only for CHANNEL_AMAZON"
        )
    validator.raise_if_invalid()
    rename = {name: f"{field}.listing_id" for name in ("sku_id", "variant_id", "seller_sku")} | {
        "marketplace_id": f"{field}.marketplace_id"
    }
    try:
        if channel == Channel.CHANNEL_TIKTOK_SHOP:
            return tiktok_shop_order_key(message.listing_id)
        if channel == Channel.CHANNEL_SHOPIFY:
            return shopify_order_key(message.listing_id)
        return amazon_order_key(message.listing_id, message.marketplace_id)
    except InvalidArgument as error:
        raise _prefixed(error, rename) from None


def _channel_ids(message: cev.ListingIds) -> tuple[ChannelIds, dict[str, str]]:
    """The ids, and how the domain's `ids.<field>` names map to the request's oneof path."""
    ids = ids_from_proto(message)
    if ids is None:
        raise InvalidArgument.single("ids", "must set one of tiktok_shop, shopify or amazon")
    which = message.WhichOneof("channel_ids")
    names = {
        "tiktok_shop": ("product_id", "sku_id", "warehouse_id"),
        "shopify": ("variant_id", "inventory_item_id", "location_id"),
        "amazon": ("seller_sku", "marketplace_id"),
    }[str(which)]
    return ids, {f"ids.{name}": f"ids.{which}.{name}" for name in names}


def _components(composition: Iterable[cev.CatalogueComponent]) -> Composition:
    return composition_from_proto(composition)


class CatalogueServicer(catalogue_pb2_grpc.CatalogueServiceServicer):
    def __init__(
        self,
        catalogue: CatalogueService,
        unresolved: UnresolvedOrders,
        readers: Callable[[int], CatalogueReader | None],
    ) -> None:
        self.catalogue = catalogue
        self.unresolved = unresolved
        self.readers = readers  # a fresh reader of a connected channel's catalogue, or None

    async def CreateListing(
        self, request: pb.CreateListingRequest, context: grpc.aio.ServicerContext
    ) -> pb.CatalogueCommandResponse:
        ids, rename = _channel_ids(request.ids)
        try:
            result = await self.catalogue.create_listing(ids, _components(request.composition))
        except InvalidArgument as error:
            raise _prefixed(error, rename) from None
        return _response(result)

    async def UpdateListing(
        self, request: pb.UpdateListingRequest, context: grpc.aio.ServicerContext
    ) -> pb.CatalogueCommandResponse:
        key = listing_key(request.key)
        return _response(await self.catalogue.update_listing(key, _components(request.composition)))

    async def RetireListing(
        self, request: pb.RetireListingRequest, context: grpc.aio.ServicerContext
    ) -> pb.CatalogueCommandResponse:
        return _response(await self.catalogue.retire_listing(listing_key(request.key)))

    async def DefineKit(
        self, request: pb.DefineKitRequest, context: grpc.aio.ServicerContext
    ) -> pb.CatalogueCommandResponse:
        return _response(
            await self.catalogue.define_kit(request.kit_id, _components(request.composition))
        )

    async def RetireKit(
        self, request: pb.RetireKitRequest, context: grpc.aio.ServicerContext
    ) -> pb.CatalogueCommandResponse:
        if not request.kit_id:
            raise InvalidArgument.single("kit_id", "is required")
        return _response(await self.catalogue.retire_kit(request.kit_id))

    async def ListListings(
        self, request: pb.ListListingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListListingsResponse:
        view = await self.catalogue.list_listings(
            _channel_filter(request.channel), request.include_retired
        )
        return pb.ListListingsResponse(
            catalogue_version=view.version,
            listings=[
                pb.CatalogueListing(
                    key=key_to_proto(listing.key),
                    ids=ids_to_proto(listing.ids),
                    composition=composition_to_proto(listing.composition),
                    retired=listing.retired,
                    stock_units=view.stock_units.get(listing.key, {}),
                )
                for listing in view.listings
            ],
        )

    async def ListKits(
        self, request: pb.ListKitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListKitsResponse:
        view = await self.catalogue.list_kits(request.include_retired)
        return pb.ListKitsResponse(
            catalogue_version=view.version,
            kits=[
                pb.CatalogueKit(
                    kit_id=kit.kit_id,
                    composition=composition_to_proto(kit.composition),
                    retired=kit.retired,
                )
                for kit in view.kits
            ],
        )

    async def GetListingQuantities(
        self, request: pb.GetListingQuantitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetListingQuantitiesResponse:
        channel = _channel_filter(request.channel)
        if len(request.keys) > MAX_KEYS:
            raise InvalidArgument.single("keys", f"at most {MAX_KEYS} keys")
        keys = [listing_key(key, f"keys[{i}]") for i, key in enumerate(request.keys)]
        version, quantities = await self.catalogue.quantities(channel, keys)
        return pb.GetListingQuantitiesResponse(
            catalogue_version=version,
            quantities=[
                pb.ListingQuantity(
                    key=key_to_proto(q.key),
                    quantity=q.quantity,
                    components=[
                        pb.ComponentAvailability(
                            sku=sku, units=units, available=q.available.get(sku, 0)
                        )
                        for sku, units in sorted(q.stock_units.items())
                    ],
                )
                for q in quantities
            ],
        )

    async def ListUnresolvedOrders(
        self, request: pb.ListUnresolvedOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUnresolvedOrdersResponse:
        channel = _channel_filter(request.channel) or 0
        if request.limit < 0:
            raise InvalidArgument.single("limit", "must not be negative")
        limit = min(request.limit or MAX_KEYS, MAX_KEYS)
        orders = await self.unresolved.list(channel, limit, request.include_resolved)
        response = pb.ListUnresolvedOrdersResponse()
        for order in orders:
            item = response.orders.add(
                channel=order.channel,
                channel_order_id=order.channel_order_id,
                marketplace_id=order.marketplace_id,
                lines=[pb.UnresolvedLine(sku=x.sku, listing_id=x.listing_id) for x in order.lines],
                first_seen=timestamp(order.first_seen),
                last_seen=timestamp(order.last_seen),
                cancelled=order.cancelled,
            )
            if order.resolved_at is not None:
                item.resolved_at.CopyFrom(timestamp(order.resolved_at))
        return response

    async def ImportListings(
        self, request: pb.ImportListingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImportListingsResponse:
        validator = Validator()
        validator.check(
            request.channel in Channel.values() and request.channel != Channel.CHANNEL_UNSPECIFIED,
            "channel",
            CHANNEL_RULE,
        )
        validator.check(
            len(request.barcodes) <= MAX_BARCODES, "barcodes", f"at most {MAX_BARCODES}"
        )
        for barcode, sku in sorted(request.barcodes.items()):
            validator.check(
                _BARCODE.fullmatch(barcode) is not None,
                f"barcodes[{barcode[:32]!r}]",
                "a barcode is 8-14 digits (GTIN, EAN, UPC)",
            )
            check_sku(validator, sku, f"barcodes[{barcode[:32]!r}]")
        validator.raise_if_invalid()
        reader = self.readers(request.channel)
        if reader is None:
            raise PreconditionFailed(f"{Channel.Name(request.channel)} is not connected")
        try:
            result = await self.catalogue.import_listings(
                reader, dict(request.barcodes), request.apply
            )
        finally:
            await reader.close()
        response = pb.ImportListingsResponse(catalogue_version=result.version)
        for index, proposed in enumerate(result.proposal.proposed):
            item = response.proposed.add(
                listing=_channel_listing(proposed.listing),
                composition=composition_to_proto(proposed.composition),
                matched_by=str(proposed.reason),
            )
            if result.applied:
                item.created = result.applied[index].created
                item.error = result.applied[index].error
        for mapped in result.proposal.already_mapped:
            response.already_mapped.append(_channel_listing(mapped.listing))
        for unmatched in result.proposal.unmatched:
            response.unmatched.add(
                listing=_channel_listing(unmatched.listing),
                reason=f"{unmatched.reason}: {unmatched.detail}",
            )
        return response


def _channel_listing(listing: ChannelListing) -> pb.ChannelListing:
    return pb.ChannelListing(
        ids=ids_to_proto(listing.ids),
        seller_sku=listing.seller_sku,
        barcode=listing.barcode,
        title=listing.title,
    )
