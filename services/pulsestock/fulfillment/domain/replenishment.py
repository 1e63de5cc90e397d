"""One replenishment review of one SKU: how much to order on each lead-time option now.

For each option the order can only serve demand from the bucket it lands in: its window is
[arrival, arrival + review period) (hourly reviews while a pulse is on, daily otherwise:
later demand is left to later orders, placed with better information). Net of the inventory
position that will be there by the window's end (on hand - committed - backordered + on
order landing before the window ends; later orders do not count as if here), with lost
sales before arrival: need = min(D[0, end) - position, D[arrival, end) - landing in
[arrival, end), less the backorders still open when it lands) per quantile level (units on
order that land inside the window serve it whatever happened before; stock on hand may be
gone by the time the order lands; backorders take the next stock that comes free) (demand
over nested windows is comonotone under a pulse: a big pulse is big in every window). The
quantity is the newsvendor's (newsvendor.py): this option's margin is the underage; a unit
left at the window's end waits for the demand after it (the same quantile level, within a
sell-through horizon) or is written down to salvage. So nothing is ordered when too little
of the pulse remains after arrival, and a pulse near its end is ordered at its critical
ratio (price - c) / (price - salvage) and no higher.

Several options (FULFILLMENT.md, dual sourcing): an option that is no faster and no cheaper
than another is dominated; a slower, cheaper option orders only while the probability that
stock is still needed when it lands is at least (c_fast - c_slow) / (c_fast - salvage); a
faster option's window then ends where the slower one lands (it tops up what the pulse
needs before then). Every decision carries its reasons. Pure: `now` and the forecast come in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from pulsestock.fulfillment.domain.master_data import LeadTimeOption, SkuEconomics
from pulsestock.fulfillment.domain.newsvendor import LeftoverCost, choose_quantity, level_weights

# Dense where critical ratios live (0.5-0.99): the expected-cost integral uses these bins.
REVIEW_LEVELS: tuple[float, ...] = (
    0.01, 0.03, 0.075, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.925, 0.97, 0.99,
)  # fmt: skip


class DemandOutlook(Protocol):
    """What replenishment asks of a forecast (steps are hours after now)."""

    def window_quantiles(
        self, start: int, end: int, levels: Sequence[float]
    ) -> Sequence[float] | NDArray[np.float64]: ...


@dataclass(frozen=True)
class StockPosition:
    on_hand: float
    committed: float = 0.0
    on_order: tuple[tuple[float, float], ...] = ()  # (hours until it lands, units)
    # Units owed to orders sold without stock: the ledger fills them, oldest first, from the
    # next stock that comes free, so they come before any demand still to come.
    backordered: float = 0.0

    def __post_init__(self) -> None:
        if self.on_hand < 0 or self.committed < 0 or self.backordered < 0:
            raise ValueError("on_hand, committed and backordered must not be negative")
        if any(units < 0 for _, units in self.on_order):
            raise ValueError("units on order must not be negative")

    def _arriving_before(self, hour: float) -> float:
        return sum(units for at, units in self.on_order if at < hour)

    def available_by(self, hour: float) -> float:
        """On hand - committed - backordered + what lands before `hour`."""
        return self.on_hand - self.committed - self.backordered + self._arriving_before(hour)

    def landing_between(self, start: float, end: float) -> float:
        """Units on order that land in [start, end), less the backorders still open by then
        (what lands fills them first): negative when those landing cannot fill them all, so
        an order landing then must fill the rest too."""
        landing = sum(units for at, units in self.on_order if start <= at < end)
        free_by_start = max(self.on_hand - self.committed, 0.0) + self._arriving_before(start)
        return landing - max(self.backordered - free_by_start, 0.0)


@dataclass(frozen=True)
class ReviewSettings:
    review_hours: int = 24
    # Leftovers the baseline cannot sell within this are dead stock (a trend SKU's shelf
    # life in the feed), however cheap holding them is.
    sell_through_hours: int = 21 * 24
    levels: tuple[float, ...] = REVIEW_LEVELS

    def __post_init__(self) -> None:
        if self.review_hours < 1 or self.sell_through_hours < 1:
            raise ValueError("review_hours and sell_through_hours must be at least 1")


@dataclass(frozen=True)
class OptionDecision:
    option: LeadTimeOption
    quantity: int
    window: tuple[int, int]  # hours after now: [arrival, end)
    position: float  # inventory position counted for the window
    levels: tuple[float, ...]
    need_quantiles: tuple[float, ...]  # net demand the order can serve, at `levels`
    expected_lost_margin: float
    expected_leftover_cost: float
    reason: str


@dataclass(frozen=True)
class Recommendation:
    sku: str
    now: datetime | int
    decisions: tuple[OptionDecision, ...]

    @property
    def orders(self) -> list[tuple[LeadTimeOption, int]]:
        return [(d.option, d.quantity) for d in self.decisions if d.quantity > 0]

    @property
    def chosen(self) -> OptionDecision | None:
        """The decision with the most units (the option chosen over the others)."""
        ordering = [d for d in self.decisions if d.quantity > 0]
        return max(ordering, key=lambda d: d.quantity) if ordering else None


def dominated_by(option: LeadTimeOption, others: Sequence[LeadTimeOption]) -> LeadTimeOption | None:
    """Another option landing no later for no more (and better on one of them)."""
    for other in others:
        if other is option:
            continue
        no_worse = (
            other.arrival_hours <= option.arrival_hours and other.unit_cost <= option.unit_cost
        )
        better = other.arrival_hours < option.arrival_hours or other.unit_cost < option.unit_cost
        if no_worse and better:
            return other
    return None


def _need(
    outlook: DemandOutlook,
    start: int,
    end: int,
    position: float,
    levels: Sequence[float],
    landing: float = 0.0,
) -> np.ndarray:
    """Net demand an order landing at `start` can serve in [start, end): what the position
    by `end` leaves uncovered of all demand up to `end`, and at most the window's own demand
    less what lands inside the window (with lost sales, stock on hand may be sold out before
    `start`, but an order landing in the window is there for it)."""
    total = np.asarray(outlook.window_quantiles(0, end, levels), dtype=np.float64)
    window = np.asarray(outlook.window_quantiles(start, end, levels), dtype=np.float64)
    return np.minimum(total - position, window - landing)


def review(
    economics: SkuEconomics,
    options: Sequence[LeadTimeOption],
    outlook: DemandOutlook,
    position: StockPosition,
    now: datetime | int,
    settings: ReviewSettings = ReviewSettings(),
) -> Recommendation:
    """Decide every option's quantity for this review (see the module docstring)."""
    if not options:
        raise ValueError("a review needs at least one lead-time option")
    levels = settings.levels
    review_hours = settings.review_hours
    holding = economics.holding_per_unit_hour
    decided: dict[int, OptionDecision] = {}

    live = [o for o in options if dominated_by(o, options) is None]
    for option in options:
        if option not in live:
            better = dominated_by(option, options)
            assert better is not None
            decided[id(option)] = _nothing(
                option, levels, f"dominated by {better.label}: lands no later for no more"
            )
    live.sort(key=lambda o: (o.arrival_hours, o.unit_cost))

    def natural_end(option: LeadTimeOption) -> int:
        return option.arrival_hours + review_hours

    # Dual sourcing: a slower, cheaper option orders only while stock is likely still
    # needed when it lands, judged against the cheapest faster option.
    viable: list[LeadTimeOption] = []
    for index, option in enumerate(live):
        faster = live[:index]
        if not faster:
            viable.append(option)
            continue
        fast = min(faster, key=lambda o: o.unit_cost)
        threshold = (fast.unit_cost - option.unit_cost) / (fast.unit_cost - economics.salvage)
        start, end = option.arrival_hours, natural_end(option)
        need = _need(
            outlook,
            start,
            end,
            position.available_by(end),
            levels,
            position.landing_between(start, end),
        )
        still_needed = float(level_weights(levels)[need > 0].sum())
        if still_needed >= threshold:
            viable.append(option)
        else:
            decided[id(option)] = _nothing(
                option,
                levels,
                f"stock likely not needed when it lands (P={still_needed:.2f} < "
                f"{threshold:.2f} = (c_{fast.mode} - c_{option.mode}) / (c_{fast.mode} - salvage));"
                f" {fast.label} covers it",
            )

    ordered: list[tuple[float, float]] = []  # this review's earlier (faster) orders
    for index, option in enumerate(viable):
        start = option.arrival_hours
        end = natural_end(option)
        slower = viable[index + 1] if index + 1 < len(viable) else None
        if slower is not None and slower.arrival_hours > start:
            end = max(start + 1, min(end, slower.arrival_hours))
        held = position.available_by(end) + sum(u for at, u in ordered if at < end)
        landing = position.landing_between(start, end) + sum(
            u for at, u in ordered if start <= at < end
        )
        need = _need(outlook, start, end, held, levels, landing)
        margin = economics.price - option.unit_cost
        window_hours = end - start
        # Units sold inside the window wait half of it on average.
        underage = max(margin - holding * window_hours / 2, 0.0)
        tail = outlook.window_quantiles(end, end + settings.sell_through_hours, levels)
        leftover = LeftoverCost(
            window_holding=holding * window_hours,
            holding_per_hour=holding,
            tail_units=np.asarray(tail, dtype=np.float64),
            sell_through_hours=settings.sell_through_hours,
            write_down=max(option.unit_cost - economics.salvage, 0.0),
        )
        choice = choose_quantity(
            need, levels, underage, leftover, moq=option.moq, case_pack=option.case_pack
        )
        quantity = round(choice.quantity)
        if quantity > 0:
            ordered.append((float(start), float(quantity)))
            reason = (
                f"covers [{start}, {end}) h: P(enough)={choice.service_probability:.2f}, "
                f"lost margin {choice.expected_lost_margin:.2f} vs leftover cost "
                f"{choice.expected_leftover_cost:.2f}"
            )
            if slower is not None and end == slower.arrival_hours:
                reason += f"; tops up until {slower.label} lands"
            faster_live = [o for o in viable[:index]]
            if faster_live:
                reason += f"; cheaper than {', '.join(o.label for o in faster_live)}"
        elif float(need.max(initial=0.0)) <= 0:
            reason = f"nothing needed in [{start}, {end}) h beyond the position"
        elif option.moq > 0 and float(need.max()) < option.moq:
            reason = f"too little demand left after arrival for the MOQ of {option.moq}"
        else:
            reason = "expected leftover cost outweighs the lost margin after arrival"
        decided[id(option)] = OptionDecision(
            option=option,
            quantity=quantity,
            window=(start, end),
            position=float(held),
            levels=tuple(levels),
            need_quantiles=tuple(float(v) for v in need),
            expected_lost_margin=choice.expected_lost_margin,
            expected_leftover_cost=choice.expected_leftover_cost,
            reason=reason,
        )
    return Recommendation(economics.sku, now, tuple(decided[id(o)] for o in options))


def _nothing(option: LeadTimeOption, levels: Sequence[float], reason: str) -> OptionDecision:
    start = option.arrival_hours
    return OptionDecision(option, 0, (start, start), 0.0, tuple(levels), (), 0.0, 0.0, reason)
