"""The policy simulator: scenario validation, the oracle bounding every policy, common
random numbers, the forecast adapter, and `pulsestock simulate` end to end."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.forecast.domain.baseline import fit_baseline
from pulsestock.fulfillment.application.forecasting import (
    ForecastOutlook,
    baseline_window_quantiles,
)
from pulsestock.fulfillment.application.oracle import book, solve_oracle, solve_relaxed
from pulsestock.fulfillment.application.scenario import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    realise,
)
from pulsestock.fulfillment.application.simulator import (
    METRICS,
    lead_draws,
    run_policy,
    simulate,
    summarise,
)
from pulsestock.fulfillment.domain.master_data import LeadTimeOption, SkuEconomics

HERE = Path(__file__).parent
SMALL = HERE / "small_pulse.json"
ROOT = HERE.parent.parent


def small() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SMALL.read_text())
    return doc


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda d: d.pop("hours"), "hours", "is required"),
        (lambda d: d.update(start="yesterday"), "start", "ISO 8601"),
        (lambda d: d["warehouses"][0].update(region="mars"), "warehouses[0].region", "unknown"),
        (
            lambda d: d["suppliers"][0]["options"][0]["lead_time_hours"].update(mean=-3),
            "suppliers[0].options[0].lead_time_hours.mean",
            "at least 0",
        ),
        (
            lambda d: d["suppliers"][0]["options"][0].update(unit_cost="cheap"),
            "suppliers[0].options[0].unit_cost",
            "number",
        ),
        (
            lambda d: d["suppliers"][1]["options"][0].update(delivers_to=["nowhere"]),
            "suppliers[1].options[0].delivers_to[0]",
            "unknown warehouse",
        ),
        (lambda d: d["skus"][0].update(salvage=30.0), "skus[0].salvage", "below the price"),
        (
            lambda d: d["skus"][0].update(initial_stock={"nowhere": 3}),
            "skus[0].initial_stock.nowhere",
            "unknown warehouse",
        ),
        (lambda d: d["demand"][0].update(sku="other"), "demand[0].sku", "unknown SKU"),
        (
            lambda d: d["demand"][0]["pulses"][0].update(rise_hours=0),
            "demand[0].pulses[0].rise_hours",
            "positive",
        ),
        (
            lambda d: d["demand"][0].update(region_share={"us-east": 0.5}),
            "demand[0].region_share",
            "sum to 1",
        ),
        (lambda d: d["demand"][0].update(csv="x.csv"), "demand[0]", "either csv"),
        (
            lambda d: d["warehouses"][0].update(channels=["tiktok"]),
            "warehouses[0].channels[0]",
            "must be one of tiktok_shop, shopify, amazon",
        ),
        (
            lambda d: d["demand"][0].update(channel_share={"tiktok": 1.0}),
            "demand[0].channel_share.tiktok",
            "is not one of",
        ),
    ],
)
def test_scenario_errors_name_the_path(mutate: Any, path: str, words: str) -> None:
    doc = small()
    mutate(doc)
    with pytest.raises(ScenarioError) as error:
        parse_scenario(doc, base_dir=HERE)
    assert error.value.path == path
    assert words in str(error.value)


def test_shipped_scenarios_are_valid_and_match_the_schema_keys() -> None:
    schema = json.loads((ROOT / "scenarios" / "scenario.schema.json").read_text())
    for file in sorted((ROOT / "scenarios").glob("*.json")):
        if file.name == "scenario.schema.json":
            continue
        scenario = load_scenario(file)
        assert scenario.hours >= 24 * 30
        assert set(json.loads(file.read_text())) <= set(schema["properties"])


def test_replayed_csv_demand(tmp_path: Path) -> None:
    rows = ["timestamp,orders,heat"]
    rows += [f"2026-03-01T{h:02d}:10:00Z,1,5" for h in range(24)]  # history (before start)
    rows += [f"2026-03-02T{h:02d}:00:00Z,{h},0" for h in range(24)]
    (tmp_path / "orders.csv").write_text("\n".join(rows) + "\n")
    doc = small()
    doc["hours"] = 48
    doc["demand"] = [{"sku": "SKU-T", "csv": "orders.csv"}]
    scenario = parse_scenario(doc, base_dir=tmp_path)
    world = realise(scenario, 0, seed=3)
    assert world.history.sum() == 24
    assert world.history_heat.sum() == 120
    assert list(world.demand[:24]) == list(range(24))
    assert world.demand[24:].sum() == 0


def test_common_random_numbers_across_policies() -> None:
    scenario = load_scenario(SMALL)
    first, again = realise(scenario, 0, 5), realise(scenario, 0, 5)
    other = realise(scenario, 0, 6)
    assert np.array_equal(first.demand, again.demand)
    assert not np.array_equal(first.demand, other.demand)
    assert np.array_equal(lead_draws(scenario, 0, 5), lead_draws(scenario, 0, 5))


def test_the_oracle_is_at_least_as_profitable_as_every_policy_on_every_seed() -> None:
    scenario = load_scenario(SMALL)
    result = simulate(scenario, [0, 1], oracle="milp", workers=1)
    for seed_index in range(2):
        oracle = result.per_seed["oracle"][seed_index]["profit"]
        for name, rows in result.per_seed.items():
            assert rows[seed_index]["profit"] <= oracle + 1e-6, name
        figures = result.oracle[seed_index]
        # the MILP's plan is feasible, so the LP relaxation bounds it (and its own bound)
        assert figures.profit == pytest.approx(oracle)
        assert figures.profit <= figures.mip_bound + 1e-6 <= figures.lp_bound + 1e-3
    summary = summarise(result)
    assert set(summary["policies"]["weekly-rop"]["aggregate"]) == set(METRICS)
    assert summary["differences"]["oracle"]["profit"]["mean"] <= 0
    assert summary["oracle"]["kind"] == "milp"
    assert len(summary["oracle"]["per_seed"]) == 2


@settings(max_examples=25, deadline=None)
@given(
    demand=st.lists(st.integers(0, 40), min_size=24, max_size=96),
    moq=st.integers(0, 60),
    case_pack=st.integers(1, 12),
    lead=st.integers(1, 30),
    initial=st.integers(0, 50),
)
def test_the_milp_respects_moq_and_case_pack_and_its_profit_is_what_the_plan_books(
    demand: list[int], moq: int, case_pack: int, lead: int, initial: int
) -> None:
    """The MILP's plan: whole cases, at least the MOQ, no better than the LP bound, no
    worse than ordering nothing, and its profit is the plan's own booking."""
    economics = SkuEconomics("S", 24.0, 8.0, 2.0, 0.48)
    options = (
        LeadTimeOption("f", "air", float(lead), 0.0, 8.0, moq=moq, case_pack=case_pack),
        LeadTimeOption("d", "domestic", 2.0, 0.0, 11.0, moq=10),
    )
    hours = len(demand)
    series = np.asarray(demand, dtype=np.float64)
    leads = np.array([[lead] * hours, [2] * hours], dtype=np.int64)
    solution = solve_oracle(economics, options, series, leads, float(initial))
    relaxed = solve_relaxed(economics, options, series, leads, float(initial))
    nothing = solve_oracle(economics, options, np.zeros(hours), leads, float(initial))
    for index, option in enumerate(options):
        placed = solution.orders[index][solution.orders[index] > 0]
        assert np.all(placed % option.case_pack == 0)
        assert np.all(placed >= option.moq)
    sold, stock, profit = book(economics, options, solution.orders, series, leads, initial)
    assert profit == pytest.approx(solution.profit)
    assert np.all(sold <= series + 1e-9)
    assert np.all(stock >= -1e-9)
    assert solution.profit <= relaxed.bound + 1e-6
    idle = book(economics, options, np.zeros((2, hours)), series, leads, initial)[2]
    # (the MILP prices holding per block of hours; booking it hour by hour can differ by a
    # little holding where a block runs out)
    assert solution.profit >= idle - 0.01 * abs(idle) - 1.0
    assert nothing.orders.sum() == 0


