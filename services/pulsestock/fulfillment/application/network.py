"""The warehouse network of one SKU on the simulated clock: routing, transfers and lost sales.

The policy simulator (simulator.py) pools a SKU's warehouses into one stock. This module runs
the same SKU across its warehouses, hour by hour, with the service's own rules:

- Demand. Each hour's units (scenario.realise, the same draws as the simulator's) are split
  into (channel, buyer region) buckets by the scenario's `channel_share` x `region_share`
  (independent; uniform over the scenario's regions / the channels the warehouses list when
  a share is not given), one multinomial draw an hour, and arrive in a random order within
  the hour, each unit its own order. The split comes from its own seeded stream, so every
  policy (and transfers on or off) faces the same orders: common random numbers.
- Serving. Each order is routed by pulsestock.routing.route over the warehouses' on-hand
  stock (FBT first for TikTok Shop, the buyer's region otherwise, only warehouses serving
  the channel); what no eligible warehouse has is lost (no backorders). A unit shipped with
  delivery beyond SAME_REGION_HOURS counts as slow.
- Replenishment. A caller's rule (a policy's `act`) sees the network as one stock: the same
  `Observation` the simulator builds (network demand and heat, on hand summed over the
  warehouses, on order = supplier orders plus transfers in transit, each with its arrival
  hour). An order on option i lands, after the option's lead time drawn as the simulator
  draws it (simulator.lead_draws), in the first warehouse the option delivers to.
- Transfers. At review hours the domain rule (domain/transfers.py, what PlanTransfers runs)
  gets the policy's demand forecast as its outlook, the warehouses' on-hand stock, the
  lanes, and the demand shares of the simulated orders by (channel, region) decayed with
  demand_shares.HALF_LIFE (24 h); its proposals are executed at once: the units leave the
  source now and land after the lane's lead time (at least the next hour), each unit
  charged the lane's cost. The forecast is the one the policy made this hour (pulsestock
  and pulsestock-blind forecast daily and hourly while a pulse is on); other policies make
  none, so a shadow `pulsestock` forecaster, whose orders are discarded, stands in. A
  review between two forecasts reads the latest one shifted by the hours since.

Metrics (`network_metrics`) mirror simulator.py's definitions where they apply: fill_rate,
pulse_fill_rate, lost_units, lost_revenue, leftover_units_14d / leftover_value_14d (on hand +
supplier orders + transfers in transit), holding_cost (on hand in warehouses, not in
transit), capital_peak / capital_mean, expedite_spend, stockout_hours_at_peak, late_share,
profit (revenue - purchases - holding - transfer spend + salvage of everything left at the
end, in transit included); and the network's own: transfer_units, transfer_spend,
transfer_count, slow_delivery_share (of served units), lost_units_first_<kind> (lost units
by the kind of warehouse the rule sends that demand to first when every warehouse is
stocked) and lost_units_channel_<channel>.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain.demand import DemandForecast
from pulsestock.fulfillment.application.demand_shares import HALF_LIFE
from pulsestock.fulfillment.application.forecasting import ForecastOutlook
from pulsestock.fulfillment.application.policies import (
    Observation,
    Pulsestock,
    cheapest,
    make_policy,
)
from pulsestock.fulfillment.application.scenario import Scenario, SkuWorld, realise
from pulsestock.fulfillment.application.simulator import lead_draws, pulse_hours
from pulsestock.fulfillment.domain.master_data import TransferLane
from pulsestock.fulfillment.domain.transfers import (
    DemandBucket,
    TransferSettings,
    arrival_hours,
    demand_sites,
    landing_deadline,
    plan_transfers,
)
from pulsestock.routing import SAME_REGION_HOURS, Candidate, route
from scipy import stats

Series = NDArray[np.float64]
OrderRule = Callable[[Observation], list[tuple[int, int]]]
LEFTOVER_DAYS = 14  # as simulator.LEFTOVER_DAYS
SHARE_DECAY_PER_HOUR = 0.5 ** (3600.0 / HALF_LIFE.total_seconds())


# --- demand split ------------------------------------------------------------------------


@dataclass(frozen=True)
class DemandSplit:
    """One seed's orders of one SKU by (channel, buyer region), hour by hour."""

    buckets: tuple[tuple[str, str], ...]  # (channel, region)
    units: NDArray[np.int64]  # (hours, buckets)
    arrivals: tuple[NDArray[np.int64], ...]  # per hour: bucket index of each order, in order


