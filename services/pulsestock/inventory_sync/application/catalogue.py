"""Catalogue use cases: run a command against the current catalogue and append its events
with optimistic concurrency; answer listings and their quantities. Apart from the ledger's
writer on purpose: the catalogue changes rarely and never sits on the reservation path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from datetime import datetime

from pulsestock.clock import Clock
from pulsestock.errors import DomainError, Unavailable
from pulsestock.eventstore import WrongExpectedVersion
from pulsestock.inventory_sync.adapters.catalogue_store import CatalogueStore
from pulsestock.inventory_sync.adapters.channels.base import ChannelError
from pulsestock.inventory_sync.adapters.channels.catalogue_readers import CatalogueReader
from pulsestock.inventory_sync.domain.catalogue import (
    Catalogue,
    CatalogueEvent,
    ChannelIds,
    Composition,
    Kit,
    Listing,
    ListingKey,
    listing_quantity,
)
from pulsestock.inventory_sync.domain.catalogue_import import ImportProposal, propose_import

Decide = Callable[[Catalogue, Container[str], datetime], list[CatalogueEvent]]

# A command that lost the race to another replica is decided again once on the new state;
# losing twice is reported as ABORTED (a Conflict) for the caller to retry.
ATTEMPTS = 2


@dataclass(frozen=True)
class CommandResult:
    version: int
    changed: bool


@dataclass(frozen=True)
class ListingQuantity:
    key: ListingKey
    quantity: int
    stock_units: dict[str, int]
    available: dict[str, int]


@dataclass(frozen=True)
class ListingsView:
    version: int
    listings: list[Listing]
    stock_units: dict[ListingKey, dict[str, int]]  # of the active ones, through any kits


@dataclass(frozen=True)
class Applied:
    """What applying one proposal did: created now, or why not (empty: it already was)."""

    created: bool
    error: str = ""


@dataclass(frozen=True)
class ImportResult:
    proposal: ImportProposal
    applied: list[Applied]  # per proposal, when applied; empty otherwise
    version: int


@dataclass(frozen=True)
class KitsView:
    version: int
    kits: list[Kit]


class CatalogueService:
    def __init__(self, store: CatalogueStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._lock = asyncio.Lock()  # the cached state is shared by every call

    async def _execute(self, decide: Decide, skus: Iterable[str]) -> CommandResult:
        named = set(skus)
        async with self._lock:
            for attempt in range(1, ATTEMPTS + 1):
                catalogue = await self.store.load()
                stock_items = await self.store.stock_items(named)
                events = decide(catalogue, stock_items, self.clock())
                if not events:
                    return CommandResult(catalogue.version, changed=False)
                try:
                    version = await self.store.append(catalogue.version, events)
                except WrongExpectedVersion:
                    if attempt == ATTEMPTS:
                        raise
                    continue
                return CommandResult(version, changed=True)
        raise AssertionError("unreachable")

    async def create_listing(self, ids: ChannelIds, composition: Composition) -> CommandResult:
        return await self._execute(
            lambda c, stock, now: c.create_listing(ids, composition, stock, now),
            _skus_of(composition),
        )

    async def update_listing(self, key: ListingKey, composition: Composition) -> CommandResult:
        return await self._execute(
            lambda c, stock, now: c.update_listing(key, composition, stock, now),
            _skus_of(composition),
        )

    async def retire_listing(self, key: ListingKey) -> CommandResult:
        return await self._execute(lambda c, _, now: c.retire_listing(key, now), ())

    async def define_kit(self, kit_id: str, composition: Composition) -> CommandResult:
        return await self._execute(
            lambda c, stock, now: c.define_kit(kit_id, composition, stock, now),
            _skus_of(composition),
        )

    async def retire_kit(self, kit_id: str) -> CommandResult:
        return await self._execute(lambda c, _, now: c.retire_kit(kit_id, now), ())

    async def import_listings(
        self, reader: CatalogueReader, barcodes: dict[str, str], apply: bool
    ) -> ImportResult:
        """Read the shop's listings, propose mappings (propose_import), and with `apply`
        create each proposal as create_listing would; one refused (say, mapped meanwhile) is
        reported beside the others, not fatal to them."""
        try:
            listings = await reader.read()
        except ChannelError as error:
            raise Unavailable(f"the channel's catalogue could not be read: {error}") from error
        candidates = {listing.seller_sku for listing in listings} | set(barcodes.values())
        async with self._lock:
            catalogue = await self.store.load()
            stock_items = await self.store.stock_items(candidates)
            proposal = propose_import(listings, stock_items, barcodes, catalogue)
            version = catalogue.version
        applied: list[Applied] = []
        if apply:
            for proposed in proposal.proposed:
                try:
                    result = await self.create_listing(proposed.listing.ids, proposed.composition)
                except DomainError as error:
                    applied.append(Applied(False, str(error)))
                    continue
                applied.append(Applied(result.changed))
                version = max(version, result.version)
        return ImportResult(proposal, applied, version)

    async def list_listings(self, channel: int | None, include_retired: bool) -> ListingsView:
        async with self._lock:
            catalogue = await self.store.load()
            listings = catalogue.list_listings(channel, retired=include_retired)
            return ListingsView(
                catalogue.version,
                listings,
                {li.key: dict(catalogue.stock_units_of.get(li.key, {})) for li in listings},
            )

    async def list_kits(self, include_retired: bool) -> KitsView:
        async with self._lock:
            catalogue = await self.store.load()
            return KitsView(catalogue.version, catalogue.list_kits(retired=include_retired))

    async def quantities(
        self, channel: int | None, keys: list[ListingKey]
    ) -> tuple[int, list[ListingQuantity]]:
        """What each listing could sell now. `keys`: these active listings (NotFound for an
        unknown or retired one); empty: every active listing of `channel` (None: all)."""
        async with self._lock:
            catalogue = await self.store.load()
            version = catalogue.version
            if keys:
                units = {key: catalogue.stock_units(key) for key in keys}
            else:
                units = {
                    listing.key: catalogue.stock_units(listing.key)
                    for listing in catalogue.list_listings(channel)
                }
        available = await self.store.available(sku for u in units.values() for sku in u)
        return version, [
            ListingQuantity(
                key,
                listing_quantity(stock_units, available),
                stock_units,
                {sku: available.get(sku, 0) for sku in stock_units},
            )
            for key, stock_units in units.items()
        ]


def _skus_of(composition: Composition) -> list[str]:
    """The stock items a composition names directly (kits' were checked when defined)."""
    return [component.sku for component in composition if component.sku]
