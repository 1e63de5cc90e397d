"""Which warehouse a new reservation holds stock in: the routing rule (libs
pulsestock/routing.py) over the order's SKU ledgers and what inventory-sync knows of each
warehouse (its site: region, kind, the channels it fulfils, from fulfillment's master data).

So a reservation holds the units where the order will ship from: a TikTok Shop order in the
FBT warehouse when it has them, otherwise the warehouse nearest the buyer. A warehouse with
no site on record fulfils every channel from no region, which makes the rule fall back to
the warehouse with the most to spare, as before sites existed. A line that no single
warehouse covers is split across warehouses nearest first (one reservation per part, see
ledger.py); only what all of them together cannot cover is short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pulsestock.inventory_sync.domain.allocation import CHANNELS
from pulsestock.inventory_sync.domain.ledger import SkuLedger
from pulsestock.routing import Candidate, channel_key, route


@dataclass(frozen=True)
class Site:
    region: str = ""
    kind: str = "own"  # own, 3pl, fbt or fba
    channels: tuple[str, ...] = ()  # channel names (e.g. "tiktok_shop"); empty: every channel


Sites = Mapping[str, Site]
NO_SITES: Sites = {}
UNKNOWN_SITE = Site()


Parts = tuple[tuple[str, int], ...]  # (warehouse, units), nearest first


def place(
    channel: int,
    buyer_region: str,
    wanted: Mapping[str, int],
    ledgers: Mapping[str, SkuLedger],
    sites: Sites,
) -> dict[str, Parts | None]:
    """SKU -> where the line's reservation holds its units: one warehouse when one the
    channel may ship from covers the line, else the line split across such warehouses
    nearest first; None when together they still fall short."""
    if not wanted:
        return {}
    available: dict[str, dict[str, int]] = {}
    for sku in wanted:
        for warehouse_id, level in ledgers[sku].warehouses.items():
            units = level.available
            if units > 0:
                available.setdefault(warehouse_id, {})[sku] = units
    candidates = [
        Candidate(warehouse_id, site.region, site.kind, site.channels, units)
        for warehouse_id, units in sorted(available.items())
        for site in (sites.get(warehouse_id, UNKNOWN_SITE),)
    ]
    decided = route(wanted, channel_key(channel), buyer_region, candidates)
    parts: dict[str, list[tuple[str, int]]] = {}
    for allocation in decided.allocations:
        if allocation.quantity > 0:
            parts.setdefault(allocation.sku, []).append(
                (allocation.warehouse_id, allocation.quantity)
            )
    return {
        sku: (tuple(parts[sku]) if sku not in decided.unallocated and sku in parts else None)
        for sku in wanted
    }


def reachable(ledger: SkuLedger, sites: Sites) -> dict[int, int]:
    """Per channel, the available units in the warehouses that fulfil it (a warehouse whose
    site names no channels, or has no site on record, fulfils every channel): the most that
    channel can sell, since an order is reserved only where its channel ships from."""
    return {
        channel: sum(
            max(0, level.available)
            for warehouse_id, level in ledger.warehouses.items()
            for site in (sites.get(warehouse_id, UNKNOWN_SITE),)
            if not site.channels or channel_key(channel) in site.channels
        )
        for channel in CHANNELS
    }
