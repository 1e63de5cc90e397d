"""A channel order's lifecycle as ingest knows it: the join of every notification seen of it.

Channels deliver late, twice and out of order, and some notifications carry only a status.
So an order is not a state machine stepped by each notification but a join-semilattice:
every counter (units ordered, cancelled, shipped, returned per SKU) and the payment level only
grow, and the rest is last-writer-wins on the channel's own update time. Joining is
commutative, associative and idempotent, so any permutation and duplication of an order's
notifications ends in the same facts; each channel's shape is mapped onto them here.

Every notification is a snapshot of one true history, so the effective view (`lines`) of a
later join never takes back a unit the view of an earlier one shipped or cancelled.

A line is keyed by the seller's SKU (by the naming convention, our stock item) and remembers
the channel's listing id (TikTok Shop sku_id, Shopify variant_id, Amazon SellerSKU), which the
catalogue resolves. A line with a listing id but no seller SKU is keyed by its listing's
reserved key (`#<listing id>`: none of our SKUs holds a '#', see pulsestock.ids) and goes out
with an empty SKU; a line with neither cannot be placed and is left out.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Payment(enum.IntEnum):
    """Ordered: a later notification can only raise it (a refund is a return, not unpaying)."""

    UNKNOWN = 0
    UNPAID = 1
    AUTHORIZED = 2
    PAID = 3


@dataclass(frozen=True)
class LineFacts:
    ordered: int = 0
    cancelled: int = 0
    shipped: int = 0
    returned: int = 0

    def join(self, other: LineFacts) -> LineFacts:
        return LineFacts(
            max(self.ordered, other.ordered),
            max(self.cancelled, other.cancelled),
            max(self.shipped, other.shipped),
            max(self.returned, other.returned),
        )


@dataclass(frozen=True)
class Stamped:
    """A last-writer-wins value: the later channel time wins, ties go to the larger value."""

    at: datetime
    value: str

    def join(self, other: Stamped | None) -> Stamped:
        if other is None:
            return self
        return max(self, other, key=lambda s: (s.at, s.value))


def _join_stamped(a: Stamped | None, b: Stamped | None) -> Stamped | None:
    return b if a is None else a.join(b)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


# --- the channel's listing ids ------------------------------------------------------------------

LISTING_KEY_PREFIX = "#"  # never in a SKU (pulsestock.ids.ID_PATTERN)
MAX_LISTING_ID = 64
LISTING_ID_RULE = f"must be 1-{MAX_LISTING_ID} printable characters"


def valid_listing_id(text: str) -> bool:
    return 0 < len(text) <= MAX_LISTING_ID and text.isprintable()


def channel_id(value: object) -> str:
    """A channel's id (a JSON string or number) as text; '' when absent or unusable (then
    the line is placed by its seller SKU alone, as before listing ids were kept)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    text = str(value)
    return text if valid_listing_id(text) else ""


def line_key(seller_sku: str, listing_id: str) -> str | None:
    """A line's key: its seller SKU; without one, its listing's reserved key; else none."""
    if seller_sku:
        return seller_sku
    if listing_id:
        return LISTING_KEY_PREFIX + listing_id
    return None


def _remember(listing_ids: dict[str, str], key: str, listing_id: str) -> None:
    """One listing id per line key; two for one key (a seller SKU reused across listings)
    keep the larger, so the choice does not depend on the order they were seen in."""
    if listing_id:
        listing_ids[key] = max(listing_ids.get(key, listing_id), listing_id)


def _join_listing_ids(a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, str]:
    joined = dict(a)
    for key, listing_id in b.items():
        _remember(joined, key, listing_id)
    return joined


