"""The warehouse network simulation (application/network.py): units are conserved, the
routing rule is respected, lanes are the only way stock moves, and on the shipped
regional_pulse scenario the transfer rule cuts lost sales."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.forecast.domain.demand import DemandForecast
from pulsestock.fulfillment.application.forecasting import blind_forecast
from pulsestock.fulfillment.application.network import (
    NetworkRun,
    compare_network,
    network_metrics,
    run_network,
    split_demand,
)
from pulsestock.fulfillment.application.policies import Observation
from pulsestock.fulfillment.application.scenario import Scenario, parse_scenario, realise

ROOT = Path(__file__).parent.parent.parent
REGIONAL = ROOT / "scenarios" / "regional_pulse.json"
SHORT_HOURS = 600  # the pulse (onset 480) and five days after: keeps the paired runs fast


def regional(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(REGIONAL.read_text())
    doc.update(changes)
    return doc


def scenario_of(doc: dict[str, Any], name: str = "regional") -> Scenario:
    return parse_scenario(copy.deepcopy(doc), name=name)


class FixedForecast:
    """A forecast source handing the transfer rule one forecast, made every hour."""

    def __init__(self, forecast: DemandForecast) -> None:
        self.forecast = forecast
        self.hour = -1

    @property
    def latest(self) -> tuple[int, DemandForecast] | None:
        return (self.hour, self.forecast) if self.hour >= 0 else None


def cheap_run(
    scenario: Scenario, seed: int, *, order_every: int, order_units: int, transfers: bool = True
) -> NetworkRun:
    """A run with a trivial ordering rule and a fixed baseline forecast (fast enough for
    Hypothesis), so only the network's own bookkeeping is under test."""
    world = realise(scenario, 0, seed)
    source = FixedForecast(blind_forecast(world.history, seed=seed))

    def order(seen: Observation) -> list[tuple[int, int]]:
        source.hour = seen.hour
        if order_every and seen.hour % order_every == 0 and seen.position() < 60:
            return [(seen.hour % 2, order_units)]
        return []

    return run_network(scenario, 0, seed, (order, source), transfers=transfers, world=world)


def check_conservation(run: NetworkRun) -> None:
    # every order is served (from one warehouse) or lost
    assert np.array_equal(run.served_from.sum(axis=2) + run.lost, run.demand)
    assert np.array_equal(run.served_from.sum(axis=1), run.served)
    assert (run.stock >= 0).all()
    # per warehouse: initial + landed + transferred in = served + transferred out + on hand
    stock_in = run.initial + np.cumsum(run.landed + run.transfer_in, axis=0)
    stock_out = np.cumsum(run.served + run.transfer_out, axis=0)
    assert np.array_equal(stock_in - stock_out, run.stock)
    # what is sent lands at its destination, after its lane's lead time, or is still on its way
    hours = run.hours
    sent = np.zeros_like(run.transfer_in)
    for shipment in run.shipments:
        assert shipment.arrival > shipment.sent
        if shipment.arrival < hours:
            sent[shipment.arrival, shipment.destination] += shipment.units
    assert np.array_equal(sent, run.transfer_in)
    assert sum(s.units for s in run.shipments) == run.transfer_out.sum()
    for order in run.orders:
        assert order.arrival > order.placed


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    east=st.integers(0, 300),
    fbt=st.integers(0, 80),
    order_every=st.sampled_from([0, 24, 72]),
    order_units=st.integers(10, 200),
)
def test_units_are_conserved_and_stock_never_negative(
    seed: int, east: int, fbt: int, order_every: int, order_units: int
) -> None:
    doc = regional(hours=SHORT_HOURS)
    doc["skus"][0]["initial_stock"] = {"us-east-own": east, "us-west-fbt": fbt}
    run = cheap_run(scenario_of(doc), seed, order_every=order_every, order_units=order_units)
    check_conservation(run)
    # supplier orders land only where the option delivers (us-east-own)
    assert run.landed[:, 1:].sum() == 0


def bucket_indices(run: NetworkRun, channel: str) -> list[int]:
    return [b for b, (c, _) in enumerate(run.buckets) if c == channel]


def test_tiktok_orders_go_to_fbt_while_it_has_stock_and_amazon_never() -> None:
    doc = regional(hours=SHORT_HOURS)
    # us-east-own serves TikTok Shop too, so FBT first is a choice the rule makes
    doc["warehouses"][0]["channels"].append("tiktok_shop")
    scenario = scenario_of(doc)
    run = cheap_run(scenario, 3, order_every=24, order_units=100)
    check_conservation(run)
    fbt = run.warehouses.index("us-west-fbt")
    tiktok, amazon = bucket_indices(run, "tiktok_shop"), bucket_indices(run, "amazon")
    assert run.served_from[:, amazon, fbt].sum() == 0
    assert run.served_from[:, amazon, :].sum() > 0
    elsewhere = run.served_from[:, tiktok, :].sum(axis=(1, 2)) - run.served_from[
        :, tiktok, fbt
    ].sum(axis=1)
    # FBT's stock after this hour's orders: on hand at the end plus what it sent away
    fbt_after_orders = run.stock[:, fbt] + run.transfer_out[:, fbt]
    hours_elsewhere = np.flatnonzero(elsewhere > 0)
    assert hours_elsewhere.size > 0  # the case is exercised: FBT did run out
    assert (fbt_after_orders[hours_elsewhere] == 0).all()
    assert run.served_from[:, tiktok, fbt].sum() > 0


