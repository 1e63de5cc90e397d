"""The policy simulator behind `pulsestock simulate`.

Hour by hour on a simulated clock, per SKU: what lands this hour is stocked, the hour's
demand sells what stock allows and the rest is lost (no backorders), then each policy sees
the history (demand, heat) and its stock and places orders on lead-time options; an order
lands after that option's lead time as realised for that hour. Every policy in a seed faces
the same demand, heat and lead-time draws (common random numbers), so differences between
policies are paired across seeds. The oracle (oracle.py) plans on the same draws with
hindsight: `oracle="milp"` is the hindsight optimum respecting MOQ and case pack (HiGHS
MILP; 2-15 s a seed over 90 days), `oracle="lp"` (the default, 0.05 s) its relaxation, an
upper bound; every seed reports both the plan's profit and the LP bound (OracleFigures).

Speed: seeds run in a process pool (one worker per CPU by default); a seed's numbers depend
on the seed alone, so the pool gives the serial run's numbers. Ours reviews hourly only
while a pulse is on and daily otherwise (the service's cadence), and caches what does not
change between reviews (the baseline's window quantiles while it is kept, the spike level).

Simplified this round: the warehouses of a scenario are one pooled stock (no routing, no
transfers; lanes and region shares are validated but not simulated), and every supplier
option supplies every SKU.

Metrics per policy and seed (sums over the scenario's SKUs):
fill_rate, pulse_fill_rate (hours from a pulse's onset to its end), lost_units,
lost_revenue, leftover_units_14d / leftover_value_14d (on hand + in transit, at unit cost,
14 days after the last pulse ends, or at the end without pulses), holding_cost,
capital_peak / capital_mean (on hand + in transit at unit cost), expedite_spend (premium
over the cheapest option), stockout_hours_at_peak (hours with lost sales while the pulse is
at least half its peak), late_share (of units ordered during a pulse, the share landing
after its peak is over, i.e. after the pulse fell below half its peak), profit
(revenue - purchases - holding + salvage of what is left at the end), oracle_profit_share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pulsestock.fulfillment.application.oracle import (
    OracleSolution,
    decision_hours,
    solve_oracle,
    solve_relaxed,
)
from pulsestock.fulfillment.application.policies import (
    POLICY_NAMES,
    Observation,
    cheapest,
    make_policy,
)
from pulsestock.fulfillment.application.scenario import Scenario, SkuWorld, realise
from pulsestock.fulfillment.domain.master_data import LeadTimeOption, SkuEconomics
from scipy import stats

Series = NDArray[np.float64]
OURS = "pulsestock"
METRICS = (
    "fill_rate",
    "pulse_fill_rate",
    "lost_units",
    "lost_revenue",
    "leftover_units_14d",
    "leftover_value_14d",
    "holding_cost",
    "capital_peak",
    "capital_mean",
    "expedite_spend",
    "stockout_hours_at_peak",
    "late_share",
    "profit",
    "oracle_profit_share",
)
LEFTOVER_DAYS = 14


@dataclass(frozen=True)
class Order:
    placed: int
    option: int
    units: float
    arrival: int


@dataclass
class Run:
    """One policy on one SKU and seed: the hour-by-hour record."""

    sold: Series
    stock: Series  # on hand at the end of each hour
    orders: list[Order]


@dataclass
class Trace:
    """What the HTML plot draws for one seed, summed over SKUs."""

    demand: Series
    stock: dict[str, Series] = field(default_factory=dict)
    ordered: dict[str, Series] = field(default_factory=dict)
    landed: dict[str, Series] = field(default_factory=dict)


def lead_draws(scenario: Scenario, sku_index: int, seed: int) -> NDArray[np.int64]:
    """Realised lead time (whole hours, at least 1) of an order placed in each hour."""
    rng = np.random.default_rng([seed, sku_index, 11])
    z = rng.standard_normal((len(scenario.options), scenario.hours))
    means = np.array([o.lead_time_mean_hours for o in scenario.options])[:, None]
    sds = np.array([o.lead_time_sd_hours for o in scenario.options])[:, None]
    return np.maximum(1, np.rint(means + sds * z)).astype(np.int64)


def run_policy(
    name: str,
    scenario: Scenario,
    sku_index: int,
    world: SkuWorld,
    leads: NDArray[np.int64],
    seed: int,
) -> Run:
    spec = scenario.skus[sku_index]
    policy = make_policy(name, spec.economics, scenario.options, seed)
    hours = scenario.hours
    demand_all = np.concatenate([world.history, world.demand])
    heat_all = np.concatenate([world.history_heat, world.heat])
    warm = world.history.size
    landing = np.zeros(hours + int(leads.max()) + 2)
    on_hand = float(sum(spec.initial_stock.values()))
    on_order: list[tuple[int, float]] = []
    sold = np.zeros(hours)
    stock = np.zeros(hours)
    orders: list[Order] = []
    for hour in range(hours):
        if landing[hour]:
            on_hand += landing[hour]
            on_order = [entry for entry in on_order if entry[0] > hour]
        sale = min(on_hand, float(world.demand[hour]))
        on_hand -= sale
        sold[hour] = sale
        stock[hour] = on_hand
        seen = Observation(
            hour, demand_all[: warm + hour + 1], heat_all[: warm + hour + 1], on_hand, on_order
        )
        for option, units in policy.act(seen):
            if units <= 0:
                continue
            arrival = hour + int(leads[option, hour])
            landing[arrival] += units
            on_order.append((arrival, float(units)))
            orders.append(Order(hour, option, float(units), arrival))
    return Run(sold, stock, orders)


ORACLE_KINDS = ("milp", "lp")


@dataclass(frozen=True)
class OracleFigures:
    """How good the seed's oracle is: its plan's profit, the LP bound (orders at any hour,
    MOQ and case pack dropped: no policy can beat it), the MILP's own dual bound over its
    decision hours, its status and gap, summed over SKUs."""

    profit: float
    lp_bound: float
    mip_bound: float
    status: str  # the worst over SKUs: optimal < node-limit < time-limit; "lp" for --oracle lp
    mip_gap: float  # (mip_bound - profit) / |mip_bound|
    lp_gap: float  # (lp_bound - profit) / |lp_bound|: the most the plan can miss by


def oracle_run(
    scenario: Scenario,
    sku_index: int,
    world: SkuWorld,
    leads: NDArray[np.int64],
    kind: str = "lp",
) -> tuple[Run, OracleSolution, float]:
    """The oracle's plan on one SKU (as a Run), its solution, and the LP bound."""
    spec = scenario.skus[sku_index]
    initial = float(sum(spec.initial_stock.values()))
    relaxed = solve_relaxed(spec.economics, scenario.options, world.demand, leads, initial)
    if kind == "lp":
        solution = relaxed
    else:
        solution = solve_oracle(
            spec.economics,
            scenario.options,
            world.demand,
            leads,
            initial,
            decision_hours(scenario.hours, world.pulse_windows),
        )
    orders = [
        Order(int(hour), int(option), float(units), int(hour + leads[option, hour]))
        for option, hour in zip(*np.nonzero(solution.orders > 1e-9), strict=True)
        for units in [solution.orders[option, hour]]
    ]
    return Run(solution.sold, solution.stock, orders), solution, relaxed.bound