@dataclass(frozen=True)
class OrderFacts:
    lines_seen: Mapping[str, LineFacts] = field(default_factory=dict)
    payment: Payment = Payment.UNKNOWN
    # The channel cancelled the whole order / shipped all of it, without per-line counts.
    cancelled_whole: bool = False
    shipped_whole: bool = False
    cancel_request: Stamped | None = None  # value "requested" or "answered"
    status: Stamped | None = None  # the channel's own status word
    placed_at: datetime | None = None
    updated_at: datetime | None = None
    # Each line key's listing id on the channel (a line without one is absent).
    listing_ids: Mapping[str, str] = field(default_factory=dict)
    # Amazon: the marketplace the order was placed in ('' when unknown); never changes, so
    # the join keeps the larger of two only to stay deterministic.
    marketplace_id: str = ""

    def join(self, other: OrderFacts) -> OrderFacts:
        lines = dict(self.lines_seen)
        for sku, line in other.lines_seen.items():
            lines[sku] = lines[sku].join(line) if sku in lines else line
        return OrderFacts(
            lines_seen=lines,
            payment=max(self.payment, other.payment),
            cancelled_whole=self.cancelled_whole or other.cancelled_whole,
            shipped_whole=self.shipped_whole or other.shipped_whole,
            cancel_request=_join_stamped(self.cancel_request, other.cancel_request),
            status=_join_stamped(self.status, other.status),
            placed_at=_earliest(self.placed_at, other.placed_at),
            updated_at=_latest(self.updated_at, other.updated_at),
            listing_ids=_join_listing_ids(self.listing_ids, other.listing_ids),
            marketplace_id=max(self.marketplace_id, other.marketplace_id),
        )

    def sku_of(self, key: str) -> str:
        """The seller SKU a line key stands for: '' for the reserved key of a listing."""
        listing_id = self.listing_ids.get(key, "")
        return "" if listing_id and key == LISTING_KEY_PREFIX + listing_id else key

    @property
    def lines(self) -> dict[str, LineFacts]:
        """What each line amounts to: a whole shipment ships every unit not cancelled, a
        whole cancellation cancels every unit not shipped; counts are clamped to the order."""
        effective = {}
        for sku, line in sorted(self.lines_seen.items()):
            ordered = line.ordered
            cancelled = min(line.cancelled, ordered)
            shipped = min(line.shipped, ordered - cancelled)
            if self.shipped_whole:
                shipped = ordered - cancelled
            if self.cancelled_whole:
                cancelled = ordered - shipped
            effective[sku] = LineFacts(ordered, cancelled, shipped, min(line.returned, shipped))
        return {sku: line for sku, line in effective.items() if line.ordered > 0}

    @property
    def cancel_requested(self) -> bool:
        open_units = any(
            line.ordered - line.cancelled - line.shipped > 0 for line in self.lines.values()
        )
        return (
            self.cancel_request is not None
            and self.cancel_request.value == "requested"
            and open_units
        )

    @property
    def actionable(self) -> bool:
        """The ledger can act once the order's lines are known."""
        return bool(self.lines)


# --- each channel's notifications, mapped onto the facts ----------------------------------------


class MalformedOrder(ValueError):
    """The notification does not say what the channel documents; the reason says what."""


TIKTOK_PAID = {"ON_HOLD", "AWAITING_SHIPMENT", "AWAITING_COLLECTION"}
TIKTOK_SHIPPED = {"IN_TRANSIT", "DELIVERED", "COMPLETED"}
TIKTOK_STATUSES = {"UNPAID", "CANCELLED"} | TIKTOK_PAID | TIKTOK_SHIPPED


def tiktok_status(
    status: str,
    updated_at: datetime,
    lines: Mapping[str, LineFacts] | None,
    listing_ids: Mapping[str, str] | None = None,
) -> OrderFacts:
    """TikTok Shop type 1 (order status change); `lines` and `listing_ids` from the order
    detail API (`tiktok_lines`, `tiktok_listing_ids`)."""
    if status not in TIKTOK_STATUSES:
        raise MalformedOrder(f"unknown order_status {status!r}")
    payment = (
        Payment.UNPAID
        if status == "UNPAID"
        else Payment.PAID
        if status in TIKTOK_PAID | TIKTOK_SHIPPED
        else Payment.UNKNOWN
    )
    return OrderFacts(
        lines_seen=dict(lines or {}),
        payment=payment,
        cancelled_whole=status == "CANCELLED",
        shipped_whole=status in TIKTOK_SHIPPED,
        status=Stamped(updated_at, status),
        updated_at=updated_at,
        listing_ids=dict(listing_ids or {}),
    )