def _diurnal(hours: Series) -> Series:
    return 1.0 + 0.5 * np.cos(2 * math.pi * (hours - 20) / 24)  # as scenario._diurnal


def bucket_shares(scenario: Scenario, sku_index: int) -> dict[tuple[str, str], float]:
    """P(an order is of channel c from region r) = channel_share[c] x region_share[r]."""
    spec = scenario.demand[scenario.skus[sku_index].economics.sku]
    regions = spec.region_share or {r: 1.0 / len(scenario.regions) for r in scenario.regions}
    channels = spec.channel_share
    if channels is None:
        listed = sorted({c for w in scenario.warehouses for c in w.channels}) or [""]
        channels = {c: 1.0 / len(listed) for c in listed}
    return {
        (channel, region): c_share * r_share
        for channel, c_share in channels.items()
        for region, r_share in regions.items()
        if c_share * r_share > 0
    }


def split_demand(
    scenario: Scenario,
    sku_index: int,
    world: SkuWorld,
    seed: int,
    pulse_shares: Mapping[int, Mapping[tuple[str, str], float]] | None = None,
) -> DemandSplit:
    """Split the hour's units by bucket. `pulse_shares` (pulse index -> bucket shares) gives
    a pulse its own mix (the scenario format has none yet): a unit is the pulse's with
    probability its nominal excess rate over the hour's nominal rate."""
    base = bucket_shares(scenario, sku_index)
    keys = sorted(set(base) | {k for s in (pulse_shares or {}).values() for k in s})
    hours = world.demand.size
    probs = np.tile(np.array([base.get(k, 0.0) for k in keys]), (hours, 1))
    spec = scenario.demand[scenario.skus[sku_index].economics.sku]
    if pulse_shares and spec.replay is None:
        clock = np.arange(hours, dtype=np.float64)
        base_rate = _diurnal(clock + scenario.start.hour)
        excess = {
            index: (pulse.peak_multiplier - 1) * pulse.shape(clock)
            for index, pulse in enumerate(spec.pulses)
        }
        total = base_rate + sum(excess.values(), np.zeros(hours))
        mixed = probs * (base_rate / total)[:, None]
        for index, rate in excess.items():
            shares = pulse_shares.get(index, base)
            row = np.array([shares.get(k, 0.0) for k in keys])
            mixed += (rate / total)[:, None] * row[None, :]
        probs = mixed
    probs = probs / probs.sum(axis=1, keepdims=True)
    rng = np.random.default_rng([seed, sku_index, 13])
    counts = np.rint(world.demand).astype(np.int64)
    units = rng.multinomial(counts, probs).astype(np.int64)
    arrivals = tuple(
        rng.permutation(np.repeat(np.arange(len(keys)), row)) if row.sum() else np.zeros(0, int)
        for row in units
    )
    return DemandSplit(tuple(keys), units, arrivals)


# --- forecasts for the transfer rule -----------------------------------------------------


class ForecastSource(Protocol):
    """Where the transfer rule's forecast comes from: the latest forecast and the hour it
    was made at (None before the first)."""

    @property
    def latest(self) -> tuple[int, DemandForecast] | None: ...


class _ForecastTap(Pulsestock):
    """Our policy, keeping the forecast it makes (it reviews daily, hourly in a pulse).
    It hooks Pulsestock._forecast: policies.py has no public hook for the forecast yet."""

    latest: tuple[int, DemandForecast] | None = None

    def _forecast(self, seen: Observation, daily: bool) -> DemandForecast:
        forecast = super()._forecast(seen, daily)
        self.latest = (seen.hour, forecast)
        return forecast


class _ShiftedOutlook:
    """A forecast made `lag` hours ago as the outlook from now."""

    def __init__(self, outlook: ForecastOutlook, lag: int) -> None:
        self.outlook, self.lag = outlook, lag

    def window_quantiles(self, start: int, end: int, levels: Sequence[float]) -> Series:
        return self.outlook.window_quantiles(start + self.lag, end + self.lag, levels)