def _in_transit(orders: Sequence[Order], hours: int) -> Series:
    """Units ordered but not landed at the end of each hour."""
    change = np.zeros(hours + 1)
    for order in orders:
        if order.placed < hours:
            change[order.placed] += order.units
            change[min(order.arrival, hours)] -= order.units
    return np.cumsum(change)[:hours]


def pulse_hours(world: SkuWorld, hours: int) -> tuple[NDArray[np.bool_], NDArray[np.bool_], int]:
    """Hours inside a pulse, hours at its peak, and the hour leftovers are counted at
    (LEFTOVER_DAYS after the last pulse ends, or the last hour without pulses)."""
    in_pulse = np.zeros(hours, dtype=bool)
    at_peak = np.zeros(hours, dtype=bool)
    for onset, _, end in world.pulse_windows:
        in_pulse[onset : end + 1] = True
    for start, end in world.peak_windows:
        at_peak[max(start, 0) : end + 1] = True
    if world.pulse_windows:
        check = min(max(end for _, _, end in world.pulse_windows) + LEFTOVER_DAYS * 24, hours - 1)
    else:
        check = hours - 1
    return in_pulse, at_peak, check


def sku_sums(
    run: Run,
    world: SkuWorld,
    economics: SkuEconomics,
    options: Sequence[LeadTimeOption],
    hours: int,
) -> dict[str, float | Series]:
    """Additive pieces of the metrics for one SKU (combined across SKUs, then derived)."""
    demand = world.demand
    lost = demand - run.sold
    transit = _in_transit(run.orders, hours)
    in_pulse, at_peak, check = pulse_hours(world, hours)
    leftover = float(run.stock[check] + transit[check])
    base_cost = options[cheapest(options)].unit_cost
    purchases = sum(o.units * options[o.option].unit_cost for o in run.orders)
    expedite = sum(o.units * (options[o.option].unit_cost - base_cost) for o in run.orders)
    late = during = 0.0
    for (onset, _, end), (_, peak_end) in zip(world.pulse_windows, world.peak_windows, strict=True):
        for order in run.orders:
            if onset <= order.placed <= end:
                during += order.units
                late += order.units if order.arrival > peak_end else 0.0
    after_horizon = sum(o.units for o in run.orders if o.arrival >= hours)
    end_units = float(run.stock[-1]) + after_horizon
    holding = float(run.stock.sum()) * economics.holding_per_unit_hour
    revenue = float(run.sold.sum()) * economics.price
    return {
        "demand": float(demand.sum()),
        "sold": float(run.sold.sum()),
        "pulse_demand": float(demand[in_pulse].sum()),
        "pulse_sold": float(run.sold[in_pulse].sum()),
        "lost_units": float(lost.sum()),
        "lost_revenue": float(lost.sum()) * economics.price,
        "leftover_units_14d": leftover,
        "leftover_value_14d": leftover * economics.unit_cost,
        "holding_cost": holding,
        "capital": (run.stock + transit) * economics.unit_cost,
        "expedite_spend": float(expedite),
        "stockout_hours_at_peak": float(np.count_nonzero(at_peak & (lost > 1e-9))),
        "late_units": late,
        "pulse_ordered": during,
        "profit": revenue - purchases - holding + end_units * economics.salvage,
    }


