"""Rolling-origin backtests (FORECAST.md, "How to measure a forecast"): ours and every
reference model forecast from the same origins, each from the data up to its origin alone,
and are scored on the same outcomes. Shared by `pulsestock backtest`, the Backtest RPC and
the benchmarks, so all three report the same numbers. Pure: no I/O, no clock.

An origin is the index of the last bucket a forecast may see: the forecast made there uses
`history[: origin + 1]` and is scored on the `horizon` buckets after it. Only origins whose
whole horizon has been observed are scored.

Scores per model and origin (metrics.py's conventions): pinball loss per level and its mean
scaled by the in-sample naive one-step error (M5's scaled pinball loss), CRPS from the
quantiles at metrics.CRPS_LEVELS, the share of the horizon's buckets inside the 80 % interval
(p10..p90), RMSSE, MASE, and the log ratio of forecast to actual demand summed over the
horizon. Paired differences, ours minus each baseline, take a bootstrap 95 % interval over
units: the origins of one series (`report`: overlapping horizons make neighbouring origins
correlated, so that interval is narrower than the truth), or the series of a collection,
each summarised by its mean over its origins (`pooled_report`: the honest unit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain import demand, metrics
from pulsestock.forecast.domain.baselines import nb_quantiles, reference_forecasts

Series = NDArray[np.float64]

OURS = "ours"
INTERVAL_80 = (0.1, 0.9)
BOOTSTRAP_DRAWS = 2000
# The per-origin scores a paired difference is reported for (lower is better for each;
# the log ratio is compared in absolute value: over- and under-forecasting both cost).
COMPARED = ("rmsse", "mase", "crps", "scaled_pinball", "abs_log_ratio")


@dataclass(frozen=True)
class OriginForecast:
    """One model's forecast from one origin: per-step means (horizon,) and per-step
    quantiles (horizon, len(levels)), the levels ascending."""

    means: Series
    quantiles: Series
    model: str = OURS


# history up to and including the origin, heat aligned with it (or None), horizon, levels
Forecaster = Callable[[Series, Series | None, int, Sequence[float]], OriginForecast]


def our_forecast(seed: int = 0) -> Forecaster:
    """Our forecast (demand.forecast_history, the service's and the CLI's code path)."""

    def forecast(
        history: Series, heat: Series | None, horizon: int, levels: Sequence[float]
    ) -> OriginForecast:
        fitted = demand.forecast_history(
            history,
            heat=None if heat is None else [float(v) for v in heat],
            horizon_hint=horizon,
            seed=seed,
        )
        return OriginForecast(
            fitted.mean(horizon), fitted.step_quantiles(horizon, levels), fitted.model
        )

    return forecast


def scoring_levels(levels: Sequence[float] = ()) -> tuple[float, ...]:
    """Every level a backtest needs: the reported ones, the 80 % interval's ends and the
    CRPS grid, ascending."""
    chosen = demand.validate_levels(levels) if levels else ()
    return tuple(sorted({*chosen, *INTERVAL_80, *metrics.CRPS_LEVELS}))


@dataclass(frozen=True)
class ModelScores:
    """One model's scores at each origin of one series (arrays aligned with `origins`)."""

    model: str
    origins: NDArray[np.intp]
    levels: tuple[float, ...]  # the reported pinball levels
    pinball: Series  # (origins, levels): mean over the horizon's buckets
    scaled_pinball: Series  # (origins,): mean over the reported levels / naive MAE scale
    crps: Series
    coverage_80: Series  # share of the horizon's buckets inside p10..p90
    rmsse: Series
    mase: Series
    log_ratio: Series
    chosen: tuple[str, ...] = ()  # the model each origin's forecast named (ours: the method)

    def per_origin(self, score: str) -> Series:
        if score == "abs_log_ratio":
            return np.abs(self.log_ratio)
        values: Series = getattr(self, score)
        return values