def test_seeds_in_a_process_pool_give_the_serial_numbers() -> None:
    scenario = load_scenario(SMALL)
    seeds = [3, 4, 5]
    serial = simulate(scenario, seeds, oracle="milp", workers=1, trace_seed=4)
    pooled = simulate(scenario, seeds, oracle="milp", workers=2, trace_seed=4)
    assert pooled.per_seed == serial.per_seed
    assert pooled.oracle == serial.oracle
    assert serial.trace is not None
    assert pooled.trace is not None
    assert np.array_equal(serial.trace.demand, pooled.trace.demand)
    for name in serial.policies:
        assert np.array_equal(serial.trace.stock[name], pooled.trace.stock[name])


def test_lost_sales_accounting() -> None:
    """Sold never exceeds demand or stock, and without orders stock only falls."""
    scenario = load_scenario(SMALL)
    world = realise(scenario, 0, 2)
    run = run_policy("weekly-rop", scenario, 0, world, lead_draws(scenario, 0, 2), 2)
    assert np.all(run.sold <= world.demand + 1e-9)
    assert np.all(run.stock >= 0)
    if not run.orders:
        assert np.all(np.diff(run.stock) <= 0)


@pytest.mark.parametrize("horizon", [1, 5, 24, 200])
def test_vectorised_baseline_quantiles_equal_the_forecasts(horizon: int) -> None:
    rng = np.random.default_rng(horizon)
    baseline = fit_baseline(rng.negative_binomial(0.6, 0.6 / 0.9, 500).astype(float), horizon=24)
    levels = (0.01, 0.1, 0.5, 0.8, 0.97, 0.99)
    ours = baseline_window_quantiles(baseline, horizon, levels)
    assert list(ours) == pytest.approx(baseline.quantiles(horizon, levels))


