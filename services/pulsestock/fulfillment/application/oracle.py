"""The hindsight optimum: the most profit any ordering could have made on one seed's
realised demand and lead times, as a mixed-integer programme solved by HiGHS
(scipy.optimize.milp), with its linear relaxation as a bound.

Decisions: an order on an option may be placed at each decision hour (`decision_hours`:
the simulator passes every hour a policy reviews at least daily, hour 23 of each day, and
every hour of a pulse from two days before its onset to its end, when ours reviews hourly);
it lands after that option's lead time as realised for that hour. Orders on one option
landing in the same hour are interchangeable (same cost, same units), so there is one
variable per (option, arrival hour): the number of cases, semi-integer (0, or at least the
cases the MOQ needs), so units = case pack x cases respect both MOQ and case pack. An
order landing after the horizon, or when no demand is left, only loses money (every unit
cost is above salvage) and has no variable.

Stock balance: stock only rises when an order lands, so it is kept per block of hours
between possible landings (a few hundred rows instead of one per hour): the block's sales
are at most its demand and its end stock is >= 0, which is exact for lost sales; holding
is L x end stock + the hours each unit sold waited inside the block, exact unless the block
runs out. The plan found is then booked hour by hour (`book`: each hour sells what stock
allows, price x sold - cost x ordered - holding x stock + salvage x what is left at the end,
as the simulator books a policy), so the profit reported is the plan's own.

Bounds: `solve_relaxed` drops MOQ and case pack and allows an order at every hour, so no
policy can beat it (the previous oracle, and `pulsestock simulate --oracle lp`). HiGHS stops
the MILP at a relative gap of MIP_REL_GAP or after NODE_LIMIT branch-and-bound nodes (a
work limit, so the answer does not depend on the machine's speed or load: serial and
parallel runs agree), with TIME_LIMIT_S as a last resort; the solution carries its status
and its gap to the MILP's dual bound. Measured on the shipped 90-day scenarios (2 cores):
2-15 s a solve, most of it HiGHS's root cuts; the incumbent found at the root is within
0.2-1.4 % of the dual bound and 0.3-2 % of the LP bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pulsestock.fulfillment.domain.master_data import LeadTimeOption, SkuEconomics
from scipy import optimize, sparse

Series = NDArray[np.float64]
MIP_REL_GAP = 1e-3
NODE_LIMIT = 1
TIME_LIMIT_S = 30.0
PULSE_LEAD_HOURS = 48  # hourly decisions start this long before a pulse's onset


@dataclass(frozen=True)
class OracleSolution:
    profit: float  # of the plan found (booked as the simulator books it)
    orders: NDArray[np.float64]  # (options, hours): units placed at each hour
    sold: Series
    stock: Series
    bound: float  # no plan can make more (the MILP's dual bound, or the LP's)
    status: str  # "optimal" (within MIP_REL_GAP), "node-limit", "time-limit", "lp"
    mip_gap: float  # (bound - profit) / |bound|


def decision_hours(hours: int, pulse_windows: Sequence[tuple[int, int, int]]) -> NDArray[np.int64]:
    """Hour 23 of every day (the daily reviews) and every hour from PULSE_LEAD_HOURS before
    each pulse's onset to its end (ours reviews hourly then)."""
    chosen = np.zeros(hours, dtype=bool)
    chosen[23::24] = True
    chosen[0] = True  # an empty start can order at once
    for onset, _, end in pulse_windows:
        chosen[max(onset - PULSE_LEAD_HOURS, 0) : min(end, hours - 1) + 1] = True
    return np.flatnonzero(chosen)


def _remaining(demand: Series) -> Series:
    """Demand from each hour to the end (index `hours` included: nothing)."""
    return np.concatenate([np.cumsum(demand[::-1])[::-1], [0.0]])


def _balance(
    hours: int, first_stock: int, first_sold: int, landing_rows: NDArray[np.int64],
    landing_cols: NDArray[np.int64], landing_units: Series, n_vars: int,
) -> sparse.csr_matrix:  # fmt: skip
    """Rows t: stock[t] - stock[t-1] + sold[t] - landed[t] (= initial stock at t = 0)."""
    t = np.arange(hours)
    rows = np.concatenate([t, t, t[1:], landing_rows])
    cols = np.concatenate([first_stock + t, first_sold + t, first_stock + t[1:] - 1, landing_cols])
    vals = np.concatenate([np.ones(hours), np.ones(hours), -np.ones(hours - 1), -landing_units])
    return sparse.csr_matrix((vals, (rows, cols)), shape=(hours, n_vars))