def test_a_tiktok_order_is_lost_when_fbt_is_empty_and_no_other_warehouse_serves_it() -> None:
    doc = regional(hours=SHORT_HOURS)
    doc["skus"][0]["initial_stock"] = {"us-east-own": 500}
    run = cheap_run(scenario_of(doc), 5, order_every=0, order_units=0, transfers=False)
    tiktok = bucket_indices(run, "tiktok_shop")
    assert run.lost[:, tiktok].sum() == run.demand[:, tiktok].sum() > 0
    others = [b for b in range(len(run.buckets)) if b not in tiktok]
    assert run.lost[:, others].sum() == 0  # us-east-own never runs out of 500


def test_without_lanes_no_stock_moves() -> None:
    doc = regional(hours=SHORT_HOURS, transfer_lanes=[])
    run = cheap_run(scenario_of(doc), 1, order_every=24, order_units=50)
    assert run.shipments == []
    assert run.transfer_out.sum() == run.transfer_in.sum() == 0
    with_lanes = cheap_run(scenario_of(regional(hours=SHORT_HOURS)), 1, order_every=24,
                           order_units=50)  # fmt: skip
    assert with_lanes.shipments  # the same run with lanes does move stock


def test_transfers_cut_lost_sales_on_regional_pulse() -> None:
    scenario = scenario_of(regional(hours=SHORT_HOURS), name="regional_pulse_600h")
    seeds = list(range(5))
    paired = compare_network(scenario, seeds, "pulsestock")
    lost = paired["differences"]["lost_units"]
    profit = paired["differences"]["profit"]
    print(
        "lost_units with - without transfers:", lost["mean"], lost["ci95"], lost["per_seed"],
        "profit:", profit["mean"], profit["ci95"],
    )  # fmt: skip
    assert all(row["transfer_units"] > 0 for row in paired["with_transfers"])
    assert all(row["transfer_units"] == 0 for row in paired["without_transfers"])
    assert lost["ci95"][1] < 0  # fewer lost units on every-seed average, CI excludes 0
    for row in paired["with_transfers"]:
        assert row["profit"] == row["profit"]  # finite, not NaN


def test_metrics_account_for_transfer_spend() -> None:
    scenario = scenario_of(regional(hours=SHORT_HOURS))
    world = realise(scenario, 0, 2)
    run = cheap_run(scenario, 2, order_every=24, order_units=60)
    metrics = network_metrics(run, scenario, 0, world)
    lane_cost = {(lane.source, lane.destination): lane.cost_per_unit for lane in
                 scenario.transfer_lanes}  # fmt: skip
    spend = sum(
        s.units * lane_cost[(run.warehouses[s.source], run.warehouses[s.destination])]
        for s in run.shipments
    )
    assert metrics["transfer_spend"] == spend > 0
    assert metrics["transfer_units"] == run.transfer_out.sum()
    assert metrics["lost_units"] == run.lost.sum()
    assert 0 <= metrics["slow_delivery_share"] <= 1
    assert metrics["lost_units_first_fbt"] + metrics["lost_units_first_own"] == run.lost.sum()


def test_orders_split_every_unit_and_are_the_same_for_every_policy() -> None:
    scenario = scenario_of(regional(hours=SHORT_HOURS))
    world = realise(scenario, 0, 4)
    split = split_demand(scenario, 0, world, 4)
    assert np.array_equal(split.units.sum(axis=1), world.demand.astype(np.int64))
    for hour, arrivals in enumerate(split.arrivals):
        assert np.array_equal(np.bincount(arrivals, minlength=len(split.buckets)),
                              split.units[hour])  # fmt: skip
    # the shares hold over the run: 75 % us-west x 60 % TikTok Shop = 45 % of units
    west_tiktok = split.buckets.index(("tiktok_shop", "us-west"))
    assert abs(split.units[:, west_tiktok].sum() / split.units.sum() - 0.45) < 0.05
    lean = cheap_run(scenario, 4, order_every=0, order_units=0)
    busy = cheap_run(scenario, 4, order_every=24, order_units=200)
    assert np.array_equal(lean.demand, busy.demand)  # common random numbers
    assert np.array_equal(lean.demand, split.units)


def test_a_pulse_can_have_its_own_mix() -> None:
    scenario = scenario_of(regional(hours=SHORT_HOURS))
    world = realise(scenario, 0, 6)
    focus = ("tiktok_shop", "us-west")
    split = split_demand(scenario, 0, world, 6, pulse_shares={0: {focus: 1.0}})
    at = split.buckets.index(focus)
    peak = split.units[486:510]  # the pulse's peak: its excess is most of the demand
    calm = split.units[:400]
    assert peak[:, at].sum() / peak.sum() > 0.9
    assert abs(calm[:, at].sum() / calm.sum() - 0.45) < 0.1
