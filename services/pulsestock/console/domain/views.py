"""What the pages show, as plain values: a SKU's heat and pulse, rankings, evidence, ages.

Nothing here reads the clock or calls anything: `now` comes in, so the same values render
the same page in a test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

DETECTED, PEAKING, DECAYING = "detected", "peaking", "decaying"
# As signal decides them (signal.domain.pulses): below this share of its peak a pulse is
# past it; signal ends a pulse below END_BELOW of its peak.
DECAY_BELOW = 0.8
# Each state's symbol beside its word: never colour alone.
STATE_SYMBOLS = {DETECTED: "▲", PEAKING: "◆", DECAYING: "▼"}


def pulse_state(phase: str, heat: float, peak_heat: float) -> str:
    """A pulse's state for the page: signal's phase when it names one of the three, else the
    state its heat says (at or above the peak: peaking; under DECAY_BELOW of it: decaying;
    no peak known: detected)."""
    if phase in STATE_SYMBOLS:
        return phase
    if peak_heat <= 0 or not math.isfinite(peak_heat):
        return DETECTED
    if heat >= peak_heat:
        return PEAKING
    if heat < DECAY_BELOW * peak_heat:
        return DECAYING
    return PEAKING


@dataclass(frozen=True)
class Evidence:
    source: str  # "detector" or "rule:<name>"
    description: str
    metrics: tuple[tuple[str, str], ...]  # (name, formatted value), sorted by name


@dataclass(frozen=True)
class PulseView:
    pulse_id: str
    state: str
    detected_at: datetime
    age: str  # time since onset, e.g. "2 h 5 min"
    hot_channel: str
    evidence: tuple[Evidence, ...] = ()
    video_ids: tuple[str, ...] = ()

    @property
    def symbol(self) -> str:
        return STATE_SYMBOLS.get(self.state, "●")


@dataclass(frozen=True)
class HeatRow:
    rank: int
    sku: str
    heat: float
    view_velocity: float
    like_rate: float
    share_rate: float
    as_of: datetime | None
    pulse: PulseView | None = None


@dataclass(frozen=True)
class RawRanked:
    """One SKU as signal's ranking gives it (the adapter's translation of RankedSku)."""

    sku: str
    heat: float
    view_velocity: float
    like_rate: float
    share_rate: float
    as_of: datetime | None
    pulse_id: str = ""
    phase: str = ""
    peak_heat: float = 0.0
    detected_at: datetime | None = None
    hot_channel: str = ""
    evidence: tuple[tuple[str, str, Mapping[str, float]], ...] = ()
    video_ids: tuple[str, ...] = field(default=())


def format_number(value: float) -> str:
    """Short, readable figures: 1234567 -> 1.23M, 12345 -> 12.3k, 0.0834 -> 0.0834."""
    if not math.isfinite(value):
        return "∞" if value > 0 else ("-∞" if value < 0 else "—")
    size = abs(value)
    if size >= 1e9:
        return f"{value / 1e9:.3g}G"
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_age(seconds: float) -> str:
    """Time since something: "45 s", "12 min", "3 h 4 min", "2 d 5 h"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def evidence_of(raw: Iterable[tuple[str, str, Mapping[str, float]]]) -> tuple[Evidence, ...]:
    return tuple(
        Evidence(
            source,
            description,
            tuple((name, format_number(value)) for name, value in sorted(metrics.items())),
        )
        for source, description, metrics in raw
    )


def pulse_view(item: RawRanked, now: datetime) -> PulseView | None:
    if not item.pulse_id or item.detected_at is None:
        return None
    return PulseView(
        pulse_id=item.pulse_id,
        state=pulse_state(item.phase, item.heat, item.peak_heat),
        detected_at=item.detected_at,
        age=format_age((now - item.detected_at).total_seconds()),
        hot_channel=channel_label(item.hot_channel),
        evidence=evidence_of(item.evidence),
        video_ids=item.video_ids,
    )


def rank(items: Sequence[RawRanked], now: datetime) -> list[HeatRow]:
    """Hottest first (ties by SKU, so the order is stable), numbered from 1. Signal ranks
    already; ranking again here keeps the page right whatever order the rows came in."""
    ordered = sorted(
        items, key=lambda item: (-(item.heat if math.isfinite(item.heat) else 0.0), item.sku)
    )
    return [
        HeatRow(
            rank=index,
            sku=item.sku,
            heat=item.heat,
            view_velocity=item.view_velocity,
            like_rate=item.like_rate,
            share_rate=item.share_rate,
            as_of=item.as_of,
            pulse=pulse_view(item, now),
        )
        for index, item in enumerate(ordered, start=1)
    ]


def active_pulses(rows: Sequence[HeatRow]) -> list[HeatRow]:
    """The rows with a pulse on, the newest onset first."""
    pulsing = [row for row in rows if row.pulse is not None]
    return sorted(pulsing, key=lambda row: row.pulse.detected_at if row.pulse else 0, reverse=True)


CHANNEL_LABELS = {
    "CHANNEL_TIKTOK_SHOP": "TikTok Shop",
    "CHANNEL_SHOPIFY": "Shopify",
    "CHANNEL_AMAZON": "Amazon",
    "CHANNEL_UNSPECIFIED": "unspecified",
}


def channel_label(name: str) -> str:
    return CHANNEL_LABELS.get(name, name)


PO_STATUS_LABELS = {
    "PURCHASE_ORDER_STATUS_DRAFT": "draft",
    "PURCHASE_ORDER_STATUS_SUBMITTED": "submitted",
    "PURCHASE_ORDER_STATUS_CONFIRMED": "confirmed",
    "PURCHASE_ORDER_STATUS_PARTIALLY_RECEIVED": "partially received",
    "PURCHASE_ORDER_STATUS_RECEIVED": "received",
    "PURCHASE_ORDER_STATUS_CANCELLED": "cancelled",
}


def po_status_label(name: str) -> str:
    return PO_STATUS_LABELS.get(name, name.lower())
