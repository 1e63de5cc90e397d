"""Replenishment and the policy simulator: speed, and the simulator's figures on the
shipped scenarios (pure domain code on a simulated clock; `infra` is not used).

- fulfillment.review_10k_skus: one replenishment review (sea, air, domestic options) for
  each of 10,000 SKUs with intermittent baselines (log-uniform 0.01-3 units an hour), the
  forecasts built by forecast's own code; against a vectorised weekly reorder-point
  computation over the same SKUs (what a history-based tool does per review).
- fulfillment.simulate_20_seeds_90_days: wall time of 20 seeds x 90 days of
  scenarios/viral_pulse.json with all seven policies as `pulsestock simulate` runs it (seeds
  in one process per CPU, the LP oracle; goal: under a minute), against the same run with
  every seed in this process (workers=1), measured here too; the two must agree number for
  number.
- fulfillment.simulate_20_seeds_90_days_milp: the same with the MILP oracle (MOQ and case
  pack respected), against the LP run above; with the oracle's status counts and gaps.
- fulfillment.<scenario>.<metric>: per shipped scenario (20 seeds, MILP oracle),
  pulsestock's mean and 95 % interval, and its paired difference to weekly-rop and
  pulsestock-blind (relative change vs weekly-rop for lost and leftover units; share of the
  oracle's profit, and of the LP bound's). The month runs pulsestock, blind, weekly-rop and
  the oracle; steady pulsestock, blind, weekly-rop and the oracle (its goal: profit not
  below weekly-rop's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pulsestock.forecast.domain.demand import DemandForecast, prior_baseline
from pulsestock.fulfillment.application.forecasting import ForecastOutlook
from pulsestock.fulfillment.application.policies import POLICY_NAMES
from pulsestock.fulfillment.application.scenario import Scenario, load_scenario
from pulsestock.fulfillment.application.simulator import simulate, summarise
from pulsestock.fulfillment.domain.master_data import LeadTimeOption, SkuEconomics
from pulsestock.fulfillment.domain.replenishment import StockPosition, review

from tests.bench.report import emit

ROOT = Path(__file__).resolve().parent.parent.parent
SCENARIOS = ROOT / "scenarios"
SKUS = 10_000
SEEDS = 20
OPTIONS = (
    LeadTimeOption("factory", "sea", 720, 96, 6.0, moq=200, case_pack=50),
    LeadTimeOption("factory", "air", 120, 24, 8.0, moq=50, case_pack=10),
    LeadTimeOption("3pl", "domestic", 24, 6, 11.0, moq=10),
)
ECONOMICS = SkuEconomics("bench", 24.0, 8.0, 2.0, 0.02)


def _review_speed() -> None:
    rng = np.random.default_rng(12)
    rates = np.exp(rng.uniform(np.log(0.01), np.log(3.0), SKUS))
    sizes = rng.uniform(0.5, 5.0, SKUS)
    on_hand = rng.uniform(0, 24 * 30, SKUS) * rates
    outlooks = [
        ForecastOutlook(DemandForecast(prior_baseline(float(r), float(s))))
        for r, s in zip(rates, sizes, strict=True)
    ]
    started = time.perf_counter()
    ordering = 0
    for outlook, stock in zip(outlooks, on_hand, strict=True):
        recommendation = review(ECONOMICS, OPTIONS, outlook, StockPosition(float(stock)), 0)
        ordering += bool(recommendation.orders)
    ours = time.perf_counter() - started

    daily = rng.poisson(rates[:, None] * 24, size=(SKUS, 28)).astype(np.float64)
    started = time.perf_counter()
    adu, sigma = daily.mean(axis=1), daily.std(axis=1, ddof=1)
    lead = OPTIONS[1].lead_time_mean_hours / 24
    rop = adu * lead + 1.65 * sigma * np.sqrt(lead)
    quantity = np.where(on_hand <= rop, adu * (lead + 37) + 1.65 * sigma * np.sqrt(lead), 0.0)
    baseline = time.perf_counter() - started
    emit(
        "fulfillment.review_10k_skus",
        ours,
        "s",
        baseline=baseline,
        lower_is_better=True,
        skus=SKUS,
        options=len(OPTIONS),
        ms_per_sku=round(ours / SKUS * 1000, 3),
        skus_ordering=ordering,
        baseline_ordering=int((quantity > 0).sum()),
        baseline_is="vectorised weekly reorder point (numpy), no forecast",
    )


def _interval(entry: dict[str, Any]) -> list[float]:
    return [round(v, 3) for v in entry["ci95"]]


def _lp_share(result: Any) -> float:
    """pulsestock's mean share of the LP bound (the oracle before MOQ and case pack)."""
    shares = [
        row["profit"] / figures.lp_bound
        for row, figures in zip(result.per_seed["pulsestock"], result.oracle, strict=True)
        if figures.lp_bound > 0
    ]
    return float(np.mean(shares)) if shares else float("nan")