@dataclass(frozen=True)
class SeriesBacktest:
    """Every model's scores on the same origins of one series; ours first."""

    horizon: int
    origins: NDArray[np.intp]
    levels: tuple[float, ...]
    models: dict[str, ModelScores] = field(default_factory=dict)


def scorable_origins(
    size: int, horizon: int, *, min_history: int, every: int = 1
) -> NDArray[np.intp]:
    """Origins with at least `min_history` buckets up to them and a whole observed horizon
    after, every `every`-th one counted from the first (so a longer file keeps the origins
    a shorter one had)."""
    if horizon <= 0 or min_history < 1 or every < 1:
        raise ValueError("horizon, min_history and every must be positive")
    return np.arange(min_history - 1, size - horizon, every, dtype=np.intp)


def backtest_series(
    history: Sequence[float] | Series,
    *,
    horizon: int,
    origins: Sequence[int] | NDArray[np.intp],
    levels: Sequence[float] = demand.DEFAULT_LEVELS,
    heat: Sequence[float] | Series | None = None,
    season: int | None = None,
    seed: int = 0,
    ours: Forecaster | None = None,
) -> SeriesBacktest:
    """Forecast from every origin with ours and every reference model and score them all
    on the same outcomes."""
    series = np.asarray(history, dtype=np.float64)
    if series.ndim != 1 or np.any(series < 0) or not np.all(np.isfinite(series)):
        raise ValueError("history must be a finite, non-negative 1-D series")
    heat_series = None if heat is None else np.asarray(heat, dtype=np.float64)
    if heat_series is not None and heat_series.shape != series.shape:
        raise ValueError("heat must be aligned with history")
    at = np.asarray(origins, dtype=np.intp)
    if at.size == 0:
        raise ValueError("a backtest needs at least one origin")
    if np.any(at < 0) or np.any(at + horizon >= series.size):
        raise ValueError("every origin needs its whole horizon observed")
    reported = demand.validate_levels(levels)
    grid = scoring_levels(reported)
    forecaster = ours or our_forecast(seed)
    forecasts: dict[str, list[OriginForecast]] = {OURS: []}
    for origin in at:
        seen = series[: origin + 1]
        seen_heat = None if heat_series is None else heat_series[: origin + 1]
        forecasts[OURS].append(forecaster(seen, seen_heat, horizon, grid))
        references = reference_forecasts(seen, horizon, season=season)
        # One NB quantile call for every reference (they share the history's dispersion).
        dispersion = next(iter(references.values())).dispersion
        stacked = np.concatenate([reference.means for reference in references.values()])
        quantiles = nb_quantiles(stacked, dispersion, grid).reshape(len(references), horizon, -1)
        for (name, reference), q in zip(references.items(), quantiles, strict=True):
            forecasts.setdefault(name, []).append(OriginForecast(reference.means, q, name))
    actual = series[at[:, None] + 1 + np.arange(horizon)[None, :]]
    scales = _naive_scales(series, at)
    models = {
        name: _score(name, actual, scales, at, grid, reported, made)
        for name, made in forecasts.items()
    }
    return SeriesBacktest(horizon, at, tuple(sorted(reported)), models)


def _naive_scales(series: Series, origins: NDArray[np.intp]) -> tuple[Series, Series]:
    """metrics.naive_scale (absolute, squared) of history[: o + 1] for every origin o, from
    running sums: NaN where the history never moved."""
    steps = np.diff(series)
    absolute = np.concatenate(([0.0], np.cumsum(np.abs(steps))))[origins]
    squared = np.concatenate(([0.0], np.cumsum(steps * steps)))[origins]
    count = np.maximum(origins, 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            np.where(absolute > 0, absolute / count, np.nan),
            np.where(squared > 0, squared / count, np.nan),
        )