@dataclass(frozen=True)
class TransferCadence:
    """Review transfers every `pulse_every` hours while the forecast has a pulse on, else
    at the end of every `calm_every` hours (the planner's daily review)."""

    pulse_every: int = 1
    calm_every: int = 24
    outlook_hours: int = 720  # the forecast's means read for the landing deadline
    coverage_hours: int = 7 * 24

    def __post_init__(self) -> None:
        if min(self.pulse_every, self.calm_every, self.outlook_hours, self.coverage_hours) < 1:
            raise ValueError("cadence hours must be at least 1")

    def due(self, hour: int, pulse_on: bool) -> bool:
        if pulse_on and hour % self.pulse_every == 0:
            return True
        return hour % self.calm_every == self.calm_every - 1


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SupplierOrder:
    placed: int
    option: int
    warehouse: int
    units: int
    arrival: int


@dataclass(frozen=True)
class Shipment:
    """An executed transfer."""

    sent: int
    source: int
    destination: int
    units: int
    arrival: int
    cost: float


@dataclass
class NetworkRun:
    """One policy on one SKU and seed across the warehouses (traces for plotting)."""

    warehouses: tuple[str, ...]
    buckets: tuple[tuple[str, str], ...]
    initial: NDArray[np.int64]  # per warehouse
    stock: NDArray[np.int64]  # (hours, warehouses) on hand at the end of the hour
    demand: NDArray[np.int64]  # (hours, buckets)
    lost: NDArray[np.int64]  # (hours, buckets)
    served: NDArray[np.int64]  # (hours, warehouses)
    served_slow: NDArray[np.int64]  # (hours, warehouses): delivery beyond the same region
    served_from: NDArray[np.int64]  # (hours, buckets, warehouses)
    landed: NDArray[np.int64]  # (hours, warehouses) supplier orders landed
    transfer_out: NDArray[np.int64]  # (hours, warehouses) sent
    transfer_in: NDArray[np.int64]  # (hours, warehouses) landed
    orders: list[SupplierOrder] = field(default_factory=list)
    shipments: list[Shipment] = field(default_factory=list)

    @property
    def hours(self) -> int:
        return int(self.stock.shape[0])


def default_delivery(scenario: Scenario, option: int) -> int:
    """The warehouse an option's orders land in: the first it delivers to."""
    targets = scenario.options[option].delivers_to
    ids = [w.id for w in scenario.warehouses]
    return ids.index(targets[0]) if targets else 0


def policy_rules(
    name: str, scenario: Scenario, sku_index: int, seed: int
) -> tuple[OrderRule, ForecastSource]:
    """A policy's ordering rule, and where the transfer rule's forecasts come from (the
    policy itself for ours; a shadow `pulsestock` forecaster for the others)."""
    if not callable(getattr(Pulsestock, "_forecast", None)):
        raise RuntimeError("policies.Pulsestock._forecast is gone: the forecast tap needs a hook")
    economics = scenario.skus[sku_index].economics
    if name in ("pulsestock", "pulsestock-blind"):
        tap = _ForecastTap(economics, scenario.options, informed=name == "pulsestock", seed=seed)
        return tap.act, tap
    policy = make_policy(name, economics, scenario.options, seed)
    shadow = _ForecastTap(economics, scenario.options, informed=True, seed=seed)

    def act(seen: Observation) -> list[tuple[int, int]]:
        shadow.act(seen)  # its orders are discarded: only its forecast is read
        return policy.act(seen)

    return act, shadow


