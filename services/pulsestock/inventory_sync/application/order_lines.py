"""An order's lines in stock items: each line's listing resolved through the catalogue and
summed per stock item, for channel orders (events from ingest) and reservations by listing
(gRPC) alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pulsestock.inventory_sync.adapters.unresolved_orders import UnresolvedLine
from pulsestock.inventory_sync.domain.catalogue import Catalogue
from pulsestock.inventory_sync.domain.ledger import LineTarget
from pulsestock.v1 import ingest_events_pb2


@dataclass(frozen=True)
class Unresolved:
    """Lines of an order the catalogue cannot place (see Catalogue.resolve_line)."""

    lines: list[UnresolvedLine]


OrderMessage = ingest_events_pb2.OrderPlaced | ingest_events_pb2.OrderChanged


def placed_lines(
    catalogue: Catalogue, message: ingest_events_pb2.OrderPlaced
) -> tuple[tuple[str, int], ...] | Unresolved:
    """The stock items an order reserves: each line's listing through the catalogue (a
    multi-pack of N takes N units, a bundle one of each component), summed per stock item,
    so one atomic multi-SKU reservation holds all of it or none."""
    totals = _in_stock_items(catalogue, message, lambda line: (line.quantity,))
    if isinstance(totals, Unresolved):
        return totals
    return tuple((sku, counts[0]) for sku, counts in totals)


def settled_lines(
    catalogue: Catalogue, message: ingest_events_pb2.OrderChanged
) -> tuple[tuple[str, LineTarget], ...] | Unresolved:
    """Each listing line's counts in units of its stock items, summed per stock item (two
    listings sharing a component settle that component once, with both lines' units)."""
    totals = _in_stock_items(
        catalogue,
        message,
        lambda line: (line.ordered, line.cancelled, line.shipped, line.returned),
    )
    if isinstance(totals, Unresolved):
        return totals
    return tuple((sku, LineTarget(*counts)) for sku, counts in totals)


def _in_stock_items(
    catalogue: Catalogue, message: OrderMessage, counts_of: Callable[[Any], tuple[int, ...]]
) -> list[tuple[str, list[int]]] | Unresolved:
    """Each line's counts times the units of each stock item its listing takes, summed per
    stock item and sorted by SKU; Unresolved naming every line the catalogue cannot place."""
    totals: dict[str, list[int]] = {}
    missing = []
    for line in message.lines:
        units = catalogue.resolve_line(
            message.channel, message.marketplace_id, line.sku, line.listing_id
        )
        if units is None:
            missing.append(UnresolvedLine(line.sku, line.listing_id))
            continue
        counts = counts_of(line)
        for sku, n in units.items():
            total = totals.setdefault(sku, [0] * len(counts))
            for i, count in enumerate(counts):
                total[i] += n * count
    if missing:
        return Unresolved(missing)
    return sorted(totals.items())