def _score(
    name: str,
    actual: Series,
    scales: tuple[Series, Series],
    origins: NDArray[np.intp],
    grid: tuple[float, ...],
    reported: Sequence[float],
    made: Sequence[OriginForecast],
) -> ModelScores:
    """metrics.py's scores of every origin at once (test_backtest checks them against the
    per-origin functions): actual (origins, horizon), quantiles (origins, horizon, levels)."""
    reported_sorted = tuple(sorted(reported))
    horizon = actual.shape[1]
    means = np.stack([np.asarray(f.means, dtype=np.float64) for f in made])
    q = np.stack(
        [np.asarray(f.quantiles, dtype=np.float64).reshape(horizon, len(grid)) for f in made]
    )
    taus = np.asarray(grid)
    diff = actual[:, :, None] - q
    loss = np.where(diff >= 0, taus * diff, (taus - 1) * diff).mean(axis=1)  # (origins, levels)
    crps_at = [grid.index(level) for level in metrics.CRPS_LEVELS]
    low = q[:, :, grid.index(INTERVAL_80[0])]
    high = q[:, :, grid.index(INTERVAL_80[1])]
    absolute, squared = scales
    error = actual - means
    reported_loss = loss[:, [grid.index(level) for level in reported_sorted]]
    return ModelScores(
        name,
        origins,
        reported_sorted,
        reported_loss,
        reported_loss.mean(axis=1) / absolute,
        2.0 * loss[:, crps_at].mean(axis=1),
        ((actual >= low) & (actual <= high)).mean(axis=1),
        np.sqrt((error * error).mean(axis=1) / squared),
        np.abs(error).mean(axis=1) / absolute,
        np.log((means.sum(axis=1) + 1.0) / (actual.sum(axis=1) + 1.0)),
        tuple(f.model for f in made),
    )


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        return {"mean": _finite(self.mean), "low": _finite(self.low), "high": _finite(self.high)}


@dataclass(frozen=True)
class ModelSummary:
    """A model's scores averaged over the units (origins, or series) of a report."""

    model: str
    pinball_by_level: dict[float, float]
    scaled_pinball: float
    crps: float
    coverage_80: float
    rmsse: float
    mase: float
    log_ratio_median_abs: float  # the typical size of the error in total demand
    log_ratio_mean: float  # its bias: positive = over-forecast
    chosen: dict[str, int]  # how many origins each named model forecast (ours: its methods)

    @property
    def pinball_mean(self) -> float:
        return float(np.mean(list(self.pinball_by_level.values())))

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pinball": {f"{level:g}": _finite(v) for level, v in self.pinball_by_level.items()},
            "pinball_mean": _finite(self.pinball_mean),
            "scaled_pinball": _finite(self.scaled_pinball),
            "crps": _finite(self.crps),
            "coverage_80": _finite(self.coverage_80),
            "rmsse": _finite(self.rmsse),
            "mase": _finite(self.mase),
            "cumulative_log_ratio": {
                "median_abs": _finite(self.log_ratio_median_abs),
                "mean": _finite(self.log_ratio_mean),
            },
            "chosen": dict(sorted(self.chosen.items())),
        }


