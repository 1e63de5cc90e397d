"""Server-rendered SVG charts: heat and orders over time with pulse markers, the forecast fan
(p10-p90 band, p50 line) with actual orders overlaid, and a live session's minutes.

Each function is pure and returns an `Svg`: a string every outside value in which (labels,
ids, titles) went through `escape`, which templates insert as it is. No inline style: the
page's stylesheet colours the classes, so the Content-Security-Policy can forbid inline
styles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape as _escape

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 48, 16, 28
MAX_TICKS = 8


class Svg(str):
    """Markup built here from escaped values: Jinja inserts it without escaping again."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def escape(value: object) -> str:
    """Text or an attribute value, quotes included."""
    return _escape(str(value), quote=True)


@dataclass(frozen=True)
class HourPoint:
    at: datetime
    orders: float
    heat: float | None  # None: no heat signal that hour


@dataclass(frozen=True)
class PulseMark:
    pulse_id: str
    start: datetime
    end: datetime | None  # None: still on


@dataclass(frozen=True)
class FanPoint:
    at: datetime
    p10: float
    p50: float
    p90: float


@dataclass(frozen=True)
class MinutePoint:
    viewers: float
    interactions: float
    orders: float


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _num(value: float) -> str:
    return f"{value:.1f}"


class _Scale:
    def __init__(self, low: float, high: float, out_low: float, out_high: float) -> None:
        self.low, self.high = low, high if high > low else low + 1.0
        self.out_low, self.out_high = out_low, out_high

    def __call__(self, value: float) -> float:
        share = (_finite(value) - self.low) / (self.high - self.low)
        return self.out_low + share * (self.out_high - self.out_low)


def _time_scale(start: datetime, end: datetime) -> _Scale:
    span = max((end - start).total_seconds(), 1.0)
    return _Scale(0.0, span, LEFT, WIDTH - RIGHT)


def _seconds(at: datetime, start: datetime) -> float:
    return (at - start).total_seconds()


def _nice_max(value: float) -> float:
    """A round upper bound for an axis (1, 2, 5 x 10^n)."""
    value = max(_finite(value), 0.0)
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _open(title: str, description: str, testid: str) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="{escape(testid)}-title {escape(testid)}-desc"'
        f' data-testid="{escape(testid)}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(testid)}-title">{escape(title)}</title>',
        f'<desc id="{escape(testid)}-desc">{escape(description)}</desc>',
    ]


def _frame(parts: list[str]) -> None:
    bottom = HEIGHT - BOTTOM
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}"/>'
    )
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>')


def _time_ticks(parts: list[str], start: datetime, end: datetime, x: _Scale) -> None:
    """Labels on whole hours, at most MAX_TICKS of them, so they never overlap."""
    span_hours = (end - start).total_seconds() / 3600
    hours = next((h for h in (1, 2, 3, 6, 12, 24, 48) if span_hours / h <= MAX_TICKS - 1), 168)
    tick = start.replace(minute=0, second=0, microsecond=0)
    while tick < start or tick.hour % min(hours, 24):
        tick += timedelta(hours=1)
    while tick <= end:
        px = x(_seconds(tick, start))
        parts.append(
            f'<text class="tick" x="{_num(px)}" y="{HEIGHT - 8}" text-anchor="middle">'
            f"{escape(tick.strftime('%d %H:%M'))}</text>"
        )
        tick += timedelta(hours=hours)


def _value_label(parts: list[str], x: float, y: float, text: str, anchor: str) -> None:
    parts.append(
        f'<text class="tick" x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}">'
        f"{escape(text)}</text>"
    )