TIKTOK_CANCEL_DONE = {"CANCELLATION_REQUEST_SUCCESS", "CANCELLATION_REQUEST_COMPLETE"}
TIKTOK_CANCEL_REFUSED = {"CANCELLATION_REQUEST_CANCEL", "CANCELLATION_REQUEST_REJECT"}


def tiktok_cancellation(data: Mapping[str, Any], updated_at: datetime) -> OrderFacts:
    """TikTok Shop type 11: a cancellation's status. A request keeps the stock held until the
    seller answers; the order's own CANCELLED status (type 1) releases it."""
    status = str(data.get("cancel_status", "CANCELLATION_REQUEST_PENDING"))
    if status in TIKTOK_CANCEL_DONE:
        return OrderFacts(
            cancelled_whole=True,
            cancel_request=Stamped(updated_at, "answered"),
            updated_at=updated_at,
        )
    answer = "answered" if status in TIKTOK_CANCEL_REFUSED else "requested"
    return OrderFacts(cancel_request=Stamped(updated_at, answer), updated_at=updated_at)


def _tiktok_item(item: Mapping[str, Any]) -> tuple[str | None, str]:
    listing_id = channel_id(item.get("sku_id"))
    return line_key(str(item.get("seller_sku") or ""), listing_id), listing_id


def tiktok_lines(order: Mapping[str, Any]) -> dict[str, LineFacts]:
    """TikTok's order detail lists one line item per unit (no quantity field)."""
    lines: dict[str, LineFacts] = {}
    for item in order.get("line_items", []):
        key, _ = _tiktok_item(item)
        if key is None:
            continue
        before = lines.get(key, LineFacts())
        cancelled = str(item.get("display_status", "")) == "CANCELLED" or bool(
            item.get("is_cancelled", False)
        )
        lines[key] = LineFacts(before.ordered + 1, before.cancelled + int(cancelled))
    return lines


def tiktok_listing_ids(order: Mapping[str, Any]) -> dict[str, str]:
    """Each line key's TikTok Shop `sku_id`, from the same order detail as `tiktok_lines`."""
    listing_ids: dict[str, str] = {}
    for item in order.get("line_items", []):
        key, listing_id = _tiktok_item(item)
        if key is not None:
            _remember(listing_ids, key, listing_id)
    return listing_ids


SHOPIFY_TOPICS = {
    "orders/create",
    "orders/updated",
    "orders/paid",
    "orders/cancelled",
    "orders/fulfilled",
    "orders/partially_fulfilled",
    "refunds/create",
}
SHOPIFY_PAYMENT = {
    "pending": Payment.UNPAID,
    "authorized": Payment.AUTHORIZED,
    "partially_paid": Payment.PAID,
    "paid": Payment.PAID,
    "partially_refunded": Payment.PAID,
    "refunded": Payment.PAID,
    "voided": Payment.UNKNOWN,  # an authorisation let go: the cancellation says the rest
}


def shopify_time(text: object, what: str) -> datetime:
    """Shopify writes ISO 8601 with an offset; a time without one is refused, not guessed."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as error:
        raise MalformedOrder(f"{what} is not an ISO 8601 time") from error
    if moment.tzinfo is None:
        raise MalformedOrder(f"{what} has no time zone offset")
    return moment.astimezone(UTC)


def _shopify_key(item: Mapping[str, Any], listing_ids: dict[str, str]) -> str | None:
    """A Shopify line item's key (its `sku`, else its `variant_id`), its variant remembered."""
    listing_id = channel_id(item.get("variant_id"))
    key = line_key(str(item.get("sku") or ""), listing_id)
    if key is not None:
        _remember(listing_ids, key, listing_id)
    return key


