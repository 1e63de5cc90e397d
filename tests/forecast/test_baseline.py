"""Baseline intermittent-demand forecasts: the methods' known behaviour, quantiles that are
never negative and monotone, and an 80 % interval that covers about 80 % on series it has
not seen (generated intermittent demand; the real-data protocol comes with the service)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.forecast.domain.baseline import (
    adida,
    croston_sba,
    fit_baseline,
    ses,
    tsb,
)


def test_the_methods_on_hand_made_series() -> None:
    steady = np.full(40, 3.0)
    for method in (ses, croston_sba, tsb, adida):
        assert method(steady) == pytest.approx(3.0, rel=0.06)
    every_fourth = np.array([0, 0, 0, 4] * 10, dtype=float)  # 1 per bucket on average
    assert croston_sba(every_fourth) == pytest.approx(0.95, rel=0.02)  # SBA's (1 - a/2)
    assert adida(every_fourth) == pytest.approx(1.0, rel=0.05)
    # Demand that stopped: TSB's probability decays, Croston's interval does not move.
    stopped = np.array([2.0] * 30 + [0.0] * 40)
    assert tsb(stopped) < 0.3 * croston_sba(stopped)
    assert croston_sba(np.zeros(10)) == 0.0


@settings(max_examples=100, deadline=None)
@given(
    demand=st.lists(st.integers(0, 50), min_size=1, max_size=120),
    horizon=st.integers(1, 14),
    levels=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=9, unique=True),
)
def test_quantiles_are_never_negative_and_monotone(
    demand: list[int], horizon: int, levels: list[float]
) -> None:
    forecast = fit_baseline(demand, horizon=1)
    values = forecast.quantiles(horizon, levels)
    assert all(v >= 0 for v in values)
    by_level = [v for _, v in sorted(zip(levels, values, strict=True))]
    assert by_level == sorted(by_level)


def test_bad_series_are_refused() -> None:
    for bad in ([], [1, -1, 2], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="demand"):
            fit_baseline(bad)


def intermittent(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zero-inflated negative binomial with a per-series rate and dispersion."""
    occurs = rng.uniform(0.15, 0.9)
    size, mean = rng.uniform(0.5, 5.0), rng.uniform(0.5, 8.0)
    counts = rng.negative_binomial(size, size / (size + mean), n)
    return (counts * (rng.random(n) < occurs)).astype(float)


@pytest.mark.parametrize("horizon", [1, 7])
def test_the_80_percent_interval_covers_about_80_percent_of_unseen_outcomes(
    horizon: int,
) -> None:
    rng = np.random.default_rng(20261203)
    covered = total = 0
    for _ in range(300):
        series = intermittent(rng, 120 + horizon)
        history, future = series[:120], series[120:]
        forecast = fit_baseline(history, horizon=horizon)
        low, high = forecast.quantiles(horizon, [0.1, 0.9])
        covered += int(low <= future.sum() <= high)
        total += 1
    assert 0.72 <= covered / total <= 0.92, covered / total