def test_cli_end_to_end(tmp_path: Path) -> None:
    output, plot = tmp_path / "results.json", tmp_path / "results.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pulsestock.cli",
            "simulate",
            "--scenario",
            str(SMALL),
            "--seeds",
            "1",
            "--policies",
            "pulsestock,weekly-rop,oracle",
            "--output",
            str(output),
            "--plot",
            str(plot),
            "--network",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "weekly-rop" in done.stdout
    assert "minus each policy" in done.stdout
    assert "with transfers minus without" in done.stdout
    results = json.loads(output.read_text())
    assert set(results["policies"]) == {"pulsestock", "weekly-rop", "oracle"}
    assert set(results["differences"]) == {"weekly-rop", "oracle"}
    assert len(results["policies"]["pulsestock"]["per_seed"]) == 1
    network = results["network"]
    assert network["seeds"] == [0]
    assert set(network["differences"]) >= {"lost_units", "profit", "transfer_units"}
    page = plot.read_text()
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_cli_reports_an_invalid_scenario(tmp_path: Path) -> None:
    doc = copy.deepcopy(small())
    doc["skus"][0]["price"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    done = subprocess.run(
        [sys.executable, "-m", "pulsestock.cli", "simulate", "--scenario", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "skus[0].price" in done.stderr


def test_heat_opens_a_pulse_before_the_orders_rise() -> None:
    """Heat (views an hour) climbing for 8 hours over a quiet background while orders are
    still at baseline: the informed forecast already expects the pulse's excess after the
    prior lead, and the blind one (orders only) does not."""
    from pulsestock.fulfillment.application.forecasting import blind_forecast, informed_forecast

    rng = np.random.default_rng(4)
    hours = 24 * 40
    orders = rng.poisson(0.3, hours).astype(np.float64)
    heat = 300.0 * np.exp(rng.normal(0, 0.2, hours))
    heat[-8:] = np.linspace(3_000, 20_000, 8)
    informed, reading = informed_forecast(orders, heat, seed=1)
    assert reading.onset == hours - 8
    assert informed.pulse is not None
    ahead = informed.mean(48)
    assert ahead[6:30].sum() > 100  # the heat seen, at ~1 order per 1,000 views
    blind = blind_forecast(orders, seed=1)
    assert blind.mean(48)[6:30].sum() < 20


def test_kept_baseline_windows_change_no_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The informed policy reuses its baseline's window quantiles between daily refits; an
    outlook computing its own every review orders exactly the same."""
    from pulsestock.fulfillment.application import policies

    scenario = load_scenario(ROOT / "scenarios" / "viral_pulse.json")  # 90 daily refits
    world, leads = realise(scenario, 0, 1), lead_draws(scenario, 0, 1)
    cached = run_policy("pulsestock", scenario, 0, world, leads, 1)

    class FreshOutlook(ForecastOutlook):
        def __init__(self, forecast: Any, baseline_windows: Any = None) -> None:
            super().__init__(forecast)

    monkeypatch.setattr(policies, "ForecastOutlook", FreshOutlook)
    fresh = run_policy("pulsestock", scenario, 0, world, leads, 1)
    assert cached.orders
    assert fresh.orders == cached.orders
    assert np.array_equal(fresh.stock, cached.stock)