def _shopify_refund_lines(
    refunds: Iterable[Mapping[str, Any]], listing_ids: dict[str, str]
) -> dict[str, LineFacts]:
    """Refund lines: 'return' brings shipped units back, 'cancel' takes unshipped ones off."""
    lines: dict[str, LineFacts] = {}
    for refund in refunds:
        for item in refund.get("refund_line_items", []):
            key = _shopify_key(item.get("line_item") or {}, listing_ids)
            if key is None:
                continue
            quantity, kind = int(item.get("quantity", 0)), item.get("restock_type")
            before = lines.get(key, LineFacts())
            lines[key] = LineFacts(
                cancelled=before.cancelled + (quantity if kind == "cancel" else 0),
                returned=before.returned + (quantity if kind == "return" else 0),
            )
    return lines


def shopify_order(topic: str, body: Mapping[str, Any], triggered_at: datetime) -> OrderFacts:
    """An `orders/*` body is the Order resource; `refunds/create` is the Refund resource."""
    listing_ids: dict[str, str] = {}
    if topic == "refunds/create":
        refunded = _shopify_refund_lines([body], listing_ids)
        return OrderFacts(lines_seen=refunded, updated_at=triggered_at, listing_ids=listing_ids)
    try:
        updated_at = shopify_time(body.get("updated_at") or triggered_at.isoformat(), "updated_at")
        placed_at = (
            shopify_time(body["created_at"], "created_at") if body.get("created_at") else None
        )
        counts: dict[str, list[int]] = {}
        for item in body.get("line_items", []):
            key = _shopify_key(item, listing_ids)
            if key is None:
                continue
            quantity = int(item.get("quantity", 0))
            current = int(item.get("current_quantity", quantity))  # after edits / removals
            entry = counts.setdefault(key, [0, 0, 0])
            entry[0] += quantity
            entry[1] += quantity - current
        for fulfillment in body.get("fulfillments", []):
            if fulfillment.get("status") != "success":
                continue
            for item in fulfillment.get("line_items", []):
                key = _shopify_key(item, listing_ids)
                if key in counts:
                    counts[key][2] += int(item.get("quantity", 0))
        refunds = _shopify_refund_lines(body.get("refunds", []), listing_ids)
    except (TypeError, ValueError, KeyError) as error:
        raise MalformedOrder(f"malformed order: {error}") from error
    lines = {
        sku: LineFacts(ordered, cancelled, shipped).join(refunds.get(sku, LineFacts()))
        for sku, (ordered, cancelled, shipped) in counts.items()
    }
    financial = str(body.get("financial_status") or "")
    payment = (
        Payment.PAID if topic == "orders/paid" else SHOPIFY_PAYMENT.get(financial, Payment.UNKNOWN)
    )
    return OrderFacts(
        lines_seen=lines,
        payment=payment,
        cancelled_whole=topic == "orders/cancelled" or bool(body.get("cancelled_at")),
        shipped_whole=topic == "orders/fulfilled" or body.get("fulfillment_status") == "fulfilled",
        status=Stamped(updated_at, topic),
        placed_at=placed_at,
        updated_at=updated_at,
        listing_ids={key: listing_ids[key] for key in lines if key in listing_ids},
    )


AMAZON_PAID = {"Unshipped", "PartiallyShipped", "Shipped"}
AMAZON_STATUSES = AMAZON_PAID | {"Pending", "Canceled", "Unfulfillable", "PendingAvailability"}


