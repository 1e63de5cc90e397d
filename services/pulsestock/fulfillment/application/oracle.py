"""The hindsight optimum: the most profit any ordering could have made on one seed's
realised demand and lead times, as a linear programme solved by HiGHS.

Variables: units ordered on each option at the end of each hour (landing after that order's
realised lead time), units sold each hour (at most the demand), stock at the end of each
hour. Stock balance: stock[t] = stock[t-1] + landed[t] - sold[t], stock >= 0. Profit: price x
sold - cost x ordered - holding x stock + salvage x stock left at the end (units landing
after the horizon fetch salvage). The simulator books the same costs, and MOQ and case pack
are relaxed here, so the optimum bounds every policy's profit on the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pulsestock.fulfillment.domain.master_data import LeadTimeOption, SkuEconomics
from scipy import optimize, sparse

Series = NDArray[np.float64]


@dataclass(frozen=True)
class OracleSolution:
    profit: float
    orders: NDArray[np.float64]  # (options, hours)
    sold: Series
    stock: Series


def solve_oracle(
    economics: SkuEconomics,
    options: Sequence[LeadTimeOption],
    demand: Series,
    lead_hours: NDArray[np.int64],  # (options, hours): realised lead of an order placed then
    initial_stock: float,
) -> OracleSolution:
    hours = demand.size
    n_options = len(options)
    n_orders = n_options * hours
    n_vars = n_orders + 2 * hours  # orders, sold, stock
    sold0, stock0 = n_orders, n_orders + hours
    holding = economics.holding_per_unit_hour
    cost = np.zeros(n_vars)
    arrival = np.arange(hours)[None, :] + lead_hours
    for index, option in enumerate(options):
        late = arrival[index] >= hours
        # an order landing after the horizon is only ever worth its salvage
        cost[index * hours : (index + 1) * hours] = option.unit_cost - np.where(
            late, economics.salvage, 0.0
        )
    cost[sold0:stock0] = -economics.price
    cost[stock0:] = holding
    cost[stock0 + hours - 1] -= economics.salvage
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    # stock[t] - stock[t-1] + sold[t] - landed[t] = initial (t = 0) or 0
    t = np.arange(hours)
    rows += [t, t, t[1:]]
    cols += [stock0 + t, sold0 + t, stock0 + t[1:] - 1]
    vals += [np.ones(hours), np.ones(hours), -np.ones(hours - 1)]
    for index in range(n_options):
        landing = arrival[index]
        inside = landing < hours
        rows.append(landing[inside])
        cols.append(index * hours + t[inside])
        vals.append(-np.ones(int(inside.sum())))
    matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(hours, n_vars),
    )
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
    x = result.x
    return OracleSolution(
        float(-result.fun),
        x[:n_orders].reshape(n_options, hours),
        x[sold0:stock0],
        x[stock0:],
    )
