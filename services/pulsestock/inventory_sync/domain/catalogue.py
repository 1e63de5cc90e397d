"""The catalogue: which channel listing sells which stock items, and in what composition.

A real shop's ids look nothing like the warehouse SKUs: a TikTok Shop SKU id is a 19-digit
number, a Shopify variant has its own inventory item at a location, an Amazon seller SKU is
whatever the seller typed, per marketplace. A listing maps those ids to a composition: one
stock item x N units (a multi-pack) or several stock items (a bundle), possibly through kits
(named compositions that may contain other kits, flattened to stock items; a kit that would
contain itself is refused).

Pure, like the ledger: no I/O, no clock (`now` comes with every command). Commands read the
state and return events; `apply` folds them, so a catalogue rebuilt from its events equals
the live one. The whole catalogue is one aggregate (one stream), because "a listing id
mapped twice" is a rule across listings; it changes rarely and is read on every order.

Quantities follow the composition: a listing shows min over its stock items of
floor(available / units). Listings that share a stock item each show the whole pool (as
channels do, see allocation.py): the ledger's atomic multi-SKU reservation of
`reservation_lines`, not the shown quantity, decides who gets the last unit.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pulsestock.errors import InvalidArgument, NotFound, PreconditionFailed, Validator
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.inventory_sync.domain.sku import check_sku
from pulsestock.routing import channel_key
from pulsestock.v1.common_pb2 import Channel

# A reservation of a listing touches every stock item it contains at once (one multi-SKU
# append); bounding them keeps that append small. Units are bounded so nested kits cannot
# multiply into numbers no channel or protobuf int32 holds.
MAX_COMPONENTS = 20
MAX_UNITS = 10_000

# Channel id shapes (CHANNEL_APIS.md). TikTok Shop and Shopify ids are numbers (Shopify's
# also as GIDs, `gid://shopify/InventoryItem/123`, normalised to the number so both spellings
# are one listing). An Amazon seller SKU is up to 40 characters of the seller's choosing,
# marketplace ids are upper-case letters and digits (ATVPDKIKX0DER).
_NUMERIC_ID = re.compile(r"[0-9]{1,32}")
_SHOPIFY_GID = re.compile(r"gid://shopify/([A-Za-z]+)/([0-9]{1,32})")
_SELLER_SKU = re.compile(r"[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,38}[^\s\x00-\x1f\x7f])?")
_MARKETPLACE_ID = re.compile(r"[A-Z0-9]{1,32}")

NUMERIC_RULE = "must be the channel's numeric id (1-32 digits)"
SELLER_SKU_RULE = "must be 1-40 printable characters, without leading or trailing space"
MARKETPLACE_RULE = "must be an Amazon marketplace id (upper-case letters and digits)"


# --- listing identity ---------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ListingKey:
    """What identifies a listing on its channel, and what an incoming order line carries:
    the TikTok Shop SKU id, the Shopify variant id, the Amazon seller SKU in a marketplace."""

    channel: int
    listing_id: str
    marketplace_id: str = ""  # Amazon only

    def __str__(self) -> str:
        suffix = f"@{self.marketplace_id}" if self.marketplace_id else ""
        return f"{channel_key(self.channel)}:{self.listing_id}{suffix}"


@dataclass(frozen=True)
class TikTokShopIds:
    """A TikTok Shop SKU: a stock update names its product, the SKU and the warehouse."""

    product_id: str
    sku_id: str
    warehouse_id: str

    @property
    def key(self) -> ListingKey:
        return ListingKey(Channel.CHANNEL_TIKTOK_SHOP, self.sku_id)


@dataclass(frozen=True)
class ShopifyIds:
    """A Shopify variant: orders name the variant, quantities are set on its inventory item
    at a location (a variant has exactly one inventory item)."""

    variant_id: str
    inventory_item_id: str
    location_id: str

    @property
    def key(self) -> ListingKey:
        return ListingKey(Channel.CHANNEL_SHOPIFY, self.variant_id)

    @property
    def inventory_item_gid(self) -> str:
        return f"gid://shopify/InventoryItem/{self.inventory_item_id}"

    @property
    def location_gid(self) -> str:
        return f"gid://shopify/Location/{self.location_id}"


@dataclass(frozen=True)
class AmazonIds:
    """An Amazon listing: the seller SKU in one marketplace (orders carry both)."""

    seller_sku: str
    marketplace_id: str

    @property
    def key(self) -> ListingKey:
        return ListingKey(Channel.CHANNEL_AMAZON, self.seller_sku, self.marketplace_id)


ChannelIds = TikTokShopIds | ShopifyIds | AmazonIds


def _numeric(validator: Validator, value: str, field: str) -> str:
    validator.check(_NUMERIC_ID.fullmatch(value) is not None, field, NUMERIC_RULE)
    return value


def _shopify_id(validator: Validator, value: str | int, resource: str, field: str) -> str:
    """`123` or `gid://shopify/<resource>/123` -> `123` (one spelling, one listing)."""
    text = str(value)
    gid = _SHOPIFY_GID.fullmatch(text)
    if gid is not None:
        if validator.check(
            gid.group(1) == resource, field, f"must be a {resource} id, not a {gid.group(1)}"
        ):
            return gid.group(2)
        return text
    validator.check(
        _NUMERIC_ID.fullmatch(text) is not None,
        field,
        f"must be a numeric id or gid://shopify/{resource}/<id>",
    )
    return text


def _amazon(validator: Validator, seller_sku: str, marketplace_id: str, field: str) -> None:
    validator.check(
        _SELLER_SKU.fullmatch(seller_sku) is not None, f"{field}seller_sku", SELLER_SKU_RULE
    )
    validator.check(
        _MARKETPLACE_ID.fullmatch(marketplace_id) is not None,
        f"{field}marketplace_id",
        MARKETPLACE_RULE,
    )


def checked_ids(validator: Validator, ids: ChannelIds, field: str = "ids") -> ChannelIds:
    """Records a violation for each malformed id; returns the ids in their one spelling."""
    if isinstance(ids, TikTokShopIds):
        return TikTokShopIds(
            _numeric(validator, ids.product_id, f"{field}.product_id"),
            _numeric(validator, ids.sku_id, f"{field}.sku_id"),
            _numeric(validator, ids.warehouse_id, f"{field}.warehouse_id"),
        )
    if isinstance(ids, ShopifyIds):
        return ShopifyIds(
            _shopify_id(validator, ids.variant_id, "ProductVariant", f"{field}.variant_id"),
            _shopify_id(
                validator, ids.inventory_item_id, "InventoryItem", f"{field}.inventory_item_id"
            ),
            _shopify_id(validator, ids.location_id, "Location", f"{field}.location_id"),
        )
    _amazon(validator, ids.seller_sku, ids.marketplace_id, f"{field}.")
    return ids


# --- the keys an incoming order line resolves through ---------------------------------------


def tiktok_shop_order_key(sku_id: str) -> ListingKey:
    """A TikTok Shop order line (one per unit) carries `sku_id`."""
    validator = Validator()
    _numeric(validator, sku_id, "sku_id")
    validator.raise_if_invalid()
    return ListingKey(Channel.CHANNEL_TIKTOK_SHOP, sku_id)


def shopify_order_key(variant_id: str | int) -> ListingKey:
    """A Shopify `orders/create` line item carries `variant_id` (a number in the JSON; a
    ProductVariant GID in GraphQL). A line without a variant (a custom item) has no listing:
    the caller reports it rather than guess."""
    validator = Validator()
    number = _shopify_id(validator, variant_id, "ProductVariant", "variant_id")
    validator.raise_if_invalid()
    return ListingKey(Channel.CHANNEL_SHOPIFY, number)


def amazon_order_key(seller_sku: str, marketplace_id: str) -> ListingKey:
    """An ORDER_CHANGE notification carries `OrderItems[].SellerSKU` and the summary's
    `MarketplaceId`."""
    validator = Validator()
    _amazon(validator, seller_sku, marketplace_id, "")
    validator.raise_if_invalid()
    return ListingKey(Channel.CHANNEL_AMAZON, seller_sku, marketplace_id)


# --- composition ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """`units` of one stock item (`sku`) or of one kit (`kit_id`): exactly one is set."""

    units: int
    sku: str = ""
    kit_id: str = ""


Composition = tuple[Component, ...]
StockUnits = Mapping[str, int]  # stock item -> units one unit of a listing or kit takes


@dataclass(frozen=True)
class Listing:
    ids: ChannelIds
    composition: Composition
    retired: bool = False

    @property
    def key(self) -> ListingKey:
        return self.ids.key


@dataclass(frozen=True)
class Kit:
    kit_id: str
    composition: Composition
    retired: bool = False


# --- events (the lead maps them to protobuf) ------------------------------------------------


@dataclass(frozen=True)
class ListingCreated:
    ids: ChannelIds
    composition: Composition
    at: datetime


@dataclass(frozen=True)
class ListingCompositionChanged:
    key: ListingKey
    composition: Composition
    at: datetime


@dataclass(frozen=True)
class ListingRetired:
    key: ListingKey
    at: datetime


@dataclass(frozen=True)
class KitDefined:
    """A kit created or its composition replaced (listings containing it follow)."""

    kit_id: str
    composition: Composition
    at: datetime


@dataclass(frozen=True)
class KitRetired:
    kit_id: str
    at: datetime


CatalogueEvent = (
    ListingCreated | ListingCompositionChanged | ListingRetired | KitDefined | KitRetired
)


class ListingIdTaken(PreconditionFailed):
    """A channel id is already mapped by another active listing (FAILED_PRECONDITION). Says
    which field and which listing holds it, so an import can report the conflict."""

    def __init__(self, field: str, value: str, held_by: ListingKey) -> None:
        self.field = field
        self.held_by = held_by
        super().__init__(f"{field}: {value!r} is already mapped by listing {held_by}")


# --- quantities: pure functions of a flattened composition ----------------------------------


def listing_quantity(stock_units: StockUnits, available: Mapping[str, int]) -> int:
    """How many of the listing one could sell now: min over its stock items of
    floor(available / units); a missing or negative level counts as 0."""
    if not stock_units:
        return 0
    return min(max(0, available.get(sku, 0)) // units for sku, units in stock_units.items())


def reservation_lines(stock_units: StockUnits, quantity: int) -> list[tuple[str, int]]:
    """The ledger lines an order of `quantity` of the listing reserves, all or nothing: one
    per stock item (already summed when a kit names a stock item twice), sorted by SKU."""
    if quantity <= 0:
        raise InvalidArgument.single("quantity", "must be positive")
    return [(sku, units * quantity) for sku, units in sorted(stock_units.items())]


# --- the catalogue --------------------------------------------------------------------------


@dataclass
class Catalogue:
    """All listings and kits, folded from the catalogue's events. The derived fields are
    indexes rebuilt by `apply`, part of equality so a rebuild is checked whole."""

    version: int = 0
    listings: dict[ListingKey, Listing] = field(default_factory=dict)
    kits: dict[str, Kit] = field(default_factory=dict)
    # derived: each active listing's stock units, and the active listings of each stock item
    stock_units_of: dict[ListingKey, dict[str, int]] = field(default_factory=dict)
    listings_of_sku: dict[str, set[ListingKey]] = field(default_factory=dict)
    # channels with a listing ever mapped: their SKUs no longer follow the naming convention
    channels_mapped: set[int] = field(default_factory=set)

    @classmethod
    def from_events(cls, events: list[CatalogueEvent]) -> Catalogue:
        catalogue = cls()
        for event in events:
            catalogue.apply(event)
        return catalogue

    # --- reading ----------------------------------------------------------------------------

    def resolve(self, key: ListingKey) -> Listing | None:
        """The active listing an order line's key names; None for an unknown or retired one
        (the caller records and reports the order, never guesses)."""
        listing = self.listings.get(key)
        return listing if listing is not None and not listing.retired else None

    def maps_channel(self, channel: int) -> bool:
        """Whether this channel's listings come from the catalogue. A channel with no
        listing ever mapped keeps the naming convention (a SKU is its own listing), so a shop
        without an imported catalogue, like the demo's, works as before; once one listing is
        mapped, only mapped listings are synced and only they resolve orders."""
        return channel in self.channels_mapped

    def resolve_line(
        self, channel: int, marketplace_id: str, sku: str, listing_id: str
    ) -> dict[str, int] | None:
        """Stock units one unit of an order line takes, or None when the catalogue cannot
        say (an unknown or retired listing on a mapped channel, or a line naming nothing):
        such an order is recorded and reported, never guessed. `sku` is the seller SKU the
        channel reported, our stock item only by the naming convention."""
        if listing_id:
            amazon = channel == Channel.CHANNEL_AMAZON
            key = ListingKey(channel, listing_id, marketplace_id if amazon else "")
            units = self.stock_units_of.get(key)
            if units is not None:
                return dict(units)
        if self.maps_channel(channel) or not sku:
            return None
        return {sku: 1}

    def stock_units(self, key: ListingKey) -> dict[str, int]:
        if key not in self.stock_units_of:
            raise NotFound(f"no active listing {key}")
        return dict(self.stock_units_of[key])

    def quantity(self, key: ListingKey, available: Mapping[str, int]) -> int:
        return listing_quantity(self.stock_units(key), available)

    def reservation_lines(self, key: ListingKey, quantity: int) -> list[tuple[str, int]]:
        return reservation_lines(self.stock_units(key), quantity)

    def listings_affected(self, sku: str) -> list[ListingKey]:
        """Every active listing, on every channel, whose quantity depends on this stock item
        (through any kit): the ones to recompute when its stock changes."""
        return sorted(self.listings_of_sku.get(sku, ()))

    def list_listings(self, channel: int | None = None, retired: bool = False) -> list[Listing]:
        return [
            listing
            for key, listing in sorted(self.listings.items())
            if (channel is None or key.channel == channel) and (retired or not listing.retired)
        ]

    def list_kits(self, retired: bool = False) -> list[Kit]:
        return [kit for _, kit in sorted(self.kits.items()) if retired or not kit.retired]

    # --- commands: read the state, return events --------------------------------------------

    def create_listing(
        self,
        ids: ChannelIds,
        composition: Composition,
        stock_items: Container[str],
        now: datetime,
    ) -> list[CatalogueEvent]:
        """Map a channel listing to a composition. `stock_items`: the SKUs the ledger holds.
        Repeating the same creation appends nothing (commands arrive at least once)."""
        validator = Validator()
        ids = checked_ids(validator, ids)
        self._check_composition(validator, composition, stock_items, "composition")
        validator.raise_if_invalid()
        existing = self.resolve(ids.key)
        if existing is not None and existing.ids == ids and existing.composition == composition:
            return []
        self._check_ids_free(ids)
        self._check_flattened(composition, "composition", self.kits)
        return [ListingCreated(ids, composition, now)]

    def update_listing(
        self,
        key: ListingKey,
        composition: Composition,
        stock_items: Container[str],
        now: datetime,
    ) -> list[CatalogueEvent]:
        """Change what a listing sells; its channel ids stay (retire and create to move it)."""
        listing = self._active_listing(key)
        validator = Validator()
        self._check_composition(validator, composition, stock_items, "composition")
        validator.raise_if_invalid()
        if listing.composition == composition:
            return []
        self._check_flattened(composition, "composition", self.kits)
        return [ListingCompositionChanged(key, composition, now)]

    def retire_listing(self, key: ListingKey, now: datetime) -> list[CatalogueEvent]:
        """Stop selling through this mapping: no quantity, orders no longer resolve. Its ids
        are free to be mapped again."""
        listing = self.listings.get(key)
        if listing is None:
            raise NotFound(f"no listing {key}")
        return [] if listing.retired else [ListingRetired(key, now)]

    def define_kit(
        self,
        kit_id: str,
        composition: Composition,
        stock_items: Container[str],
        now: datetime,
    ) -> list[CatalogueEvent]:
        """Create a kit or replace its composition. Refused when it would contain itself,
        directly or through other kits, or when a listing or kit containing it would grow
        past the bounds."""
        validator = Validator()
        validator.check(valid_id(kit_id), "kit_id", ID_RULE)
        self._check_composition(validator, composition, stock_items, "composition")
        cycle = self._cycle_through(kit_id, composition)
        validator.check(
            not cycle, "composition", f"kit {kit_id} contains itself: {' -> '.join(cycle)}"
        )
        validator.raise_if_invalid()
        current = self.kits.get(kit_id)
        if current is not None and not current.retired and current.composition == composition:
            return []
        kits = {**self.kits, kit_id: Kit(kit_id, composition)}
        self._check_flattened(composition, "composition", kits)
        for key, listing in self.listings.items():
            if not listing.retired and kit_id in _kits_reached(listing.composition, kits):
                self._check_flattened(listing.composition, f"listing {key}", kits)
        for other in self.kits.values():
            if not other.retired and kit_id in _kits_reached(other.composition, kits):
                self._check_flattened(other.composition, f"kit {other.kit_id}", kits)
        return [KitDefined(kit_id, composition, now)]

    def retire_kit(self, kit_id: str, now: datetime) -> list[CatalogueEvent]:
        kit = self.kits.get(kit_id)
        if kit is None:
            raise NotFound(f"no kit {kit_id!r}")
        if kit.retired:
            return []
        users = [str(k) for k, li in sorted(self.listings.items()) if _uses(li, kit_id)] + [
            f"kit {k.kit_id}" for k in self.list_kits() if _uses(k, kit_id)
        ]
        if users:
            raise PreconditionFailed(f"kit {kit_id} is still used by {', '.join(users)}")
        return [KitRetired(kit_id, now)]

    # --- folding ----------------------------------------------------------------------------

    def apply(self, event: CatalogueEvent) -> None:
        self.version += 1
        if isinstance(event, ListingCreated):
            self.listings[event.ids.key] = Listing(event.ids, event.composition)
            self.channels_mapped.add(event.ids.key.channel)
            self._index(event.ids.key)
        elif isinstance(event, ListingCompositionChanged):
            old = self.listings[event.key]
            self.listings[event.key] = Listing(old.ids, event.composition)
            self._index(event.key)
        elif isinstance(event, ListingRetired):
            old = self.listings[event.key]
            self.listings[event.key] = Listing(old.ids, old.composition, retired=True)
            self._index(event.key)
        elif isinstance(event, KitDefined):
            self.kits[event.kit_id] = Kit(event.kit_id, event.composition)
            for key in list(self.stock_units_of):  # listings through the kit follow it
                self._index(key)
        else:
            old_kit = self.kits[event.kit_id]
            self.kits[event.kit_id] = Kit(old_kit.kit_id, old_kit.composition, retired=True)

    def _index(self, key: ListingKey) -> None:
        for sku in self.stock_units_of.pop(key, {}):
            keys = self.listings_of_sku[sku]
            keys.discard(key)
            if not keys:
                del self.listings_of_sku[sku]
        listing = self.listings[key]
        if listing.retired:
            return
        units = flatten(listing.composition, self.kits)
        self.stock_units_of[key] = units
        for sku in units:
            self.listings_of_sku.setdefault(sku, set()).add(key)

    # --- rules ------------------------------------------------------------------------------

    def _active_listing(self, key: ListingKey) -> Listing:
        listing = self.listings.get(key)
        if listing is None:
            raise NotFound(f"no listing {key}")
        if listing.retired:
            raise PreconditionFailed(f"listing {key} is retired")
        return listing

    def _check_ids_free(self, ids: ChannelIds) -> None:
        """One channel id, one listing: two listings pushing quantities to the same channel
        item (or an order resolving to two compositions) would fight."""
        held = self.resolve(ids.key)
        if held is not None:
            name = {
                TikTokShopIds: "ids.sku_id",
                ShopifyIds: "ids.variant_id",
                AmazonIds: "ids.seller_sku",
            }[type(ids)]
            raise ListingIdTaken(name, ids.key.listing_id, held.key)
        if isinstance(ids, ShopifyIds):  # a variant has one inventory item, and vice versa
            for other in self.list_listings(Channel.CHANNEL_SHOPIFY):
                assert isinstance(other.ids, ShopifyIds)
                if other.ids.inventory_item_id == ids.inventory_item_id:
                    raise ListingIdTaken("ids.inventory_item_id", ids.inventory_item_id, other.key)

    def _check_composition(
        self,
        validator: Validator,
        composition: Composition,
        stock_items: Container[str],
        field: str,
    ) -> None:
        if not validator.check(bool(composition), field, "needs at least one component"):
            return
        validator.check(
            len(composition) <= MAX_COMPONENTS, field, f"at most {MAX_COMPONENTS} components"
        )
        seen: set[tuple[str, str]] = set()
        for i, component in enumerate(composition):
            at = f"{field}[{i}]"
            validator.check(
                0 < component.units <= MAX_UNITS, f"{at}.units", f"must be 1-{MAX_UNITS}"
            )
            if not validator.check(
                bool(component.sku) != bool(component.kit_id),
                at,
                "names exactly one of sku or kit_id",
            ):
                continue
            ref = ("sku", component.sku) if component.sku else ("kit", component.kit_id)
            validator.check(ref not in seen, at, f"{ref[1]} appears twice: give its units once")
            seen.add(ref)
            if component.sku:
                before = len(validator.violations)
                check_sku(validator, component.sku, f"{at}.sku")
                if len(validator.violations) == before:
                    validator.check(component.sku in stock_items, f"{at}.sku", "unknown stock item")
            else:
                kit = self.kits.get(component.kit_id)
                validator.check(kit is not None and not kit.retired, f"{at}.kit_id", "unknown kit")

    def _check_flattened(self, composition: Composition, what: str, kits: dict[str, Kit]) -> None:
        units = flatten(composition, kits)
        problems = []
        if len(units) > MAX_COMPONENTS:
            problems.append(f"would draw on {len(units)} stock items (at most {MAX_COMPONENTS})")
        problems += [
            f"would take {n} units of {sku} (at most {MAX_UNITS})"
            for sku, n in sorted(units.items())
            if n > MAX_UNITS
        ]
        if problems:
            raise InvalidArgument.single("composition", f"{what} {'; '.join(problems)}")

    def _cycle_through(self, kit_id: str, composition: Composition) -> list[str]:
        """The path by which `kit_id` would reach itself, if `composition` were its own."""

        def search(kit: str, path: list[str]) -> list[str]:
            parts = composition if kit == kit_id else self._kit_parts(kit)
            for component in parts:
                if component.kit_id == kit_id:
                    return [*path, kit_id]
                if component.kit_id and component.kit_id not in path:
                    found = search(component.kit_id, [*path, component.kit_id])
                    if found:
                        return found
            return []

        return search(kit_id, [kit_id])

    def _kit_parts(self, kit_id: str) -> Composition:
        kit = self.kits.get(kit_id)
        return kit.composition if kit is not None else ()


def flatten(composition: Composition, kits: Mapping[str, Kit]) -> dict[str, int]:
    """Stock units of one unit of `composition`, through any kits, summed per stock item.
    Kits are acyclic (define_kit refuses a cycle), so this ends."""
    units: dict[str, int] = {}
    for component in composition:
        if component.sku:
            units[component.sku] = units.get(component.sku, 0) + component.units
        else:
            for sku, n in flatten(kits[component.kit_id].composition, kits).items():
                units[sku] = units.get(sku, 0) + n * component.units
    return units


def _kits_reached(composition: Composition, kits: Mapping[str, Kit]) -> set[str]:
    reached: set[str] = set()
    stack = [c.kit_id for c in composition if c.kit_id]
    while stack:
        kit_id = stack.pop()
        if kit_id not in reached:
            reached.add(kit_id)
            stack += [c.kit_id for c in kits[kit_id].composition if c.kit_id]
    return reached


def _uses(item: Listing | Kit, kit_id: str) -> bool:
    return not item.retired and any(c.kit_id == kit_id for c in item.composition)
