"""Propose catalogue mappings for the listings a shop already has on its channels.

Pure: the listings come from the channel readers, the stock items from the ledger, the
barcode table from the seller. Matching is exact and never guessed:

- a listing whose seller SKU is a stock item's SKU is proposed as one unit of that item;
- else a listing whose barcode is in the seller's barcode table is proposed as one unit of the
  stock item the table names;
- a listing whose seller SKU and barcode name different stock items, or that matches nothing,
  stays unmatched with the reason. Titles are never read: a multi-pack or a bundle ("Mug
  2-Pack", "Mug + Coaster") has no stock item of its own SKU, so it stays unmatched, to be
  mapped by hand with its composition.

Listings the catalogue already maps are reported as such, and every proposal is one that
`Catalogue.create_listing` accepts, also together with the others (no channel id proposed
twice). The output does not depend on the order of the listings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from pulsestock.errors import InvalidArgument, PreconditionFailed, Validator
from pulsestock.inventory_sync.domain.catalogue import (
    Catalogue,
    ChannelIds,
    Component,
    Composition,
    ListingIdTaken,
    ListingKey,
    ShopifyIds,
    checked_ids,
)

BY_HAND = "a multi-pack or bundle is mapped by hand with its composition"


@dataclass(frozen=True)
class ChannelListing:
    """One listing as its channel shows it (what the channel readers return). `problem` says
    why it cannot be mapped as read (e.g. a TikTok SKU stocked in several warehouses, none of
    them the configured one): the import reports it instead of proposing a mapping."""

    ids: ChannelIds
    seller_sku: str
    barcode: str
    title: str
    problem: str = ""


class MatchReason(StrEnum):
    SELLER_SKU = "seller_sku"  # the listing's seller SKU is the stock item's SKU
    BARCODE = "barcode"  # the listing's barcode is the stock item's in the seller's table


class UnmatchedReason(StrEnum):
    NO_MATCH = "no_match"  # neither the seller SKU nor the barcode names a stock item
    CONFLICT = "conflict"  # the seller SKU and the barcode name different stock items
    ID_TAKEN = "id_taken"  # a channel id is mapped by another listing (or proposed twice)
    INVALID_IDS = "invalid_ids"  # the channel ids are not ones the catalogue accepts
    CHANNEL = "channel"  # the reader could not tell which ids to use (see the detail)


@dataclass(frozen=True)
class ProposedListing:
    listing: ChannelListing
    composition: Composition  # one unit of one stock item
    reason: MatchReason

    @property
    def stock_item(self) -> str:
        return self.composition[0].sku


@dataclass(frozen=True)
class MappedListing:
    """A listing the catalogue already maps (active). `note` says how the catalogue's ids
    differ from what the channel shows now, if they do (e.g. another warehouse)."""

    listing: ChannelListing
    composition: Composition
    note: str = ""


@dataclass(frozen=True)
class UnmatchedListing:
    listing: ChannelListing
    reason: UnmatchedReason
    detail: str


@dataclass(frozen=True)
class ImportProposal:
    proposed: tuple[ProposedListing, ...]
    already_mapped: tuple[MappedListing, ...]
    unmatched: tuple[UnmatchedListing, ...]


# create_listing wants an instant for the event it would return; nothing is kept.
_DRY_RUN = datetime(2000, 1, 1, tzinfo=UTC)


def _order(listing: ChannelListing) -> tuple[ListingKey, str, str, str, str, str]:
    return (
        listing.ids.key,
        repr(listing.ids),
        listing.seller_sku,
        listing.barcode,
        listing.title,
        listing.problem,
    )


def propose_import(
    listings: Iterable[ChannelListing],
    stock_items: Set[str],
    barcodes: Mapping[str, str],
    catalogue: Catalogue,
) -> ImportProposal:
    """Sort each listing into proposed, already mapped or unmatched. `barcodes`: the
    seller's table of barcode -> stock item SKU."""
    proposed: list[ProposedListing] = []
    mapped: list[MappedListing] = []
    unmatched: list[UnmatchedListing] = []
    claimed: set[ListingKey] = set()  # keys proposed in this import
    claimed_items: dict[str, ListingKey] = {}  # Shopify inventory items proposed

    for read in sorted(listings, key=_order):
        validator = Validator()
        ids = checked_ids(validator, read.ids)
        listing = replace(read, ids=ids) if not validator.violations else read

        def unmatch(
            reason: UnmatchedReason, detail: str, listing: ChannelListing = listing
        ) -> None:
            unmatched.append(UnmatchedListing(listing, reason, detail))

        if validator.violations:
            unmatch(
                UnmatchedReason.INVALID_IDS,
                "; ".join(f"{v.field}: {v.description}" for v in validator.violations),
            )
            continue
        existing = catalogue.resolve(ids.key)
        if existing is not None:
            note = "" if existing.ids == ids else f"the catalogue maps it as {existing.ids}"
            mapped.append(MappedListing(listing, existing.composition, note))
            continue
        if listing.problem:
            unmatch(UnmatchedReason.CHANNEL, listing.problem)
            continue

        match = _match(listing, stock_items, barcodes)
        if isinstance(match, UnmatchedListing):
            unmatched.append(match)
            continue
        stock_item, reason = match
        composition = (Component(units=1, sku=stock_item),)

        taken = ids.key if ids.key in claimed else None
        if taken is None and isinstance(ids, ShopifyIds):
            taken = claimed_items.get(ids.inventory_item_id)
        if taken is not None:
            unmatch(UnmatchedReason.ID_TAKEN, f"listing {taken} in this import has the same ids")
            continue
        try:
            catalogue.create_listing(ids, composition, stock_items, _DRY_RUN)
        except ListingIdTaken as error:
            unmatch(UnmatchedReason.ID_TAKEN, str(error))
            continue
        except InvalidArgument as error:
            unmatch(UnmatchedReason.INVALID_IDS, str(error))
            continue
        except PreconditionFailed as error:
            unmatch(UnmatchedReason.ID_TAKEN, str(error))
            continue
        claimed.add(ids.key)
        if isinstance(ids, ShopifyIds):
            claimed_items[ids.inventory_item_id] = ids.key
        proposed.append(ProposedListing(listing, composition, reason))

    return ImportProposal(tuple(proposed), tuple(mapped), tuple(unmatched))


