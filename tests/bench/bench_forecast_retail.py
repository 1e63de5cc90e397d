"""Intermittent baseline demand on real retail data (issue 11, item 5): ours against the
field's intermittent methods on rolling origins of daily SKU sales.

Data (real, /work/shared/data, see its README): UCI Online Retail (Chen, Sain & Guo 2012,
CC BY 4.0), a UK online gift retailer's daily units per SKU, 2010-12-01..2011-12-09.
Days without sales are absent from the file: each SKU is reindexed to every calendar day
from its first sale to the file's last day, the missing days being zeros (the shop does not
trade on Saturdays and closed over Christmas: those zeros are real, and every model sees
them).

SKUs, by one rule stated here: those first sold in the file's first 28 days (so each has
about eleven months of history) and sold on at least 20 distinct days (intermittent, not
dead), then a seeded random sample (numpy default_rng(SAMPLE_SEED)) of SAMPLE_SIZE of them.
Nothing in this file was tuned on these numbers: the models come as they are.

Protocol (application/backtest.py, the code `pulsestock backtest` runs): origins every
ORIGIN_EVERY days from day MIN_HISTORY of each SKU on, each model seeing the days up to its
origin only and forecasting the next H days (H = 7 and 28). Scores pooled over every origin
of every sampled SKU: RMSSE and MASE (M5's in-sample naive scaling), pinball loss at
p10/p50/p90 in units and scaled like M5's scaled pinball loss, CRPS, coverage of the 80 %
interval (p10..p90, goal 75-85 %), median |log ratio| of the horizon's total. Paired
bootstrap 95 % intervals of ours minus each baseline resample SKUs (each SKU's mean over
its origins). Goal (issue 11): ours no worse than the best of Croston, SBA, TSB and ADIDA in
RMSSE and in pinball loss, with 80 % coverage within 75-85 %.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
from pulsestock.forecast.application.backtest import (
    BacktestReport,
    Forecaster,
    OriginForecast,
    SeriesBacktest,
    backtest_series,
    pooled_report,
    scorable_origins,
)
from pulsestock.forecast.domain.baselines import SEASONS
from pulsestock.forecast.domain.demand import fit_demand

from tests.bench.report import emit
from tests.helpers.shared import shared_dir

DATA = "uci_online_retail_daily/sku_daily.csv.gz"
SAMPLE_SEED = 2012
SAMPLE_SIZE = 60
FIRST_SOLD_WITHIN_DAYS = 28
MIN_SALE_DAYS = 20
MIN_HISTORY = 56
ORIGIN_EVERY = 14
HORIZONS = (7, 28)
LEVELS = (0.1, 0.5, 0.9)
INTERMITTENT = ("croston", "sba", "tsb", "adida")
SOURCE = "UCI Online Retail (Chen, Sain & Guo 2012, CC BY 4.0), daily units per SKU"


def load_skus() -> dict[str, np.ndarray]:
    """Every SKU's daily units from its first sale to the file's last day, zeros filled."""
    sales: dict[str, dict[date, float]] = defaultdict(dict)
    with gzip.open(shared_dir() / "data" / DATA, "rt", newline="") as source:
        for row in csv.DictReader(source):
            day = date.fromisoformat(row["date"])
            sales[row["StockCode"]][day] = sales[row["StockCode"]].get(day, 0.0) + float(row["qty"])
    last = max(max(days) for days in sales.values())
    out = {}
    for sku, days in sales.items():
        first = min(days)
        series = np.zeros((last - first).days + 1)
        for day, qty in days.items():
            series[(day - first).days] = qty
        out[sku] = series
    return out


def sample(skus: dict[str, np.ndarray]) -> tuple[list[str], int]:
    """The documented rule: first sold early enough, sold on enough days, seeded sample."""
    longest = max(series.size for series in skus.values())
    eligible = sorted(
        sku
        for sku, series in skus.items()
        if series.size > longest - FIRST_SOLD_WITHIN_DAYS
        and np.count_nonzero(series) >= MIN_SALE_DAYS
    )
    rng = np.random.default_rng(SAMPLE_SEED)
    picked = rng.choice(len(eligible), size=min(SAMPLE_SIZE, len(eligible)), replace=False)
    return [eligible[i] for i in sorted(picked)], len(eligible)


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def table(scored: BacktestReport) -> dict[str, dict[str, Any]]:
    return {
        summary.model: {
            "rmsse": rounded(summary.rmsse),
            "mase": rounded(summary.mase),
            "scaled_pinball": rounded(summary.scaled_pinball),
            "pinball": {f"{k:g}": rounded(v) for k, v in summary.pinball_by_level.items()},
            "pinball_mean": rounded(summary.pinball_mean),
            "crps": rounded(summary.crps),
            "coverage_80": rounded(summary.coverage_80, 3),
            "median_abs_log_ratio": rounded(summary.log_ratio_median_abs),
        }
        for summary in scored.models
    }


def differences(scored: BacktestReport, score: str) -> dict[str, list[float | None]]:
    return {
        name: [rounded(i.mean), rounded(i.low), rounded(i.high)]
        for name, scores in scored.differences.items()
        for i in [scores[score]]
    }


def report_horizon(label: str, backtests: list[SeriesBacktest], seconds: float) -> None:
    scored = pooled_report(backtests)
    ours = scored.ours
    best_rmsse = min(INTERMITTENT, key=lambda m: scored.model(m).rmsse)
    best_pinball = min(INTERMITTENT, key=lambda m: scored.model(m).pinball_mean)
    best_spl = min(INTERMITTENT, key=lambda m: scored.model(m).scaled_pinball)
    coverage_ok = 0.75 <= ours.coverage_80 <= 0.85
    common: dict[str, Any] = {
        "source": SOURCE,
        "skus": scored.unit_count,
        "origins": scored.origin_count,
        "horizon_days": scored.horizon,
    }
    emit(
        f"forecast.retail_daily.{label}.rmsse",
        ours.rmsse,
        "rmsse",
        baseline=scored.model(best_rmsse).rmsse,
        lower_is_better=True,
        baseline_is=f"the best of Croston, SBA, TSB, ADIDA on this run: {best_rmsse}",
        goal_met=bool(ours.rmsse <= scored.model(best_rmsse).rmsse),
        worse_beyond_ci95=bool(scored.differences[best_rmsse]["rmsse"].low > 0),
        ours_minus_baseline_ci95=differences(scored, "rmsse"),
        **common,
    )
    emit(
        f"forecast.retail_daily.{label}.pinball",
        ours.pinball_mean,
        "units_mean_p10_p50_p90",
        baseline=scored.model(best_pinball).pinball_mean,
        lower_is_better=True,
        baseline_is=f"the best of Croston, SBA, TSB, ADIDA on this run: {best_pinball}",
        goal_met=bool(ours.pinball_mean <= scored.model(best_pinball).pinball_mean),
        scaled_pinball_worse_beyond_ci95=bool(
            scored.differences[best_spl]["scaled_pinball"].low > 0
        ),
        scaled_pinball=rounded(ours.scaled_pinball),
        scaled_pinball_best_baseline=[best_spl, rounded(scored.model(best_spl).scaled_pinball)],
        scaled_pinball_ours_minus_baseline_ci95=differences(scored, "scaled_pinball"),
        crps_ours_minus_baseline_ci95=differences(scored, "crps"),
        note="pinball in units averaged over levels, origins and days; the bootstrap"
        " intervals are on the scale-free scaled pinball (M5's SPL) and CRPS, per SKU",
        **common,
    )
    emit(
        f"forecast.retail_daily.{label}.coverage_80",
        ours.coverage_80,
        "share_in_p10_p90",
        goal_met=coverage_ok,
        goal="0.75 <= coverage <= 0.85",
        models=table(scored),
        ours_methods=dict(sorted(ours.chosen.items())),
        seconds=round(seconds, 1),
        **common,
    )


def our_baseline_only(
    seen: np.ndarray, heat: np.ndarray | None, horizon: int, levels: Sequence[float]
) -> OriginForecast:
    """The ablation: our baseline (baseline.py, conformal quantiles) without the pulse
    component, i.e. demand.fit_demand with no pulse."""
    fitted = fit_demand(seen, horizon_hint=horizon)
    return OriginForecast(fitted.mean(horizon), fitted.step_quantiles(horizon, levels), "base")


async def run(infra: Any, *, ablation: bool = False) -> None:
    del infra  # pure: the data file only
    skus = load_skus()
    picked, eligible = sample(skus)
    emit(
        "forecast.retail_daily.sample",
        len(picked),
        "skus",
        eligible=eligible,
        rule=f"first sold within the file's first {FIRST_SOLD_WITHIN_DAYS} days, sold on >="
        f" {MIN_SALE_DAYS} days; seeded sample (default_rng({SAMPLE_SEED})) of {SAMPLE_SIZE}",
        zero_days_share=round(float(np.mean(np.concatenate([skus[s] for s in picked]) == 0)), 3),
        source=SOURCE,
    )
    variants: list[tuple[str, Forecaster | None]] = [("", None)]
    if ablation:
        variants.append((".baseline_only", our_baseline_only))
    for horizon in HORIZONS:
        for suffix, ours in variants:
            started = time.perf_counter()
            backtests = [
                backtest_series(
                    skus[sku],
                    horizon=horizon,
                    origins=scorable_origins(
                        skus[sku].size, horizon, min_history=MIN_HISTORY, every=ORIGIN_EVERY
                    ),
                    levels=LEVELS,
                    season=SEASONS["daily"],
                    ours=ours,
                )
                for sku in picked
            ]
            report_horizon(f"h{horizon}{suffix}", backtests, time.perf_counter() - started)


if __name__ == "__main__":
    # `--ablation` adds ours without the pulse component (not part of `make bench`: time).
    asyncio.run(run(None, ablation="--ablation" in sys.argv[1:]))