def _report(name: str, summary: dict[str, Any], result: Any) -> None:
    ours = summary["policies"]["pulsestock"]["aggregate"]
    rop = summary["policies"]["weekly-rop"]["aggregate"]
    diffs = summary["differences"]
    for metric in ("lost_units", "leftover_units_14d"):
        diff = diffs["weekly-rop"][metric]
        base = rop[metric]["mean"]
        value = ours[metric]["mean"]
        emit(
            f"fulfillment.{name}.{metric}",
            value,
            "units",
            # a ratio to a zero (nothing lost) would divide by zero
            baseline=base if value > 0 else None,
            lower_is_better=True,
            weekly_rop=round(base, 3),
            ci95=_interval(ours[metric]),
            vs_weekly_rop=round(diff["mean"], 3),
            vs_weekly_rop_ci95=_interval(diff),
            change_vs_weekly_rop=round(diff["mean"] / base, 3) if base else None,
            **(
                {
                    "vs_blind": round(diffs["pulsestock-blind"][metric]["mean"], 3),
                    "vs_blind_ci95": _interval(diffs["pulsestock-blind"][metric]),
                }
                if "pulsestock-blind" in diffs
                else {}
            ),
        )
    for policy in ("weekly-rop", "pulsestock-blind"):
        if policy not in diffs:
            continue
        diff = diffs[policy]["profit"]
        emit(
            f"fulfillment.{name}.profit_vs_{policy}",
            diff["mean"],
            "currency",
            ci95=_interval(diff),
            ours=round(ours["profit"]["mean"], 3),
            theirs=round(summary["policies"][policy]["aggregate"]["profit"]["mean"], 3),
        )
    emit(
        f"fulfillment.{name}.oracle_profit_share",
        ours["oracle_profit_share"]["mean"],
        "ratio",
        ci95=_interval(ours["oracle_profit_share"]),
        fill_rate=round(ours["fill_rate"]["mean"], 3),
        pulse_fill_rate=round(ours["pulse_fill_rate"]["mean"], 3),
        blind_share=round(
            summary["policies"]["pulsestock-blind"]["aggregate"]["oracle_profit_share"]["mean"],
            3,
        )
        if "pulsestock-blind" in summary["policies"]
        else None,
        weekly_rop_share=round(rop["oracle_profit_share"]["mean"], 3),
        oracle="milp",
        share_of_lp_bound=round(_lp_share(result), 3),
        mip_gap_max=round(summary["oracle"]["aggregate"]["mip_gap"]["max"], 4),
    )


def _timed(scenario: Scenario, policies: Sequence[str], **options: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = simulate(scenario, list(range(SEEDS)), policies, **options)
    return time.perf_counter() - started, result


def _oracle_extra(result: Any) -> dict[str, Any]:
    oracle = summarise(result)["oracle"]["aggregate"]
    return {
        "oracle_statuses": oracle["statuses"],
        "mip_gap_mean": round(oracle["mip_gap"]["mean"], 4),
        "mip_gap_max": round(oracle["mip_gap"]["max"], 4),
        "lp_gap_mean": round(oracle["lp_gap"]["mean"], 4),
        "lp_gap_max": round(oracle["lp_gap"]["max"], 4),
    }


async def run(infra: object) -> None:
    _review_speed()
    viral = load_scenario(SCENARIOS / "viral_pulse.json")
    pooled_s, pooled = _timed(viral, POLICY_NAMES)
    serial_s, serial = _timed(viral, POLICY_NAMES, workers=1)
    emit(
        "fulfillment.simulate_20_seeds_90_days",
        pooled_s,
        "s",
        baseline=serial_s,
        lower_is_better=True,
        baseline_is="the same run with every seed in one process (workers=1)",
        workers=os.cpu_count(),
        scenario="viral_pulse",
        policies=len(pooled.policies),
        hours=viral.hours,
        oracle="lp",
        same_numbers_as_serial=pooled.per_seed == serial.per_seed,
        goal_s=60,
    )
    milp_s, milp = _timed(viral, POLICY_NAMES, oracle="milp")
    emit(
        "fulfillment.simulate_20_seeds_90_days_milp",
        milp_s,
        "s",
        baseline=pooled_s,
        lower_is_better=True,
        baseline_is="the LP-oracle run above",
        workers=os.cpu_count(),
        **_oracle_extra(milp),
    )
    _report("viral_pulse", summarise(milp), milp)
    compared = {
        "month_of_pulses": ("pulsestock", "pulsestock-blind", "weekly-rop", "oracle"),
        "steady": ("pulsestock", "pulsestock-blind", "weekly-rop", "oracle"),
    }
    for name, policies in compared.items():
        scenario = load_scenario(SCENARIOS / f"{name}.json")
        result = simulate(scenario, list(range(SEEDS)), policies, oracle="milp")
        _report(name, summarise(result), result)