def solve_oracle(
    economics: SkuEconomics,
    options: Sequence[LeadTimeOption],
    demand: Series,
    lead_hours: NDArray[np.int64],  # (options, hours): realised lead of an order placed then
    initial_stock: float,
    decisions: NDArray[np.int64] | None = None,
) -> OracleSolution:
    """The MILP over `decisions` (every hour by default); the plan is booked by `book`."""
    hours = demand.size
    placed = np.arange(hours) if decisions is None else np.asarray(decisions, dtype=np.int64)
    remaining = _remaining(demand)
    option_of: list[int] = []
    arrival_of: list[int] = []
    placed_at: list[int] = []
    for index in range(len(options)):
        arrivals = placed + lead_hours[index, placed]
        useful = (arrivals < hours) & (remaining[np.minimum(arrivals, hours)] > 0)
        # the first placement landing at each hour stands for all of them
        landing, first = np.unique(arrivals[useful], return_index=True)
        option_of += [index] * landing.size
        arrival_of += landing.tolist()
        placed_at += placed[useful][first].tolist()
    option_idx = np.asarray(option_of, dtype=np.int64)
    arrival = np.asarray(arrival_of, dtype=np.int64)
    n_orders = option_idx.size
    # Stock only rises when an order lands, so the balance is kept per block of hours
    # between landings: within a block sales take what stock allows (sold <= the block's
    # demand, stock >= 0 at its end is exact for lost sales), and its holding is
    # L x end stock + the hours each unit sold waited in the block (exact unless the block
    # runs out; `book` charges the exact cost of the plan).
    starts = np.unique(np.concatenate([[0], arrival]))
    blocks = starts.size
    block_of_hour = np.searchsorted(starts, np.arange(hours), side="right") - 1
    block_demand = np.bincount(block_of_hour, weights=demand, minlength=blocks)
    offset = np.arange(hours) - starts[block_of_hour]
    waited = np.bincount(block_of_hour, weights=demand * offset, minlength=blocks)
    wait_per_unit = np.divide(waited, block_demand, out=np.zeros(blocks), where=block_demand > 0)
    length = np.diff(np.concatenate([starts, [hours]])).astype(np.float64)
    case = np.array([float(options[i].case_pack) for i in option_idx])
    min_cases = np.array(
        [max(math.ceil(options[i].moq / options[i].case_pack), 1) for i in option_idx],
        dtype=np.float64,
    )
    unit_cost = np.array([options[i].unit_cost for i in option_idx])
    max_cases = np.maximum(np.ceil(remaining[arrival] / case), min_cases)
    sold0, stock0 = n_orders, n_orders + blocks
    n_vars = n_orders + 2 * blocks
    holding = economics.holding_per_unit_hour
    cost = np.zeros(n_vars)
    cost[:n_orders] = unit_cost * case
    cost[sold0:stock0] = -economics.price + holding * wait_per_unit
    cost[stock0:] = holding * length
    cost[stock0 + blocks - 1] -= economics.salvage
    matrix = _balance(
        blocks, stock0, sold0, np.searchsorted(starts, arrival), np.arange(n_orders), case, n_vars
    )
    rhs = np.zeros(blocks)
    rhs[0] = initial_stock
    lower = np.zeros(n_vars)
    upper = np.full(n_vars, np.inf)
    lower[:n_orders] = min_cases  # semi-integer: 0 or within [lower, upper]
    upper[:n_orders] = max_cases
    upper[sold0:stock0] = block_demand
    integrality = np.zeros(n_vars)
    integrality[:n_orders] = 3
    result = optimize.milp(
        cost,
        integrality=integrality,
        bounds=optimize.Bounds(lower, upper),
        constraints=optimize.LinearConstraint(matrix, rhs, rhs),
        options={"mip_rel_gap": MIP_REL_GAP, "node_limit": NODE_LIMIT, "time_limit": TIME_LIMIT_S},
    )
    if result.x is None:
        raise RuntimeError(f"the oracle MILP found no plan: {result.message}")
    cases = np.rint(result.x[:n_orders])
    orders = np.zeros((len(options), hours))
    np.add.at(orders, (option_idx, np.asarray(placed_at, dtype=np.int64)), cases * case)
    sold, stock, profit = book(economics, options, orders, demand, lead_hours, initial_stock)
    bound = -float(result.mip_dual_bound) if result.mip_dual_bound is not None else math.inf
    bound = max(bound, profit)
    if result.status == 0:
        status = "optimal"
    elif "time" in str(result.message).lower():
        status = "time-limit"
    else:
        status = "node-limit"
    gap = (bound - profit) / abs(bound) if bound not in (0.0, math.inf) else 0.0
    return OracleSolution(profit, orders, sold, stock, bound, status, gap)