def _match(
    listing: ChannelListing, stock_items: Set[str], barcodes: Mapping[str, str]
) -> tuple[str, MatchReason] | UnmatchedListing:
    """The stock item a listing is exactly, or why it is none."""
    by_sku = listing.seller_sku if listing.seller_sku in stock_items else None
    named = barcodes.get(listing.barcode) if listing.barcode else None
    by_barcode = named if named in stock_items else None
    if by_sku is not None and by_barcode is not None and by_sku != by_barcode:
        return UnmatchedListing(
            listing,
            UnmatchedReason.CONFLICT,
            f"seller SKU {by_sku!r} is stock item {by_sku}, but barcode {listing.barcode} is"
            f" stock item {by_barcode}: map it by hand",
        )
    if by_sku is not None:
        return by_sku, MatchReason.SELLER_SKU
    if by_barcode is not None:
        return by_barcode, MatchReason.BARCODE
    why = [
        f"no stock item has SKU {listing.seller_sku!r}"
        if listing.seller_sku
        else "the listing has no seller SKU"
    ]
    if not listing.barcode:
        why.append("it has no barcode")
    elif named is None:
        why.append(f"barcode {listing.barcode} is not in the barcode table")
    else:
        why.append(f"barcode {listing.barcode} names {named!r}, which is not a stock item")
    return UnmatchedListing(listing, UnmatchedReason.NO_MATCH, f"{'; '.join(why)} ({BY_HAND})")