@dataclass(frozen=True)
class BacktestReport:
    horizon: int
    units: str  # what the bootstrap resamples: "origins" or "series"
    unit_count: int
    origin_count: int
    models: list[ModelSummary]  # ours first, then the references in FORECAST.md's order
    # baseline -> score -> ours minus the baseline (mean over units, bootstrap 95 % interval)
    differences: dict[str, dict[str, Interval]]

    @property
    def ours(self) -> ModelSummary:
        return self.models[0]

    def model(self, name: str) -> ModelSummary:
        return next(summary for summary in self.models if summary.model == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "origins": self.origin_count,
            "bootstrap_units": self.units,
            "bootstrap_unit_count": self.unit_count,
            "bootstrap_note": (
                "neighbouring origins' horizons overlap, so their scores are correlated and"
                " these intervals are narrower than the truth"
                if self.units == "origins"
                else "each unit is a series' mean over its origins"
            ),
            "models": [summary.as_dict() for summary in self.models],
            "ours_minus_baseline": {
                baseline: {score: interval.as_dict() for score, interval in scores.items()}
                for baseline, scores in self.differences.items()
            },
            "conventions": (
                "lower is better for every score except coverage_80 (goal 0.80);"
                " pinball per level and CRPS in demand units per bucket, averaged over"
                " origins and the horizon's buckets; scaled_pinball, rmsse and mase are"
                " scaled by the in-sample naive one-step error before each origin (NaN,"
                " here null, when the history never moved); cumulative_log_ratio is"
                " log((forecast total + 1) / (actual total + 1)) over the horizon;"
                " ours_minus_baseline: mean difference of per-unit scores with a paired"
                " bootstrap 95 % interval (negative = ours better)"
            ),
        }


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined score is null."""
    return float(value) if np.isfinite(value) else None


def _nanmean(values: Series) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _summary(scores: ModelScores) -> ModelSummary:
    return ModelSummary(
        scores.model,
        {level: float(scores.pinball[:, i].mean()) for i, level in enumerate(scores.levels)},
        _nanmean(scores.scaled_pinball),
        float(scores.crps.mean()),
        float(scores.coverage_80.mean()),
        _nanmean(scores.rmsse),
        _nanmean(scores.mase),
        float(np.median(np.abs(scores.log_ratio))),
        float(scores.log_ratio.mean()),
        dict(Counter(scores.chosen)),
    )


def _differences(
    per_unit: Mapping[str, Mapping[str, Series]], draws: int, seed: int
) -> dict[str, dict[str, Interval]]:
    ours = per_unit[OURS]
    return {
        name: {
            score: Interval(
                *metrics.paired_bootstrap(ours[score], theirs[score], draws=draws, seed=seed)
            )
            for score in COMPARED
        }
        for name, theirs in per_unit.items()
        if name != OURS
    }


def report(
    backtest: SeriesBacktest, *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> BacktestReport:
    """One series' report: the bootstrap resamples its origins."""
    per_unit = {
        name: {score: scores.per_origin(score) for score in COMPARED}
        for name, scores in backtest.models.items()
    }
    return BacktestReport(
        backtest.horizon,
        "origins",
        int(backtest.origins.size),
        int(backtest.origins.size),
        [_summary(scores) for scores in backtest.models.values()],
        _differences(per_unit, draws, seed),
    )


def pooled_report(
    backtests: Sequence[SeriesBacktest], *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> BacktestReport:
    """Many series' report: scores over every origin of every series; the bootstrap
    resamples series, each summarised by its own mean over its origins."""
    if not backtests:
        raise ValueError("a pooled report needs at least one series")
    horizons = {b.horizon for b in backtests}
    if len(horizons) != 1:
        raise ValueError("pooled series must share one horizon")
    names = list(backtests[0].models)
    pooled = {name: _concatenate([b.models[name] for b in backtests]) for name in names}
    per_unit = {
        name: {
            score: np.array([_nanmean(b.models[name].per_origin(score)) for b in backtests])
            for score in COMPARED
        }
        for name in names
    }
    return BacktestReport(
        horizons.pop(),
        "series",
        len(backtests),
        sum(int(b.origins.size) for b in backtests),
        [_summary(pooled[name]) for name in names],
        _differences(per_unit, draws, seed),
    )


def _concatenate(parts: Sequence[ModelScores]) -> ModelScores:
    first = parts[0]
    return ModelScores(
        first.model,
        np.concatenate([p.origins for p in parts]),
        first.levels,
        np.concatenate([p.pinball for p in parts]),
        np.concatenate([p.scaled_pinball for p in parts]),
        np.concatenate([p.crps for p in parts]),
        np.concatenate([p.coverage_80 for p in parts]),
        np.concatenate([p.rmsse for p in parts]),
        np.concatenate([p.mase for p in parts]),
        np.concatenate([p.log_ratio for p in parts]),
        tuple(name for p in parts for name in p.chosen),
    )