def run_network(
    scenario: Scenario,
    sku_index: int,
    seed: int,
    policy: str | tuple[OrderRule, ForecastSource | None],
    *,
    transfers: bool = True,
    lanes: Sequence[TransferLane] | None = None,
    cadence: TransferCadence = TransferCadence(),
    world: SkuWorld | None = None,
    leads: NDArray[np.int64] | None = None,
    split: DemandSplit | None = None,
) -> NetworkRun:
    """One policy on one SKU and seed over the warehouse network (see the module docstring).
    `policy` is a policy name or (ordering rule, forecast source; None: no transfers);
    `lanes` overrides the scenario's; `transfers=False` never moves stock."""
    spec = scenario.skus[sku_index]
    sku = spec.economics.sku
    world = world if world is not None else realise(scenario, sku_index, seed)
    leads = leads if leads is not None else lead_draws(scenario, sku_index, seed)
    split = split if split is not None else split_demand(scenario, sku_index, world, seed)
    order_rule, tap = (
        policy_rules(policy, scenario, sku_index, seed) if isinstance(policy, str) else policy
    )
    lanes = tuple(scenario.transfer_lanes if lanes is None else lanes)
    warehouses = scenario.warehouses
    ids = tuple(w.id for w in warehouses)
    index_of = {w: i for i, w in enumerate(ids)}
    n_wh, n_b, hours = len(ids), len(split.buckets), world.demand.size
    on_hand = np.array([round(spec.initial_stock.get(w, 0.0)) for w in ids], np.int64)
    initial = on_hand.copy()
    horizon = hours + int(leads.max()) + max((arrival_hours(x) for x in lanes), default=0) + 2
    land_supplier = np.zeros((horizon, n_wh), np.int64)
    land_transfer = np.zeros((horizon, n_wh), np.int64)
    run = NetworkRun(
        ids,
        split.buckets,
        initial,
        np.zeros((hours, n_wh), np.int64),
        split.units.copy(),
        np.zeros((hours, n_b), np.int64),
        np.zeros((hours, n_wh), np.int64),
        np.zeros((hours, n_wh), np.int64),
        np.zeros((hours, n_b, n_wh), np.int64),
        np.zeros((hours, n_wh), np.int64),
        np.zeros((hours, n_wh), np.int64),
        np.zeros((hours, n_wh), np.int64),
    )
    pipeline: list[tuple[int, float]] = []  # (arrival, units): orders and transfers
    demand_all = np.concatenate([world.history, world.demand])
    heat_all = np.concatenate([world.history_heat, world.heat])
    warm = world.history.size
    weights = np.zeros(n_b)
    plain = [Candidate(w.id, w.region, w.kind, w.channels) for w in warehouses]
    settings = TransferSettings(coverage_hours=cadence.coverage_hours)
    for hour in range(hours):
        on_hand += land_supplier[hour] + land_transfer[hour]
        run.landed[hour] = land_supplier[hour]
        run.transfer_in[hour] = land_transfer[hour]
        if pipeline and min(at for at, _ in pipeline) <= hour:
            pipeline = [entry for entry in pipeline if entry[0] > hour]
        for bucket in split.arrivals[hour]:
            channel, region = split.buckets[bucket]
            candidates = [
                Candidate(c.warehouse_id, c.region, c.kind, c.channels, {sku: int(on_hand[i])})
                for i, c in enumerate(plain)
            ]
            decided = route({sku: 1}, channel, region, candidates)
            if not decided.allocations:
                run.lost[hour, bucket] += 1
                continue
            for allocation in decided.allocations:
                source = index_of[allocation.warehouse_id]
                on_hand[source] -= allocation.quantity
                run.served[hour, source] += allocation.quantity
                run.served_from[hour, bucket, source] += allocation.quantity
                if allocation.delivery_hours > SAME_REGION_HOURS:
                    run.served_slow[hour, source] += allocation.quantity
            for _ in range(sum(decided.unallocated.values())):
                run.lost[hour, bucket] += 1
        seen = Observation(
            hour,
            demand_all[: warm + hour + 1],
            heat_all[: warm + hour + 1],
            float(on_hand.sum()),
            list(pipeline),
        )
        for option, units in order_rule(seen):
            if units <= 0:
                continue
            target = default_delivery(scenario, option)
            arrival = hour + int(leads[option, hour])
            land_supplier[arrival, target] += int(units)
            pipeline.append((arrival, float(units)))
            run.orders.append(SupplierOrder(hour, option, target, int(units), arrival))
        weights = weights * SHARE_DECAY_PER_HOUR + split.units[hour]
        if transfers and lanes and tap is not None and tap.latest is not None:
            made_at, forecast = tap.latest
            pulse_on = forecast.pulse is not None
            if cadence.due(hour, pulse_on):
                for shipment in _plan(
                    hour - made_at, forecast, pulse_on, on_hand, weights, split, plain,
                    lanes, spec.economics, settings, cadence, index_of, hour,
                ):  # fmt: skip
                    on_hand[shipment.source] -= shipment.units
                    land_transfer[shipment.arrival, shipment.destination] += shipment.units
                    run.transfer_out[hour, shipment.source] += shipment.units
                    pipeline.append((shipment.arrival, float(shipment.units)))
                    run.shipments.append(shipment)
        run.stock[hour] = on_hand
    return run


