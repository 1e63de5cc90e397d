"""Forecast scores on hand-computed cases (metrics.py's documented conventions)."""

from __future__ import annotations

import numpy as np
import pytest
from pulsestock.forecast.domain import metrics
from pulsestock.forecast.domain.baselines import reference_forecasts


def test_pinball_crps_coverage_by_hand() -> None:
    # y = 3, q0.1 = 1, q0.9 = 5: 0.1 * 2 = 0.2 and 0.1 * 2 = 0.2.
    assert metrics.pinball([3.0], [[1.0, 5.0]], [0.1, 0.9]) == pytest.approx([0.2, 0.2])
    # A point forecast at every level: CRPS = |y - q| (twice the mean pinball).
    levels = metrics.CRPS_LEVELS
    assert metrics.crps_from_quantiles([2.0], [[5.0] * len(levels)], levels) == pytest.approx(3.0)
    assert metrics.crps_from_samples([2.0], [[5.0, 5.0]]) == pytest.approx(3.0)
    # Samples {0, 2}, y = 1: E|X - y| = 1, E|X - X'| = 1 -> 0.5.
    assert metrics.crps_from_samples([1.0], [[0.0, 2.0]]) == pytest.approx(0.5)
    assert metrics.coverage([1, 2, 3, 9], [1, 1, 1, 1], [3, 3, 3, 3]) == 0.75


def test_scaled_errors_log_ratio_and_bootstrap() -> None:
    history = [0.0, 2.0, 0.0, 2.0]  # one-step changes 2, 2, 2
    assert metrics.mase([1.0, 3.0], [2.0, 2.0], history) == pytest.approx(0.5)
    assert metrics.rmsse([1.0, 3.0], [2.0, 2.0], history) == pytest.approx(0.5)
    assert np.isnan(metrics.mase([1.0], [1.0], [4.0, 4.0]))  # no naive scale
    assert metrics.log_ratio_cumulative([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert metrics.log_ratio_cumulative([3.0], [1.0]) == pytest.approx(np.log(2.0))
    mean, low, high = metrics.paired_bootstrap([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], seed=1)
    assert (mean, low, high) == pytest.approx((1.0, 1.0, 1.0))
    mean, low, high = metrics.paired_bootstrap(np.arange(50.0), np.zeros(50), seed=1)
    assert low < mean < high
    assert metrics.paired_bootstrap(np.arange(50.0), np.zeros(50), seed=1)[1] == low


def test_reference_forecasts_are_non_negative_and_monotone() -> None:
    history = np.array([0, 0, 3, 0, 1, 0, 0, 5, 0, 2] * 5, dtype=float)
    forecasts = reference_forecasts(history, 7, season=7)
    assert forecasts["naive"].means.tolist() == [2.0] * 7
    assert forecasts["seasonal_naive"].means.tolist() == history[-7:].tolist()
    for forecast in forecasts.values():
        q = forecast.quantiles([0.1, 0.5, 0.9])
        assert q.shape == (7, 3)
        assert np.all(q >= 0)
        assert np.all(np.diff(q, axis=1) >= 0)
        assert np.all(forecast.means >= 0)
    # plain Croston has no SBA factor (1 - 0.1 / 2)
    sba, croston = forecasts["sba"].means[0], forecasts["croston"].means[0]
    assert sba == pytest.approx(0.95 * croston)


def test_croston_sba_tsb_match_statsforecast() -> None:
    """baseline.py's intermittent methods against Nixtla's reference implementation
    (statsforecast, a dev-only dependency), same alpha/beta, on seeded intermittent series."""
    from pulsestock.forecast.domain import baseline
    from statsforecast.models import TSB, CrostonClassic, CrostonSBA

    rng = np.random.default_rng(0)
    for _ in range(4):
        y = (rng.random(120) < 0.3) * rng.integers(1, 6, 120).astype(float)
        ours = [
            baseline.croston_path(y, sba=False)[-1],
            baseline.croston_sba(y),
            baseline.tsb(y, 0.1, 0.05),
        ]
        theirs = [
            CrostonClassic().forecast(y, 1)["mean"][0],
            CrostonSBA().forecast(y, 1)["mean"][0],
            TSB(alpha_d=0.1, alpha_p=0.05).forecast(y, 1)["mean"][0],
        ]
        assert ours == pytest.approx([float(v) for v in theirs], rel=1e-6)
