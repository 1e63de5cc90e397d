"""How `pulsestock simulate` shows its results: a terminal table (mean and 95 % interval
over seeds per policy, then ours minus each other policy) and one self-contained HTML page
(inline SVG, no external assets) with stock, demand, orders and arrivals over time."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pulsestock.fulfillment.application.simulator import METRICS, Trace

TABLE_METRICS = (
    ("fill_rate", "fill", "{:.3f}"),
    ("pulse_fill_rate", "pulse fill", "{:.3f}"),
    ("lost_units", "lost u", "{:.0f}"),
    ("leftover_units_14d", "left 14d u", "{:.0f}"),
    ("holding_cost", "holding", "{:.0f}"),
    ("capital_peak", "cap peak", "{:.0f}"),
    ("expedite_spend", "expedite", "{:.0f}"),
    ("stockout_hours_at_peak", "out@peak h", "{:.1f}"),
    ("late_share", "late", "{:.2f}"),
    ("profit", "profit", "{:.0f}"),
    ("oracle_profit_share", "of oracle", "{:.3f}"),
)


def _fmt(pattern: str, value: float) -> str:
    return "nan" if not math.isfinite(value) else pattern.format(value)


def table(summary: dict[str, Any]) -> str:
    """Per policy: the mean over seeds; below, ours minus each policy with its 95 % CI."""
    seeds = len(summary["seeds"])
    lines = [f"scenario {summary['scenario']}: {seeds} seeds (mean over seeds)"]
    width = 12
    header = "policy".ljust(18) + "".join(label.rjust(width) for _, label, _ in TABLE_METRICS)
    lines += [header, "-" * len(header)]
    for name, entry in summary["policies"].items():
        cells = [
            _fmt(pattern, entry["aggregate"][metric]["mean"]).rjust(width)
            for metric, _, pattern in TABLE_METRICS
        ]
        lines.append(name.ljust(18) + "".join(cells))
    lines += _oracle_lines(summary.get("oracle"))
    if summary["differences"]:
        lines += ["", f"{summary['ours']} minus each policy: mean [95 % CI], paired over seeds"]
        shown = ("lost_units", "leftover_units_14d", "profit", "fill_rate", "holding_cost")
        lines.append("policy".ljust(18) + "".join(m.rjust(28) for m in shown))
        for name, diffs in summary["differences"].items():
            cells = []
            for metric in shown:
                d = diffs[metric]
                low, high = d["ci95"]
                digits = 3 if metric == "fill_rate" else 0
                text = f"{d['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
                cells.append(text.rjust(28))
            lines.append(name.ljust(18) + "".join(cells))
    return "\n".join(lines)


def _oracle_lines(oracle: dict[str, Any] | None) -> list[str]:
    """What the oracle is and how close its plan is to the bounds."""
    if not oracle:
        return []
    aggregate = oracle["aggregate"]
    lp_gap = aggregate["lp_gap"]
    if oracle["kind"] == "lp":
        return ["oracle: LP relaxation (MOQ and case pack dropped, orders at any hour): a bound"]
    statuses = ", ".join(f"{name} {count}" for name, count in sorted(aggregate["statuses"].items()))
    mip_gap = aggregate["mip_gap"]
    return [
        f"oracle: MILP, MOQ and case pack respected ({statuses}); gap to its dual bound "
        f"mean {_fmt('{:.2%}', mip_gap['mean'])} (max {_fmt('{:.2%}', mip_gap['max'])}), "
        f"to the LP bound mean {_fmt('{:.2%}', lp_gap['mean'])} "
        f"(max {_fmt('{:.2%}', lp_gap['max'])})"
    ]


COLOURS = {
    "pulsestock": "#d62728",
    "pulsestock-blind": "#ff7f0e",
    "weekly-rop": "#1f77b4",
    "min-max": "#9467bd",
    "ddmrp": "#8c564b",
    "base-stock": "#7f7f7f",
    "oracle": "#2ca02c",
}


def _polyline(values: NDArray[np.float64], top: float, width: float, height: float) -> str:
    if values.size == 0:
        return ""
    xs = np.linspace(0, width, values.size)
    ys = height - values / max(top, 1e-9) * height
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def _panel(title: str, series: dict[str, NDArray[np.float64]], hours: int) -> str:
    width, height, pad = 900.0, 180.0, 40.0
    top = max((float(v.max()) for v in series.values() if v.size), default=1.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 2 * pad:.0f}" '
        f'height="{height + 2 * pad:.0f}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{pad}" y="{pad - 18}" font-size="14" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<g transform="translate({pad},{pad})">',
        f'<rect width="{width}" height="{height}" fill="none" stroke="#ccc"/>',
        f'<text x="-4" y="8" font-size="10" text-anchor="end">{top:.0f}</text>',
        f'<text x="-4" y="{height}" font-size="10" text-anchor="end">0</text>',
        f'<text x="{width}" y="{height + 14}" font-size="10" text-anchor="end">hour {hours}</text>',
    ]
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS.get(name, "#000")
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" '
            f'points="{_polyline(values, top, width, height)}"/>'
        )
        parts.append(
            f'<text x="{width - 4}" y="{14 + 12 * index}" font-size="10" text-anchor="end" '
            f'fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append("</g></svg>")
    return "".join(parts)


def _daily(values: NDArray[np.float64]) -> NDArray[np.float64]:
    days = values.size // 24
    if days == 0:
        return values
    return np.asarray(values[: days * 24].reshape(days, 24).sum(axis=1), dtype=np.float64)


def html_page(summary: dict[str, Any], trace: Trace | None, policies: Sequence[str]) -> str:
    """One self-contained page: the table, then stock / demand / orders / arrivals of the
    traced seed (orders and arrivals per day, so they stay readable)."""
    body = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>pulsestock simulate: {html.escape(summary['scenario'])}</title>",
        "<style>body{font-family:sans-serif;margin:24px}pre{font-size:12px}</style>",
        "</head><body>",
        f"<h1>Policy simulation: {html.escape(summary['scenario'])}</h1>",
        f"<pre>{html.escape(table(summary))}</pre>",
    ]
    if trace is not None:
        hours = trace.demand.size
        body.append(f"<h2>Seed {summary['seeds'][0]} over time</h2>")
        body.append(_panel("demand (units per hour)", {"demand": trace.demand}, hours))
        stock = {name: trace.stock[name] for name in policies if name in trace.stock}
        body.append(_panel("stock on hand (units)", stock, hours))
        ordered = {name: _daily(trace.ordered[name]) for name in policies if name in trace.ordered}
        body.append(_panel("units ordered per day", ordered, hours))
        landed = {name: _daily(trace.landed[name]) for name in policies if name in trace.landed}
        body.append(_panel("units arriving per day", landed, hours))
    body.append(f"<p>Metrics: {', '.join(METRICS)}.</p></body></html>")
    return "\n".join(body)