def heat_orders_chart(
    hours: Sequence[HourPoint], pulses: Sequence[PulseMark], sku: str, now: datetime
) -> Svg:
    """Orders per hour as bars (right axis), heat as a line (left axis), and a marker where
    each pulse began (shaded while it lasted)."""
    parts = _open(
        f"Heat and orders of {sku}",
        "Orders per hour as bars, heat as a line, pulse onsets as dashed markers.",
        "heat-orders-chart",
    )
    if not hours:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "No orders or heat recorded yet</text></svg>"
        )
        return Svg("".join(parts))
    start, end = hours[0].at, hours[-1].at + timedelta(hours=1)
    x = _time_scale(start, end)
    bottom = HEIGHT - BOTTOM
    orders_max = _nice_max(max(h.orders for h in hours))
    heat_max = _nice_max(max((h.heat or 0.0) for h in hours))
    y_orders = _Scale(0, orders_max, bottom, TOP)
    y_heat = _Scale(0, heat_max, bottom, TOP)
    _frame(parts)
    _value_label(parts, LEFT - 4, TOP + 8, f"heat {heat_max:g}", "end")
    _value_label(parts, WIDTH - RIGHT + 4, TOP + 8, f"{orders_max:g} orders/h", "start")
    for pulse in pulses:
        x0 = x(max(_seconds(pulse.start, start), 0))
        x1 = x(min(_seconds(pulse.end or max(now, end), start), _seconds(end, start)))
        if x1 > x0:
            parts.append(
                f'<rect class="pulse-span" x="{_num(x0)}" y="{TOP}" width="{_num(x1 - x0)}"'
                f' height="{bottom - TOP}"/>'
            )
    width = max((WIDTH - LEFT - RIGHT) / len(hours) - 1, 1)
    for h in hours:
        if h.orders > 0:
            px, py = x(_seconds(h.at, start)), y_orders(h.orders)
            parts.append(
                f'<rect class="bar orders" x="{_num(px)}" y="{_num(py)}" width="{_num(width)}"'
                f' height="{_num(bottom - py)}"><title>{escape(h.at.strftime("%d %b %H:%M"))}:'
                f" {escape(f'{h.orders:g}')} orders</title></rect>"
            )
    points = [
        f"{_num(x(_seconds(h.at, start) + 1800))},{_num(y_heat(h.heat))}"
        for h in hours
        if h.heat is not None
    ]
    if points:
        parts.append(f'<polyline class="line heat" points="{" ".join(points)}"/>')
    for pulse in pulses:
        if not start <= pulse.start <= end:
            continue
        px = x(_seconds(pulse.start, start))
        label = f"pulse {pulse.pulse_id} began {pulse.start.strftime('%d %b %H:%M')}"
        parts.append(
            f'<g class="pulse-marker" data-testid="pulse-marker"'
            f' data-pulse-id="{escape(pulse.pulse_id)}"><title>{escape(label)}</title>'
            f'<line x1="{_num(px)}" y1="{TOP}" x2="{_num(px)}" y2="{bottom}"/>'
            f'<path d="M{_num(px - 6)},{TOP} L{_num(px + 6)},{TOP} L{_num(px)},{TOP + 10} Z"/>'
            f'<text x="{_num(px + 8)}" y="{TOP + 10}">pulse</text></g>'
        )
    _time_ticks(parts, start, end, x)
    parts.append("</svg>")
    return Svg("".join(parts))


def forecast_fan_chart(
    fan: Sequence[FanPoint], actuals: Sequence[HourPoint], sku: str, now: datetime
) -> Svg:
    """The forecast's p10-p90 band and p50 line per hour, the actual orders per hour as
    dots over the same axis (history before the fan, and any hour the fan covers that has
    happened), and a line at now."""
    parts = _open(
        f"Demand forecast of {sku}",
        "Shaded band: 10th to 90th percentile of orders per hour; solid line: median;"
        " dots: actual orders per hour.",
        "forecast-chart",
    )
    if not fan and not actuals:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "No forecast yet</text></svg>"
        )
        return Svg("".join(parts))
    times = [p.at for p in fan] + [h.at for h in actuals]
    start, end = min(times), max(times) + timedelta(hours=1)
    x = _time_scale(start, end)
    bottom = HEIGHT - BOTTOM
    top_value = _nice_max(max([p.p90 for p in fan] + [h.orders for h in actuals] + [0.0]))
    y = _Scale(0, top_value, bottom, TOP)
    _frame(parts)
    _value_label(parts, LEFT - 4, TOP + 8, f"{top_value:g}/h", "end")

    def at(moment: datetime) -> float:
        return x(_seconds(moment, start) + 1800)

    if fan:
        upper = [f"{_num(at(p.at))},{_num(y(p.p90))}" for p in fan]
        lower = [f"{_num(at(p.at))},{_num(y(p.p10))}" for p in reversed(fan)]
        parts.append(
            f'<polygon class="fan-band" data-testid="forecast-fan"'
            f' points="{" ".join(upper + lower)}"><title>p10 to p90</title></polygon>'
        )
        median = " ".join(f"{_num(at(p.at))},{_num(y(p.p50))}" for p in fan)
        parts.append(
            f'<polyline class="line p50" data-testid="forecast-p50" points="{median}">'
            "<title>median (p50)</title></polyline>"
        )
    if start <= now <= end:
        px = x(_seconds(now, start))
        parts.append(
            f'<line class="now" x1="{_num(px)}" y1="{TOP}" x2="{_num(px)}" y2="{bottom}"/>'
        )
        _value_label(parts, px + 4, bottom - 4, "now", "start")
    for h in actuals:
        parts.append(
            f'<circle class="actual" data-testid="actual-orders" cx="{_num(at(h.at))}"'
            f' cy="{_num(y(h.orders))}" r="3"><title>'
            f"{escape(h.at.strftime('%d %b %H:%M'))}: {escape(f'{h.orders:g}')} ordered"
            "</title></circle>"
        )
    _time_ticks(parts, start, end, x)
    parts.append("</svg>")
    return Svg("".join(parts))