def derive(parts: list[dict[str, float | Series]]) -> dict[str, float]:
    def total(key: str) -> float:
        return float(sum(float(p[key]) for p in parts))

    capital = np.sum([np.asarray(p["capital"]) for p in parts], axis=0)
    demand, pulse_demand, ordered = total("demand"), total("pulse_demand"), total("pulse_ordered")
    return {
        "fill_rate": total("sold") / demand if demand > 0 else 1.0,
        "pulse_fill_rate": total("pulse_sold") / pulse_demand if pulse_demand > 0 else 1.0,
        "lost_units": total("lost_units"),
        "lost_revenue": total("lost_revenue"),
        "leftover_units_14d": total("leftover_units_14d"),
        "leftover_value_14d": total("leftover_value_14d"),
        "holding_cost": total("holding_cost"),
        "capital_peak": float(capital.max()),
        "capital_mean": float(capital.mean()),
        "expedite_spend": total("expedite_spend"),
        "stockout_hours_at_peak": total("stockout_hours_at_peak"),
        "late_share": total("late_units") / ordered if ordered > 0 else 0.0,
        "profit": total("profit"),
    }


@dataclass
class SimulationResult:
    scenario: str
    seeds: list[int]
    policies: list[str]
    per_seed: dict[str, list[dict[str, float]]]  # policy -> one dict per seed
    trace: Trace | None = None
    oracle: list[OracleFigures] = field(default_factory=list)  # one per seed
    oracle_kind: str = "lp"


@dataclass
class SeedResult:
    metrics: dict[str, dict[str, float]]  # policy -> metrics
    oracle: OracleFigures
    trace: Trace | None


_STATUS_RANK = {"lp": 0, "optimal": 1, "node-limit": 2, "time-limit": 3}


def simulate_seed(
    scenario: Scenario,
    seed: int,
    policies: Sequence[str],
    tracing: bool = False,
    oracle: str = "lp",
) -> SeedResult:
    """Every policy and the oracle on one seed (a pure function of its arguments, so seeds
    can run in any process and order)."""
    hours = scenario.hours
    parts: dict[str, list[dict[str, float | Series]]] = {p: [] for p in policies}
    runs_for_trace: dict[str, list[Run]] = {p: [] for p in policies}
    demand_trace = np.zeros(hours)
    profit = lp_bound = mip_bound = 0.0
    status = "lp" if oracle == "lp" else "optimal"
    for sku_index, spec in enumerate(scenario.skus):
        world = realise(scenario, sku_index, seed)
        leads = lead_draws(scenario, sku_index, seed)
        oracle_plan, solution, bound = oracle_run(scenario, sku_index, world, leads, oracle)
        profit += solution.profit
        lp_bound += bound
        mip_bound += solution.bound
        if _STATUS_RANK[solution.status] > _STATUS_RANK[status]:
            status = solution.status
        demand_trace += world.demand
        for name in policies:
            run = (
                oracle_plan
                if name == "oracle"
                else run_policy(name, scenario, sku_index, world, leads, seed)
            )
            parts[name].append(sku_sums(run, world, spec.economics, scenario.options, hours))
            if tracing:
                runs_for_trace[name].append(run)
    metrics: dict[str, dict[str, float]] = {}
    for name in policies:
        metrics[name] = derive(parts[name])
        metrics[name]["oracle_profit_share"] = (
            metrics[name]["profit"] / profit if profit > 0 else math.nan
        )
    figures = OracleFigures(
        profit,
        lp_bound,
        mip_bound,
        status,
        (mip_bound - profit) / abs(mip_bound) if mip_bound else 0.0,
        (lp_bound - profit) / abs(lp_bound) if lp_bound else 0.0,
    )
    trace = _trace(demand_trace, runs_for_trace, hours) if tracing else None
    return SeedResult(metrics, figures, trace)


