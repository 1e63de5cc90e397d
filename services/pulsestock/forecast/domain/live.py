"""A live session's whole orders from its first minutes: reach (the viewer curve) x
conversion (orders per viewer-minute), each with its uncertainty, plus count noise.

- Viewers: the session is one attention pulse over a floor audience (live_generator's
  calibrated family: gamma rise, exponential or power-law decay, floor = 1/peak-to-floor),
  its time scale tied to the session's length (a real pulse's lifetime spans it).
  Importance sampling: PARTICLES draws of (length, rise fraction, tail kappa, lifetime/length,
  floor) from the priors — length truncated below at the minutes observed (the session is
  still on) — each weighted by how well its curve (amplitude fitted by least squares in
  log space) explains the observed log viewers: a Student-t likelihood (nu = 3, scale
  VIEWER_LOG_SCALE = 0.25, about 3x the generator's minute noise, because that noise is
  autocorrelated and flash deals add bumps the curve has not got). The shape and length
  priors are log-Student-t (nu = 4) with the fitted scales rather than log-normal: a
  session from a wider world than the past ones keeps some prior mass. Each particle's
  future exposure is its curve's integral over the minutes it has left (closed form).
- Conversion: Gamma-Poisson. The prior is log-normal around a + b·log(engagement / median
  engagement) (interactions per viewer-minute so far: engaged audiences buy more), moment-
  matched to a Gamma, and updated with the orders and viewer-minutes seen, both divided by
  the counts' dispersion index 1 + (orders per minute)/size (orders arrive overdispersed,
  negative binomial with `size`; a Poisson update would be overconfident).
- The remaining orders of each of SIMULATIONS draws: a particle resampled by weight, a
  conversion from the posterior, a negative-binomial count (size · minutes left) around
  their product. Mean and quantiles of orders so far + remaining; so never below what was
  seen, monotone in the level, and deterministic (fixed seed).

Priors (LivePriors): the shape ones are the generator's calibration on the real attention
series; length, conversion and dispersion are fitted by `fit_priors` from past sessions —
DEFAULT_PRIORS from 2,000 generated sessions (seed 20261204, the generator's default
ranges), since no real sessions exist (tests check `fit_priors` reproduces them). Replace
them with a seller's own past sessions when there are some.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pulsestock.forecast.domain.live_generator import (
    LiveSession,
    attention_curve,
    attention_integral,
    tail_ratios,
)
from scipy import stats

Series = NDArray[np.float64]

PARTICLES = 2000
SIMULATIONS = 4000
SEED = 1729
VIEWER_LOG_SCALE = 0.25
STUDENT_NU = 3.0
PRIOR_NU = 4.0
MAX_LENGTH = 480
FITTED_MINUTES = 240
DEFAULT_LEVELS = (0.1, 0.5, 0.9)
MODEL = "live_pulse_gamma_poisson"


@dataclass(frozen=True)
class LivePriors:
    length_median: float
    length_sd: float  # of log length
    length_min: float
    length_max: float
    rise_fraction_median: float
    rise_fraction_sd: float
    kappa_mean: float
    kappa_sd: float
    lifetime_over_length_sd: float
    peak_to_floor_median: float
    peak_to_floor_sd: float
    engagement_median: float
    log_conversion_at_median: float  # a
    conversion_engagement_slope: float  # b
    log_conversion_sd: float  # residual sd of log conversion given engagement
    order_dispersion: float  # NB size of orders per minute


# fit_priors(generate_sessions(2000, 20261204)) rounded; shape fields from the calibration.
DEFAULT_PRIORS = LivePriors(
    length_median=90.0,
    length_sd=0.352,
    length_min=30.0,
    length_max=240.0,
    rise_fraction_median=0.42,
    rise_fraction_sd=0.434,
    kappa_mean=0.15,
    kappa_sd=0.40,
    lifetime_over_length_sd=0.15,
    peak_to_floor_median=12.1,
    peak_to_floor_sd=0.587,
    engagement_median=0.0504,
    log_conversion_at_median=-6.215,
    conversion_engagement_slope=0.494,
    log_conversion_sd=0.619,
    order_dispersion=2.14,
)


@dataclass(frozen=True)
class LiveForecast:
    minutes_observed: int
    orders_so_far: float
    expected_orders: float
    quantiles: dict[float, float]
    expected_length_minutes: float
    model: str = MODEL

    def quantile(self, level: float) -> float:
        return self.quantiles[level]


def forecast_live(
    viewers: Sequence[float] | Series,
    interactions: Sequence[float] | Series,
    orders: Sequence[float] | Series,
    *,
    priors: LivePriors = DEFAULT_PRIORS,
    levels: Sequence[float] = DEFAULT_LEVELS,
    seed: int = SEED,
) -> LiveForecast:
    """The whole session's orders from its first len(viewers) minutes (per-minute viewers,
    interactions and orders; at least one minute)."""
    v = np.maximum(np.asarray(viewers, dtype=float), 0.0)
    i = np.maximum(np.asarray(interactions, dtype=float), 0.0)
    o = np.maximum(np.asarray(orders, dtype=float), 0.0)
    m = len(v)
    if m == 0 or len(i) != m or len(o) != m:
        raise ValueError("viewers, interactions and orders need the same length, at least 1")
    rng = np.random.default_rng(seed)
    seen = float(o.sum())
    p = priors

    # --- reach: particles of the viewer curve ---------------------------------------------
    n = PARTICLES
    # The session is on at minute m: its length is the prior's, truncated below at m
    # (inverse survival function, so a minute far in the prior's tail still samples).
    lowest = (np.log(max(m, p.length_min)) - np.log(p.length_median)) / p.length_sd
    tail = stats.t.sf(lowest, PRIOR_NU) * rng.random(n)
    z = np.where(tail > 0, stats.t.isf(np.maximum(tail, 1e-300), PRIOR_NU), lowest)
    # A session already past MAX_LENGTH may run as long again (nothing else is known).
    longest = max(float(MAX_LENGTH), 2.0 * m)
    length = np.clip(p.length_median * np.exp(p.length_sd * z), m, longest)
    lifetime = length * np.exp(p.lifetime_over_length_sd * rng.standard_t(PRIOR_NU, n))
    rise = np.clip(
        p.rise_fraction_median * np.exp(p.rise_fraction_sd * rng.standard_t(PRIOR_NU, n)), 0.05, 0.7
    )
    rise = rise * lifetime
    kappa = np.maximum(0.0, p.kappa_mean + p.kappa_sd * rng.standard_t(PRIOR_NU, n))
    ratios = tail_ratios(kappa)
    half_life = np.maximum((lifetime - rise) / ratios, 0.5)
    floor = 1.0 / np.clip(
        p.peak_to_floor_median * np.exp(p.peak_to_floor_sd * rng.standard_normal(n)), 2.0, 200.0
    )
    # At most FITTED_MINUTES minutes (evenly spread) enter the fit, their log-likelihood
    # scaled to all m: memory and time stay bounded however long a session has run.
    fitted = np.unique(np.linspace(0, m - 1, min(m, FITTED_MINUTES)).round().astype(int))
    column = (rise[:, None], half_life[:, None], kappa[:, None])
    shape_then = attention_curve(fitted.astype(float)[None, :], *column)
    log_curve = np.log(floor[:, None] + (1.0 - floor[:, None]) * shape_then)
    log_seen = np.log(v[fitted] + 1.0)
    log_amplitude = (log_seen[None, :] - log_curve).mean(axis=1)
    residual = (log_seen[None, :] - log_curve - log_amplitude[:, None]) / VIEWER_LOG_SCALE
    log_weight = -0.5 * (STUDENT_NU + 1.0) * np.log1p(residual**2 / STUDENT_NU).sum(axis=1)
    log_weight *= m / len(fitted)
    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    # Future exposure: the particle's viewers over the minutes [m, length) it has left (the
    # curve's integral over [m - ½, length - ½], the midpoint rule for the minute sums).
    start, stop = m - 0.5, np.maximum(length - 0.5, m - 0.5)
    shape_args = (rise, half_life, kappa)
    pulse = attention_integral(stop, *shape_args) - attention_integral(start, *shape_args)
    future_exposure = np.exp(log_amplitude) * (floor * (stop - start) + (1.0 - floor) * pulse)
    minutes_left = stop - start

    # --- conversion: Gamma-Poisson with engagement-informed prior --------------------------
    exposure = float(v.sum())
    engagement = (float(i.sum()) + 0.5) / (exposure + 10.0)
    prior_log_mean = p.log_conversion_at_median + p.conversion_engagement_slope * np.log(
        engagement / p.engagement_median
    )
    spread = np.expm1(p.log_conversion_sd**2)
    prior_mean = float(np.exp(prior_log_mean + 0.5 * p.log_conversion_sd**2))
    shape0, rate0 = 1.0 / spread, 1.0 / (spread * prior_mean)
    dispersion_index = 1.0 + (seen / m) / p.order_dispersion
    shape = shape0 + seen / dispersion_index
    rate = rate0 + exposure / dispersion_index

    # --- simulate what is left --------------------------------------------------------------
    picks = rng.choice(n, size=SIMULATIONS, p=weight)
    conversion = rng.gamma(shape, 1.0 / rate, SIMULATIONS)
    mean_left = conversion * future_exposure[picks]
    size_left = p.order_dispersion * np.maximum(minutes_left[picks], 1)
    left = np.where(
        mean_left > 0,
        rng.negative_binomial(size_left, size_left / (size_left + np.maximum(mean_left, 1e-12))),
        0,
    ).astype(float)
    totals = seen + left
    values = np.quantile(totals, np.asarray(levels, dtype=float))
    values = np.maximum.accumulate(np.maximum(values, seen)) if len(levels) else values
    return LiveForecast(
        minutes_observed=m,
        orders_so_far=seen,
        expected_orders=float(seen + left.mean()),
        quantiles={float(q): float(x) for q, x in zip(levels, values, strict=True)},
        expected_length_minutes=float(np.sum(weight * length)),
    )


def fit_priors(
    sessions: Sequence[LiveSession], shape_from: LivePriors = DEFAULT_PRIORS
) -> LivePriors:
    """Length, conversion-given-engagement and dispersion from past whole sessions; the
    shape priors are kept from `shape_from` (they come from the real attention series)."""
    lengths = np.array([s.length for s in sessions], dtype=float)
    exposure = np.array([s.viewers.sum() for s in sessions])
    engagement = np.array([s.interactions.sum() for s in sessions]) / exposure
    conversion = (np.array([s.total_orders for s in sessions]) + 0.5) / exposure
    x = np.log(engagement)
    y = np.log(conversion)
    slope, intercept = np.polyfit(x - np.median(x), y, 1)
    residual_sd = float(np.std(y - (intercept + slope * (x - np.median(x)))))
    sizes = []
    for s in sessions:
        rate = s.total_orders / max(float(s.viewers.sum()), 1.0)
        mean = rate * s.viewers
        excess = float(np.sum((s.orders - mean) ** 2 - mean))
        if excess > 0 and mean.sum() > 0:
            sizes.append(float(np.sum(mean**2)) / excess)
    return LivePriors(
        length_median=float(np.exp(np.mean(np.log(lengths)))),
        length_sd=float(np.std(np.log(lengths))),
        length_min=float(lengths.min()),
        length_max=float(lengths.max()),
        rise_fraction_median=shape_from.rise_fraction_median,
        rise_fraction_sd=shape_from.rise_fraction_sd,
        kappa_mean=shape_from.kappa_mean,
        kappa_sd=shape_from.kappa_sd,
        lifetime_over_length_sd=shape_from.lifetime_over_length_sd,
        peak_to_floor_median=shape_from.peak_to_floor_median,
        peak_to_floor_sd=shape_from.peak_to_floor_sd,
        engagement_median=float(np.exp(np.median(x))),
        log_conversion_at_median=float(intercept),
        conversion_engagement_slope=float(slope),
        log_conversion_sd=residual_sd,
        order_dispersion=float(np.median(sizes)) if sizes else shape_from.order_dispersion,
    )
