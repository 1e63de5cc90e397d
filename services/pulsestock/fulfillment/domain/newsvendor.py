"""The newsvendor: one order for one selling window, under lost sales.

Underage `p` is the margin a missing unit loses; overage is what a unit left at the window's
end costs. The classic closed form (normal demand, linear overage `h`) orders the critical
ratio p / (p + h) quantile. Replenishment needs more than that: a leftover unit is not
always dead stock. While a baseline keeps selling after the window, a leftover unit waits
x / b hours for its turn (x units ahead of it, b units an hour), paying holding meanwhile,
until waiting costs more than writing it off at salvage. So the marginal overage is
`h_window + holding_per_hour * x / b` while that is below `unit_cost - salvage` and the
demand after the window (within a sell-through horizon: beyond it a trend product is dead
stock whatever holding costs) can absorb x, `h_window + unit_cost - salvage` after: near zero
for a steady seller (order generously), the full write-down once a pulse has little left
behind the window (order the pulse's critical ratio and no more). Demand comes as
quantiles (whatever the forecast gives) turned into a discrete distribution; the quantity
minimises the expected cost over candidates, so MOQ and case pack are chosen by cost too,
never by rounding alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

Array = NDArray[np.float64]


def critical_ratio(underage: float, overage: float) -> float:
    if underage < 0 or overage < 0 or underage + overage <= 0:
        raise ValueError("underage and overage costs must be non-negative, not both zero")
    return underage / (underage + overage)


def newsvendor_normal(
    mean: float, sd: float, underage: float, overage: float
) -> tuple[float, float]:
    """Order-up-to level and its expected cost for normal demand and linear costs."""
    if sd <= 0:
        return mean, 0.0
    z = float(stats.norm.ppf(critical_ratio(underage, overage)))
    return mean + sd * z, (underage + overage) * sd * float(stats.norm.pdf(z))


def level_weights(levels: Sequence[float]) -> Array:
    """Probability mass each quantile level stands for: the bins between the midpoints of
    neighbouring levels (and 0 and 1 at the ends)."""
    chosen = np.asarray(levels, dtype=np.float64)
    if chosen.ndim != 1 or chosen.size == 0 or np.any(np.diff(chosen) <= 0):
        raise ValueError("levels must be strictly increasing")
    edges = np.concatenate(([0.0], (chosen[1:] + chosen[:-1]) / 2, [1.0]))
    return np.diff(edges)


@dataclass(frozen=True)
class LeftoverCost:
    """Cost of x units left when the window ends: held through the window, then either
    sold from the demand after it (waiting their turn, at most `sell_through_hours`) or
    written down to salvage. `tail_units` is that later demand at each quantile level, so
    a leftover is judged in the same scenario as the shortfall: a small pulse leaves stock
    and little demand to absorb it, a big one neither (comonotone)."""

    window_holding: float  # per leftover unit: holding over the whole window
    holding_per_hour: float
    tail_units: Array  # demand in the sell-through horizon after the window, per level
    sell_through_hours: float
    write_down: float  # unit cost - salvage

    def absorbable(self) -> Array:
        """Leftover each scenario's tail sells before waiting costs more than writing off."""
        tail = np.maximum(np.asarray(self.tail_units, dtype=np.float64), 0.0)
        if self.holding_per_hour <= 0:
            return tail
        worth = self.write_down / (self.holding_per_hour * self.sell_through_hours)
        return tail * min(1.0, worth)

    def __call__(self, leftover: Array) -> Array:
        x = np.maximum(leftover, 0.0)
        tail = np.maximum(np.asarray(self.tail_units, dtype=np.float64), 0.0)
        inside = np.minimum(x, self.absorbable())
        # the i-th unit absorbed waits i / rate hours: holding * inside^2 / (2 rate) in all
        rate = np.maximum(tail / self.sell_through_hours, 1e-12)
        waiting = self.holding_per_hour / (2 * rate) * inside * inside
        return self.window_holding * x + waiting + self.write_down * (x - inside)


@dataclass(frozen=True)
class NewsvendorChoice:
    quantity: float
    expected_lost_margin: float
    expected_leftover_cost: float  # attributable to this order (above ordering nothing)
    service_probability: float  # P(need <= quantity)


def expected_costs(
    quantities: Array, need: Array, weights: Array, underage: float, leftover: LeftoverCost
) -> tuple[Array, Array]:
    """Expected lost margin and expected leftover cost of each candidate quantity."""
    gap = need[None, :] - quantities[:, None]
    lost = (np.maximum(gap, 0.0) * weights).sum(axis=1) * underage
    left = (leftover(-gap) * weights).sum(axis=1)
    return lost, left


def choose_quantity(
    need: Sequence[float] | Array,
    levels: Sequence[float],
    underage: float,
    leftover: LeftoverCost,
    *,
    moq: int = 0,
    case_pack: int = 1,
) -> NewsvendorChoice:
    """The whole number of units (0, or at least `moq` in multiples of `case_pack`) with
    the least expected cost, given quantiles `need` of the net demand at `levels`."""
    values = np.asarray(need, dtype=np.float64)
    weights = level_weights(levels)
    top = float(max(values.max(), 0.0))
    grid = np.unique(np.concatenate(([0.0], np.maximum(values, 0.0), np.linspace(0, top, 33))))
    lost, left = expected_costs(grid, values, weights, underage, leftover)
    best = float(grid[int(np.argmin(lost + left))])
    pack = max(case_pack, 1)
    lower = math.floor(best / pack) * pack
    floor_moq = math.ceil(moq / pack) * pack if moq > 0 else 0
    whole = {0.0, float(lower), float(lower + pack), float(max(floor_moq, pack if moq else 0))}
    candidates = np.array(sorted(q for q in whole if q == 0 or q >= max(moq, 1)))
    lost_c, left_c = expected_costs(candidates, values, weights, underage, leftover)
    total = lost_c + left_c
    pick = int(np.argmin(total))  # first minimum: the smaller quantity on ties
    quantity = float(candidates[pick])
    base_left = (
        float(left_c[0])
        if candidates[0] == 0
        else float(expected_costs(np.zeros(1), values, weights, underage, leftover)[1][0])
    )
    served = float(weights[values <= quantity].sum())
    return NewsvendorChoice(quantity, float(lost_c[pick]), float(left_c[pick]) - base_left, served)