def _plan(
    lag: int,
    forecast: DemandForecast,
    pulse_on: bool,
    on_hand: NDArray[np.int64],
    weights: Series,
    split: DemandSplit,
    plain: Sequence[Candidate],
    lanes: Sequence[TransferLane],
    economics: Any,
    settings: TransferSettings,
    cadence: TransferCadence,
    index_of: Mapping[str, int],
    hour: int,
) -> list[Shipment]:
    """The transfer rule's proposals now, as shipments (never more than the source has)."""
    buckets = [
        DemandBucket(channel, region, float(weight))
        for (channel, region), weight in zip(split.buckets, weights, strict=True)
        if weight > 0
    ]
    available = {c.warehouse_id: int(on_hand[i]) for i, c in enumerate(plain)}
    sites = demand_sites(economics, buckets, plain, available)
    means = forecast.mean(cadence.outlook_hours + lag)[lag:]
    latest_arrival, _ = landing_deadline(list(means), pulse_on)
    outlook = _ShiftedOutlook(ForecastOutlook(forecast), lag)
    plan = plan_transfers(sites, lanes, outlook, latest_arrival, settings)
    shipments: list[Shipment] = []
    left = dict(available)
    for proposal in plan.proposals:
        lane = proposal.lane
        units = min(proposal.quantity, left[lane.source])
        if units <= 0:
            continue
        left[lane.source] -= units
        shipments.append(
            Shipment(
                hour,
                index_of[lane.source],
                index_of[lane.destination],
                units,
                hour + max(1, arrival_hours(lane)),
                units * lane.cost_per_unit,
            )
        )
    return shipments


# --- metrics -----------------------------------------------------------------------------


def _in_transit(run: NetworkRun) -> NDArray[np.int64]:
    """Supplier orders and transfers sent but not landed at the end of each hour."""
    change = np.zeros(run.hours + 1, np.int64)
    for order in run.orders:
        change[order.placed] += order.units
        change[min(order.arrival, run.hours)] -= order.units
    for shipment in run.shipments:
        change[shipment.sent] += shipment.units
        change[min(shipment.arrival, run.hours)] -= shipment.units
    return np.cumsum(change)[: run.hours]


def network_metrics(
    run: NetworkRun, scenario: Scenario, sku_index: int, world: SkuWorld
) -> dict[str, float]:
    """The run's metrics (module docstring), mirroring simulator.sku_sums/derive."""
    economics = scenario.skus[sku_index].economics
    options = scenario.options
    hours = run.hours
    demand = run.demand.sum(axis=1).astype(np.float64)
    lost = run.lost.sum(axis=1).astype(np.float64)
    sold = demand - lost
    stock = run.stock.sum(axis=1).astype(np.float64)
    transit = _in_transit(run).astype(np.float64)
    in_pulse, at_peak, check = pulse_hours(world, hours)
    leftover = float(stock[check] + transit[check])
    base_cost = options[cheapest(options)].unit_cost
    purchases = sum(o.units * options[o.option].unit_cost for o in run.orders)
    expedite = sum(o.units * (options[o.option].unit_cost - base_cost) for o in run.orders)
    late = during = 0.0
    for (onset, _, end), (_, peak_end) in zip(world.pulse_windows, world.peak_windows, strict=True):
        for order in run.orders:
            if onset <= order.placed <= end:
                during += order.units
                late += order.units if order.arrival > peak_end else 0.0
    end_units = float(stock[-1] + transit[-1])
    holding = float(stock.sum()) * economics.holding_per_unit_hour
    transfer_spend = sum(s.cost for s in run.shipments)
    revenue = float(sold.sum()) * economics.price
    capital = (stock + transit) * economics.unit_cost
    total_demand, pulse_demand = float(demand.sum()), float(demand[in_pulse].sum())
    served = float(run.served.sum())
    metrics = {
        "fill_rate": float(sold.sum()) / total_demand if total_demand > 0 else 1.0,
        "pulse_fill_rate": float(sold[in_pulse].sum()) / pulse_demand if pulse_demand else 1.0,
        "lost_units": float(lost.sum()),
        "lost_revenue": float(lost.sum()) * economics.price,
        "leftover_units_14d": leftover,
        "leftover_value_14d": leftover * economics.unit_cost,
        "holding_cost": holding,
        "capital_peak": float(capital.max()),
        "capital_mean": float(capital.mean()),
        "expedite_spend": float(expedite),
        "stockout_hours_at_peak": float(np.count_nonzero(at_peak & (lost > 0))),
        "late_share": late / during if during > 0 else 0.0,
        "profit": revenue - purchases - holding - transfer_spend + end_units * economics.salvage,
        "transfer_units": float(sum(s.units for s in run.shipments)),
        "transfer_spend": float(transfer_spend),
        "transfer_count": float(len(run.shipments)),
        "slow_delivery_share": float(run.served_slow.sum()) / served if served else 0.0,
    }
    first = first_choice_kinds(scenario, sku_index, run.buckets)
    channels = sorted({c for c, _ in run.buckets})
    kinds = sorted({w.kind for w in scenario.warehouses} | {"none"})
    lost_by_bucket = run.lost.sum(axis=0)
    for kind in kinds:
        metrics[f"lost_units_first_{kind}"] = float(
            sum(lost_by_bucket[b] for b, k in enumerate(first) if k == kind)
        )
    for channel in channels:
        metrics[f"lost_units_channel_{channel or 'any'}"] = float(
            sum(lost_by_bucket[b] for b, (c, _) in enumerate(run.buckets) if c == channel)
        )
    return metrics