def book(
    economics: SkuEconomics,
    options: Sequence[LeadTimeOption],
    orders: NDArray[np.float64],  # (options, hours): units placed at each hour
    demand: Series,
    lead_hours: NDArray[np.int64],
    initial_stock: float,
) -> tuple[Series, Series, float]:
    """Replay a plan with lost sales (each hour sells what stock allows): sold, stock at the
    end of each hour and profit, booked as the simulator books them (units landing after
    the horizon fetch salvage)."""
    hours = demand.size
    landing = np.zeros(hours + 1)  # the last bucket: landing after the horizon
    purchases = 0.0
    for index, option in enumerate(options):
        placed = np.flatnonzero(orders[index])
        units = orders[index, placed]
        arrivals = np.minimum(placed + lead_hours[index, placed], hours)
        np.add.at(landing, arrivals, units)
        purchases += float(units.sum()) * option.unit_cost
    sold = np.zeros(hours)
    stock = np.zeros(hours)
    on_hand = initial_stock
    for t in range(hours):
        on_hand += float(landing[t])
        sale = min(on_hand, float(demand[t]))
        on_hand -= sale
        sold[t] = sale
        stock[t] = on_hand
    profit = (
        float(sold.sum()) * economics.price
        - purchases
        - float(stock.sum()) * economics.holding_per_unit_hour
        + (on_hand + float(landing[hours])) * economics.salvage
    )
    return sold, stock, profit


def solve_relaxed(
    economics: SkuEconomics,
    options: Sequence[LeadTimeOption],
    demand: Series,
    lead_hours: NDArray[np.int64],
    initial_stock: float,
) -> OracleSolution:
    """The LP bound: orders at every hour, MOQ and case pack dropped (HiGHS); its plan is
    the relaxed one (fractional units), booked as any other."""
    hours = demand.size
    remaining = _remaining(demand)
    arrivals = np.arange(hours)[None, :] + lead_hours
    option_idx, placed = np.nonzero(
        (arrivals < hours) & (remaining[np.minimum(arrivals, hours)] > 0)
    )
    arrival = arrivals[option_idx, placed]
    n_orders = option_idx.size
    sold0, stock0 = n_orders, n_orders + hours
    n_vars = n_orders + 2 * hours
    cost = np.zeros(n_vars)
    cost[:n_orders] = np.array([o.unit_cost for o in options])[option_idx]
    cost[sold0:stock0] = -economics.price
    cost[stock0:] = economics.holding_per_unit_hour
    cost[stock0 + hours - 1] -= economics.salvage
    matrix = _balance(hours, stock0, sold0, arrival, np.arange(n_orders), np.ones(n_orders), n_vars)
    rhs = np.zeros(hours)
    rhs[0] = initial_stock
    upper = np.full(n_vars, np.inf)
    upper[sold0:stock0] = demand
    result = optimize.linprog(
        cost,
        A_eq=matrix,
        b_eq=rhs,
        bounds=np.stack([np.zeros(n_vars), upper], axis=1),
        method="highs",
    )
    if not result.success:
        raise RuntimeError(f"the oracle LP failed: {result.message}")
    orders = np.zeros((len(options), hours))
    np.add.at(orders, (option_idx, placed), np.maximum(result.x[:n_orders], 0.0))
    sold, stock, profit = book(economics, options, orders, demand, lead_hours, initial_stock)
    bound = max(-float(result.fun), profit)
    return OracleSolution(profit, orders, sold, stock, bound, "lp", 0.0)