def amazon_time(text: object, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as error:
        raise MalformedOrder(f"{what} is not an ISO 8601 time") from error
    if moment.tzinfo is None:
        raise MalformedOrder(f"{what} has no time zone")  # SP-API times are UTC with a 'Z'
    return moment.astimezone(UTC)


def amazon_order_change(change: Mapping[str, Any], event_time: datetime) -> OrderFacts:
    """The `OrderChangeNotification` of an ORDER_CHANGE: its Summary is the order as it
    stands (MarketplaceId, OrderStatus, and per item SellerSKU, Quantity, QuantityShipped).
    On Amazon the listing is the seller SKU within the marketplace."""
    try:
        summary = change["Summary"]
        status = str(summary["OrderStatus"])
        trigger = change.get("OrderChangeTrigger") or {}
        changed_at = trigger.get("TimeOfOrderChange")
        updated_at = amazon_time(changed_at, "TimeOfOrderChange") if changed_at else event_time
        purchased = summary.get("PurchaseDate")
        lines: dict[str, LineFacts] = {}
        listing_ids: dict[str, str] = {}
        requested: bool | None = None
        for item in summary.get("OrderItems", []):
            sku = str(item["SellerSKU"])
            _remember(listing_ids, sku, channel_id(item["SellerSKU"]))
            before = lines.get(sku, LineFacts())
            lines[sku] = LineFacts(
                before.ordered + int(item["Quantity"]),
                0,
                before.shipped + int(item.get("QuantityShipped", 0)),
            )
            if "IsBuyerRequestedCancel" in item:
                requested = bool(requested) or item["IsBuyerRequestedCancel"] is True
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedOrder(f"malformed notification: {error}") from error
    if status not in AMAZON_STATUSES:
        raise MalformedOrder(f"unknown OrderStatus {status!r}")
    return OrderFacts(
        lines_seen=lines,
        payment=Payment.PAID
        if status in AMAZON_PAID
        else Payment.UNPAID
        if status == "Pending"
        else Payment.UNKNOWN,
        cancelled_whole=status == "Canceled",
        shipped_whole=status == "Shipped",
        cancel_request=None
        if requested is None
        else Stamped(updated_at, "requested" if requested else "answered"),
        status=Stamped(updated_at, status),
        placed_at=amazon_time(purchased, "PurchaseDate") if purchased else None,
        updated_at=updated_at,
        listing_ids=listing_ids,
        marketplace_id=channel_id(summary.get("MarketplaceId")),
    )


# --- persistence shape (plain JSON), kept beside the type it mirrors ----------------------------


def facts_to_json(facts: OrderFacts) -> dict[str, Any]:
    def stamped(s: Stamped | None) -> list[str] | None:
        return None if s is None else [s.at.isoformat(), s.value]

    return {
        "lines": {
            sku: [line.ordered, line.cancelled, line.shipped, line.returned]
            for sku, line in sorted(facts.lines_seen.items())
        },
        "payment": int(facts.payment),
        "cancelled_whole": facts.cancelled_whole,
        "shipped_whole": facts.shipped_whole,
        "cancel_request": stamped(facts.cancel_request),
        "status": stamped(facts.status),
        "placed_at": facts.placed_at.isoformat() if facts.placed_at else None,
        "updated_at": facts.updated_at.isoformat() if facts.updated_at else None,
        "listing_ids": dict(sorted(facts.listing_ids.items())),
        "marketplace_id": facts.marketplace_id,
    }


def facts_from_json(data: Mapping[str, Any]) -> OrderFacts:
    def stamped(value: list[str] | None) -> Stamped | None:
        return None if value is None else Stamped(datetime.fromisoformat(value[0]), value[1])

    def moment(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    return OrderFacts(
        lines_seen={sku: LineFacts(*counts) for sku, counts in data["lines"].items()},
        payment=Payment(data["payment"]),
        cancelled_whole=data["cancelled_whole"],
        shipped_whole=data["shipped_whole"],
        cancel_request=stamped(data["cancel_request"]),
        status=stamped(data["status"]),
        placed_at=moment(data["placed_at"]),
        updated_at=moment(data["updated_at"]),
        # Facts stored before listing ids were kept have neither.
        listing_ids=dict(data.get("listing_ids") or {}),
        marketplace_id=str(data.get("marketplace_id") or ""),
    )