def first_choice_kinds(
    scenario: Scenario, sku_index: int, buckets: Sequence[tuple[str, str]]
) -> list[str]:
    """The kind of warehouse the routing rule sends each bucket to first when all are
    stocked ("none" when no warehouse serves its channel)."""
    sku = scenario.skus[sku_index].economics.sku
    stocked = [Candidate(w.id, w.region, w.kind, w.channels, {sku: 1}) for w in scenario.warehouses]
    kind_of = {w.id: w.kind for w in scenario.warehouses}
    kinds = []
    for channel, region in buckets:
        decided = route({sku: 1}, channel, region, stocked)
        kinds.append(
            kind_of[decided.allocations[0].warehouse_id] if decided.allocations else "none"
        )
    return kinds


# --- transfers on vs off -----------------------------------------------------------------


def _mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if data.size < 2:
        return mean, (mean, mean)
    half = float(stats.t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, (mean - half, mean + half)


def seed_metrics(
    scenario: Scenario, seed: int, policy_name: str, *, transfers: bool
) -> dict[str, float]:
    """One seed's metrics summed over the scenario's SKUs (rates recomputed from sums)."""
    totals: dict[str, float] = {}
    demand = sold = served = slow = 0.0
    for sku_index in range(len(scenario.skus)):
        world = realise(scenario, sku_index, seed)
        run = run_network(scenario, sku_index, seed, policy_name, transfers=transfers, world=world)
        for key, value in network_metrics(run, scenario, sku_index, world).items():
            totals[key] = totals.get(key, 0.0) + value
        demand += float(run.demand.sum())
        sold += float(run.demand.sum() - run.lost.sum())
        served += float(run.served.sum())
        slow += float(run.served_slow.sum())
    totals["fill_rate"] = sold / demand if demand else 1.0
    totals["slow_delivery_share"] = slow / served if served else 0.0
    return totals


def compare_network(
    scenario: Scenario,
    seeds: Sequence[int],
    policy_name: str = "pulsestock",
    metrics: Sequence[str] = ("lost_units", "profit", "transfer_units", "slow_delivery_share"),
) -> dict[str, Any]:
    """`policy_name` with transfers minus without, paired on each seed's draws: per metric
    the mean difference and its 95 % t-interval, and the per-seed values of both runs."""
    on = [seed_metrics(scenario, s, policy_name, transfers=True) for s in seeds]
    off = [seed_metrics(scenario, s, policy_name, transfers=False) for s in seeds]
    differences: dict[str, Any] = {}
    for metric in metrics:
        paired = [a[metric] - b[metric] for a, b in zip(on, off, strict=True)]
        mean, (low, high) = _mean_ci(paired)
        differences[metric] = {"mean": mean, "ci95": [low, high], "per_seed": paired}
    return {
        "scenario": scenario.name,
        "policy": policy_name,
        "seeds": list(seeds),
        "with_transfers": on,
        "without_transfers": off,
        "differences": differences,
    }