def _seed_task(args: tuple[Scenario, int, tuple[str, ...], bool, str]) -> SeedResult:
    return simulate_seed(*args)


def simulate(
    scenario: Scenario,
    seeds: Sequence[int],
    policies: Sequence[str] = POLICY_NAMES,
    *,
    trace_seed: int | None = None,
    workers: int | None = None,
    oracle: str = "lp",
) -> SimulationResult:
    """Every policy on every seed; seeds run in `workers` processes (default: one per CPU;
    1 runs them here). Each seed's numbers depend only on the seed, so any number of workers
    gives the same result."""
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        raise ValueError(f"unknown policies {unknown} (known: {', '.join(POLICY_NAMES)})")
    if oracle not in ORACLE_KINDS:
        raise ValueError(f"unknown oracle {oracle!r} (known: {', '.join(ORACLE_KINDS)})")
    tasks = [(scenario, seed, tuple(policies), trace_seed == seed, oracle) for seed in seeds]
    count = min(workers or os.cpu_count() or 1, len(tasks))
    if count <= 1:
        results = [_seed_task(task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(_seed_task, tasks))
    per_seed = {p: [r.metrics[p] for r in results] for p in policies}
    trace = next((r.trace for r in results if r.trace is not None), None)
    return SimulationResult(
        scenario.name,
        list(seeds),
        list(policies),
        per_seed,
        trace,
        [r.oracle for r in results],
        oracle,
    )


def _trace(demand: Series, runs: dict[str, list[Run]], hours: int) -> Trace:
    trace = Trace(demand)
    for name, items in runs.items():
        trace.stock[name] = np.sum([r.stock for r in items], axis=0)
        ordered, landed = np.zeros(hours), np.zeros(hours)
        for run in items:
            for order in run.orders:
                ordered[order.placed] += order.units
                if order.arrival < hours:
                    landed[order.arrival] += order.units
        trace.ordered[name], trace.landed[name] = ordered, landed
    return trace


def mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Mean and 95 % t-interval over seeds."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, (math.nan, math.nan)
    mean = float(data.mean())
    if data.size < 2:
        return mean, (mean, mean)
    half = float(stats.t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, (mean - half, mean + half)


def summarise(result: SimulationResult, ours: str = OURS) -> dict[str, Any]:
    """results.json: per policy per seed and aggregated; differences ours - each other."""
    policies: dict[str, Any] = {}
    for name in result.policies:
        rows = result.per_seed[name]
        aggregate = {}
        for metric in METRICS:
            mean, (low, high) = mean_ci([row[metric] for row in rows])
            aggregate[metric] = {"mean": mean, "ci95": [low, high]}
        policies[name] = {
            "per_seed": [{"seed": s, **row} for s, row in zip(result.seeds, rows, strict=True)],
            "aggregate": aggregate,
        }
    differences: dict[str, Any] = {}
    if ours in result.per_seed:
        for name in result.policies:
            if name == ours:
                continue
            differences[name] = {}
            for metric in METRICS:
                paired = [
                    a[metric] - b[metric]
                    for a, b in zip(result.per_seed[ours], result.per_seed[name], strict=True)
                ]
                mean, (low, high) = mean_ci(paired)
                differences[name][metric] = {"mean": mean, "ci95": [low, high]}
    return {
        "scenario": result.scenario,
        "seeds": result.seeds,
        "ours": ours,
        "policies": policies,
        "differences": differences,
        "oracle": _oracle_summary(result),
    }


def _oracle_summary(result: SimulationResult) -> dict[str, Any]:
    rows = [
        {"seed": seed, **asdict(figures)}
        for seed, figures in zip(result.seeds, result.oracle, strict=True)
    ]
    statuses: dict[str, int] = {}
    for figures in result.oracle:
        statuses[figures.status] = statuses.get(figures.status, 0) + 1
    aggregate: dict[str, Any] = {"statuses": statuses}
    for key in ("mip_gap", "lp_gap"):
        mean, (low, high) = mean_ci([getattr(f, key) for f in result.oracle])
        aggregate[key] = {
            "mean": mean,
            "ci95": [low, high],
            "max": max((getattr(f, key) for f in result.oracle), default=math.nan),
        }
    return {"kind": result.oracle_kind, "per_seed": rows, "aggregate": aggregate}