def live_chart(
    minutes: Sequence[MinutePoint], p10: float, p50: float, p90: float, length: float, live_id: str
) -> Svg:
    """Cumulative orders minute by minute against the whole-session forecast (band p10-p90,
    dashed p50, up to the expected length), with viewers per minute as a faint line."""
    parts = _open(
        f"Live session {live_id}",
        "Line: orders so far, minute by minute; shaded band and dashed line: the whole"
        " session's forecast (p10 to p90, median); faint line: viewers.",
        "live-chart",
    )
    if not minutes:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "No minutes yet</text></svg>"
        )
        return Svg("".join(parts))
    span = max(float(len(minutes)), _finite(length), 1.0)
    x = _Scale(0, span, LEFT, WIDTH - RIGHT)
    bottom = HEIGHT - BOTTOM
    cumulative: list[float] = []
    total = 0.0
    for minute in minutes:
        total += _finite(minute.orders)
        cumulative.append(total)
    top_value = _nice_max(max([*cumulative, _finite(p90)]))
    y = _Scale(0, top_value, bottom, TOP)
    viewers_max = _nice_max(max(_finite(m.viewers) for m in minutes))
    y_viewers = _Scale(0, viewers_max, bottom, TOP)
    _frame(parts)
    _value_label(parts, LEFT - 4, TOP + 8, f"{top_value:g} orders", "end")
    _value_label(parts, WIDTH - RIGHT + 4, TOP + 8, f"{viewers_max:g} viewers", "start")
    band_top, band_bottom = y(p90), y(p10)
    parts.append(
        f'<rect class="fan-band" data-testid="live-forecast-band" x="{LEFT}"'
        f' y="{_num(band_top)}" width="{WIDTH - LEFT - RIGHT}"'
        f' height="{_num(max(band_bottom - band_top, 1))}"><title>'
        f"{escape(f'whole session: p10 {p10:.0f}, p90 {p90:.0f} orders')}</title></rect>"
    )
    parts.append(
        f'<line class="p50-dashed" x1="{LEFT}" y1="{_num(y(p50))}" x2="{WIDTH - RIGHT}"'
        f' y2="{_num(y(p50))}"><title>{escape(f"median {p50:.0f} orders")}</title></line>'
    )
    viewers = " ".join(
        f"{_num(x(i + 0.5))},{_num(y_viewers(m.viewers))}" for i, m in enumerate(minutes)
    )
    parts.append(f'<polyline class="line viewers" points="{viewers}"/>')
    orders = " ".join(f"{_num(x(i + 1))},{_num(y(c))}" for i, c in enumerate(cumulative))
    parts.append(
        f'<polyline class="line orders-cumulative" data-testid="live-orders" points="{orders}"/>'
    )
    for tick in range(0, int(span) + 1, max(5, int(span // 8) // 5 * 5 or 5)):
        _value_label(parts, x(tick), HEIGHT - 8, f"{tick} min", "middle")
    parts.append("</svg>")
    return Svg("".join(parts))
