"""The pulse component: the excess demand (or reach) of a content pulse since its onset,
fitted online and extrapolated with its uncertainty.

Model. The excess count in the bucket of age t (t = 0 is the onset bucket) is negative
binomial with mean A * s(t + 1/2) and size `dispersion`, s a unit-free shape from one of the
families FORECAST.md lists:

- `gamma`: s(t) = t^k exp(-t / tau), the gamma-shaped impulse (rise, peak, decay);
- `exponential`: s(t) = exp(-t / tau) (the gamma family at k = 0);
- `power_law`: s(t) = (t + c)^-beta, Crane-Sornette's relaxation;
- `self_exciting` is not a shape but a Hawkes-like recursion (see `fit_self_exciting`): each
  bucket's intensity is a branching ratio times the geometrically-weighted past counts.

Fitting is Bayesian on a fixed grid of shape parameters, which keeps it cheap (well under a
millisecond), deterministic and robust with one or two buckets: for each grid point the
amplitude is profiled (A = sum y / sum s, its log-scale standard error from the NB Fisher
information, a Laplace approximation), and the grid points are weighted by likelihood times
prior. The priors are empirical Bayes: a distribution over the grid fitted to past pulses by
maximising their marginal likelihood (EM over the grid, the Kiefer-Wolfowitz NPMLE), then
summarised as a Gaussian in (k, log tau), (log tau) or (beta, log c), see `ShapePrior`.
The shipped priors and dispersion were fitted that way on the YouTube trending series
(tests/bench/bench_forecast_pulses.py, `fit_priors`) and measured held out on the Wikipedia
pulses, where they transfer poorly (Wikipedia's pulses decay more slowly and re-ignite; see
the benchmark): the service should refit them on its own platform's past pulses.

With a reach series (views, heat) the excess orders are reach x conversion: the shape is
fitted on the reach, and the conversion (orders per unit of reach) gets a Gamma posterior
from a Gamma prior (fitted over past pulse outcomes, see `fit_conversion_prior`) updated
with the orders and reach since onset (Gamma-Poisson conjugacy).

Quantiles come from sample paths: a grid point drawn by its posterior weight, a log-amplitude
from its Laplace normal, (a conversion from its Gamma posterior), then NB (Poisson for
orders from reach) counts. Every path is non-negative; draws use the caller's generator, so a
seed fixes them. Pure numpy/scipy: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

Series = NDArray[np.float64]
Grid = NDArray[np.float64]

# The buckets a fit looks at: a pulse older than this is fitted on its most recent part
# (with the buckets' true ages), so a refit costs the same however old the pulse is.
MAX_FIT_BUCKETS = 96
# NB size of a pulse bucket's count around its shape: fitted on the tuning pulses (see the
# module docstring; 27.1 on the YouTube trending increments). Large counts then vary by
# about 1/sqrt(size) = 19 % relative; small counts are nearly Poisson.
DISPERSION = 27.0
MIN_WEIGHT = 1e-9  # grid points with a smaller posterior weight are dropped


@dataclass(frozen=True)
class ShapePrior:
    """Independent normals on a family's transformed parameters (see `_transformed`)."""

    mean: tuple[float, ...]
    sd: tuple[float, ...]


@dataclass(frozen=True)
class Family:
    name: str
    grid: Grid  # (points, parameters) in natural units
    shape: Callable[[Grid, Series], Series]  # (grid, ages) -> (points, len(ages))
    transform: Callable[[Grid], Grid]  # natural -> the coordinates the prior is normal in

    def log_prior(self, prior: ShapePrior) -> Series:
        return _log_prior(self.name, prior)


def _logsumexp(values: Series) -> float:
    """log(sum(exp(values))) of a 1-D array (scipy's is generic and, per refit, slower)."""
    top = float(values.max())
    if not np.isfinite(top):
        return top
    return top + float(np.log(np.exp(values - top).sum()))


@lru_cache(maxsize=64)
def _log_prior(family: str, prior: ShapePrior) -> Series:
    fam = FAMILIES[family]
    z = (fam.transform(fam.grid) - np.asarray(prior.mean)) / np.asarray(prior.sd)
    logp = -0.5 * (z * z).sum(axis=1)
    out = np.asarray(logp - _logsumexp(logp), dtype=np.float64)
    out.setflags(write=False)
    return out


def _gamma_shape(grid: Grid, ages: Series) -> Series:
    k, tau = grid[:, :1], grid[:, 1:2]
    t = ages[None, :] + 0.5
    return np.asarray(np.exp(k * np.log(t) - t / tau), dtype=np.float64)


def _exponential_shape(grid: Grid, ages: Series) -> Series:
    return np.asarray(np.exp(-(ages[None, :] + 0.5) / grid[:, :1]), dtype=np.float64)


def _power_shape(grid: Grid, ages: Series) -> Series:
    beta, offset = grid[:, :1], grid[:, 1:2]
    return np.asarray(np.exp(-beta * np.log(ages[None, :] + 0.5 + offset)), dtype=np.float64)


def _product(*axes: Series) -> Grid:
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1).astype(np.float64)


# Time constants from a third of a bucket to 200 buckets, log-spaced.
_TAUS = np.exp(np.linspace(np.log(0.3), np.log(200.0), 28))
FAMILIES: dict[str, Family] = {
    "gamma": Family(
        "gamma",
        _product(np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]), _TAUS),
        _gamma_shape,
        lambda g: np.stack([g[:, 0], np.log(g[:, 1])], axis=1),
    ),
    "exponential": Family(
        "exponential",
        _TAUS[:, None].copy(),
        _exponential_shape,
        lambda g: np.log(g[:, :1]),
    ),
    "power_law": Family(
        "power_law",
        _product(np.linspace(0.0, 4.0, 33), np.array([0.5, 1.0, 2.0, 4.0, 8.0])),
        _power_shape,
        lambda g: np.stack([g[:, 0], np.log(g[:, 1])], axis=1),
    ),
}
# Empirical-Bayes priors: fit_grid_prior on the 1,525 YouTube trending pulses (the pulse
# benchmark's `fit_priors`, rounded). Their pulses decay fast: the gamma fits sit at k ~ 0
# with tau ~ 2.4 buckets, the power law at beta ~ 1.7 with offset ~ 1.1.
PRIORS: dict[str, ShapePrior] = {
    "gamma": ShapePrior((0.03, 0.89), (0.21, 1.15)),
    "exponential": ShapePrior((1.01,), (1.39,)),
    "power_law": ShapePrior((1.69, 0.09), (1.23, 0.96)),
}
# Chosen by measurement: the power law had the smallest remaining-mass error of the four
# models at every age on the tuning set (2-fold cross-fitted priors) and at ages 1, 2 and 4
# on the held-out pulses (the self-exciting recursion was ahead at age 8).
PRODUCTION_FAMILY = "power_law"


@lru_cache(maxsize=256)
def _shape_rows(family: str, first_age: int, count: int) -> Series:
    """A family's unit shapes over ages first_age .. first_age + count - 1 (cached: the
    service refits the same SKUs at the same ages over and over)."""
    fam = FAMILIES[family]
    out = fam.shape(fam.grid, np.arange(first_age, first_age + count, dtype=np.float64))
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Conversion:
    """Gamma(shape, rate) on orders per unit of reach."""

    shape: float
    rate: float

    @property
    def mean(self) -> float:
        return self.shape / self.rate

    def updated(self, orders: float, reach: float) -> Conversion:
        return Conversion(self.shape + max(orders, 0.0), self.rate + max(reach, 0.0))


# When nothing is known about conversion: half an order's worth of evidence (Jeffreys-like
# shape) at one order per 1,000 units of reach.
DEFAULT_CONVERSION = Conversion(0.5, 500.0)


@dataclass(frozen=True)
class PulseFit:
    """A fitted pulse: satisfies demand.PulseComponent. `age` is the age of the first
    forecast bucket (the number of buckets since onset that were observed)."""

    family: str
    age: int
    weights: Series  # posterior weight of each kept grid point
    points: NDArray[np.intp]  # indices of the kept grid points in the family's grid
    amplitude: Series  # profiled amplitude per kept point
    log_amplitude_sd: Series  # Laplace standard error of log amplitude per kept point
    dispersion: Series  # NB size per kept point
    conversion: Conversion | None = None  # set: the shape is of reach, orders = reach x it
    lead: int = 0  # buckets between the last fitted one and the first forecast one

    @property
    def model(self) -> str:
        return f"pulse_{self.family}" + ("_x_conversion" if self.conversion else "")

    def parameters(self) -> Series:
        """Posterior mean of the shape parameters (natural units, the family's grid order:
        (k, tau), (tau,) or (beta, c))."""
        return np.asarray(self.weights @ FAMILIES[self.family].grid[self.points], dtype=np.float64)

    def _future(self, horizon: int) -> Series:
        return _shape_rows(self.family, self.age + self.lead, horizon)[self.points]

    def reach_mean_path(self, horizon: int) -> Series:
        """Expected excess (of reach, with a conversion; of demand, without) per step."""
        scale = self.amplitude * np.exp(0.5 * self.log_amplitude_sd**2)
        return np.asarray((self.weights * scale) @ self._future(horizon), dtype=np.float64)

    def mean_path(self, horizon: int) -> Series:
        path = self.reach_mean_path(horizon)
        if self.conversion is not None:
            path = path * self.conversion.mean
        return np.maximum(path, 0.0)

    def sample_paths(self, horizon: int, draws: int, rng: np.random.Generator) -> Series:
        if self.weights.size == 0:
            return np.zeros((draws, horizon))
        picks = rng.choice(self.weights.size, size=draws, p=self.weights)
        log_a = np.log(np.maximum(self.amplitude[picks], 1e-300))
        amplitude = np.exp(log_a + self.log_amplitude_sd[picks] * rng.standard_normal(draws))
        means = amplitude[:, None] * self._future(horizon)[picks]
        if self.conversion is not None:
            rates = rng.gamma(self.conversion.shape, 1.0 / self.conversion.rate, size=draws)
            return rng.poisson(np.minimum(means * rates[:, None], 1e12)).astype(np.float64)
        return nb_counts(means, self.dispersion[picks][:, None], rng)


def nb_counts(means: Series, size: float | Series, rng: np.random.Generator) -> Series:
    """Negative binomial counts with the given means and size (zero where the mean is 0)."""
    m = np.maximum(means, 0.0)
    p = size / (size + m)
    return rng.negative_binomial(size, np.clip(p, 1e-12, 1.0)).astype(np.float64)


def nb_loglik(y: Series, mu: Series, size: float) -> Series:
    """NB log-likelihood summed over the last axis, up to terms free of mu."""
    mu = np.maximum(mu, 1e-300)
    log_total = np.log(size + mu)
    return np.asarray(
        (size * (np.log(size) - log_total) + y * (np.log(mu) - log_total)).sum(axis=-1),
        dtype=np.float64,
    )


def grid_posterior(
    excess: Sequence[float] | Series,
    family: str,
    log_prior: Series | None,
    *,
    dispersion: float = DISPERSION,
) -> tuple[Series, Series, Series, Series]:
    """Per grid point: log-likelihood (amplitude profiled), log posterior weight (normalised),
    amplitude and its log-scale standard error, given the excess since onset (age 0 first)."""
    y_all = np.maximum(np.asarray(excess, dtype=np.float64), 0.0)
    first = max(0, y_all.size - MAX_FIT_BUCKETS)
    y = y_all[first:]
    shapes = _shape_rows(family, first, y.size)
    mass = shapes.sum(axis=1)
    total = float(y.sum())
    amplitude = total / np.maximum(mass, 1e-300)
    mu = amplitude[:, None] * shapes
    loglik = nb_loglik(y, mu, dispersion)
    information = (mu * dispersion / (dispersion + mu)).sum(axis=1)
    sd = 1.0 / np.sqrt(np.maximum(information, 1e-12))
    if total <= 0:
        loglik = np.zeros_like(mass)
    logp = loglik + (log_prior if log_prior is not None else 0.0)
    logp = logp - _logsumexp(logp)
    return loglik, logp, amplitude, np.minimum(sd, 3.0)


@dataclass(frozen=True)
class DispersionPrior:
    """A discrete prior on the NB size: each pulse's own buckets then pick how noisy it is
    (a smooth trending curve or a jumpy news-driven one) once it has a few of them."""

    sizes: tuple[float, ...]
    weights: tuple[float, ...]


# fit_dispersion_prior on the YouTube trending pulses (power-law family, its prior). Not the
# default: on the tuning set it lost coverage (its smooth curves put most weight on size 81,
# and the intervals then ignore how far a shape's extrapolation errs), while on the held-out
# Wikipedia pulses it helped; the benchmark reports both ("adaptive_noise").
DISPERSION_PRIOR = DispersionPrior((1.0, 3.0, 9.0, 27.0, 81.0), (0.02, 0.024, 0.125, 0.132, 0.699))


def _nb_constant(y: Series, size: float) -> float:
    return float(
        (special.gammaln(y + size) - special.gammaln(size) - special.gammaln(y + 1.0)).sum()
    )


def fit_pulse(
    excess: Sequence[float] | Series,
    *,
    family: str = PRODUCTION_FAMILY,
    prior: ShapePrior | None = None,
    dispersion: float | DispersionPrior = DISPERSION,
) -> PulseFit:
    """The pulse fitted on the excess counts since its onset (age 0 first), over the shape
    grid and (with a DispersionPrior) the NB sizes jointly. Zero excess so far gives a fit
    whose paths are all zero."""
    fam = FAMILIES[family]
    log_prior = fam.log_prior(prior or PRIORS[family])
    options = (
        dispersion
        if isinstance(dispersion, DispersionPrior)
        else DispersionPrior((float(dispersion),), (1.0,))
    )
    y = np.maximum(np.asarray(excess, dtype=np.float64), 0.0)[-MAX_FIT_BUCKETS:]
    parts = []
    for size, weight in zip(options.sizes, options.weights, strict=True):
        loglik, _, amplitude, sd = grid_posterior(excess, family, None, dispersion=size)
        constant = _nb_constant(y, size) if y.sum() > 0 else 0.0
        parts.append((loglik + constant + log_prior + np.log(weight), amplitude, sd, size))
    logp = np.concatenate([part[0] for part in parts])
    weights = np.exp(logp - _logsumexp(logp))
    keep = np.flatnonzero(weights > MIN_WEIGHT)
    points = keep % fam.grid.shape[0]
    amplitude = np.concatenate([part[1] for part in parts])[keep]
    sd = np.concatenate([part[2] for part in parts])[keep]
    sizes = np.concatenate([np.full(fam.grid.shape[0], part[3]) for part in parts])[keep]
    kept = weights[keep] / weights[keep].sum()
    age = int(np.asarray(excess).size)
    return PulseFit(family, age, kept, points, amplitude, sd, sizes)


def fit_dispersion_prior(
    pulses: Sequence[Series],
    family: str,
    prior: ShapePrior,
    sizes: Sequence[float] = DISPERSION_PRIOR.sizes,
    rounds: int = 200,
) -> DispersionPrior:
    """The NPMLE of the NB size's distribution over `sizes` across whole observed pulses
    (shapes integrated over the family's prior), by EM; floored at 0.02 per size so no
    pulse's own evidence is ever ruled out."""
    log_prior = FAMILIES[family].log_prior(prior)
    rows = []
    for p in pulses:
        y = np.maximum(np.asarray(p, dtype=np.float64), 0.0)[:MAX_FIT_BUCKETS]
        if y.sum() <= 0:
            continue
        rows.append(
            [
                float(
                    special.logsumexp(
                        grid_posterior(y, family, None, dispersion=size)[0] + log_prior
                    )
                )
                + _nb_constant(y, size)
                for size in sizes
            ]
        )
    weights = np.maximum(_npmle(np.array(rows), rounds), 0.02)
    weights /= weights.sum()
    return DispersionPrior(tuple(float(v) for v in sizes), tuple(float(w) for w in weights))


def fit_reach_pulse(
    reach_excess: Sequence[float] | Series,
    orders_excess: Sequence[float] | Series,
    *,
    conversion_prior: Conversion = DEFAULT_CONVERSION,
    family: str = PRODUCTION_FAMILY,
    prior: ShapePrior | None = None,
) -> PulseFit:
    """Excess orders as reach x conversion: the shape fitted on the reach since onset, the
    conversion's Gamma prior updated with the orders and reach since onset. Trailing buckets
    without reach are taken as not reported yet (reach comes from another service and can
    lag the orders; a live pulse's reach is never exactly zero): the fit and the conversion
    stop at the last reported bucket, and the forecast skips the unreported ones."""
    reach_all = np.maximum(np.asarray(reach_excess, dtype=np.float64), 0.0)
    reported = np.flatnonzero(reach_all > 0)
    cut = int(reported[-1]) + 1 if reported.size else reach_all.size
    reach = reach_all[:cut]
    orders = np.maximum(np.asarray(orders_excess, dtype=np.float64), 0.0)[:cut]
    fit = fit_pulse(reach, family=family, prior=prior)
    posterior = conversion_prior.updated(float(orders.sum()), float(reach.sum()))
    return PulseFit(
        fit.family,
        fit.age,
        fit.weights,
        fit.points,
        fit.amplitude,
        fit.log_amplitude_sd,
        fit.dispersion,
        posterior,
        lead=reach_all.size - cut,
    )


# --- empirical Bayes: the priors from past pulses ---------------------------------------


def fit_grid_prior(
    pulses: Sequence[Series], family: str, *, dispersion: float = DISPERSION, rounds: int = 200
) -> tuple[ShapePrior, Series]:
    """The NPMLE over the family's grid of the shape distribution of `pulses` (each a whole
    observed pulse's excess, age 0 first), by EM on the marginal likelihood, summarised as a
    normal in the family's transformed coordinates (sd floored at 0.15). Returns the summary
    and the grid weights."""
    fam = FAMILIES[family]
    logliks = np.array(
        [grid_posterior(p, family, None, dispersion=dispersion)[0] for p in pulses if p.sum() > 0]
    )
    weights = _npmle(logliks, rounds)
    return _summarise(weights, fam.transform(fam.grid)), weights


def fit_dispersion(
    pulses: Sequence[Series], family: str, candidates: Sequence[float] | None = None
) -> float:
    """The NB size maximising the pooled likelihood of `pulses` around their own best shape
    (full NB likelihood, including the size's normalising terms)."""
    best, best_ll = 1.0, -np.inf
    for size in candidates or np.exp(np.linspace(np.log(0.5), np.log(200.0), 13)):
        total = 0.0
        for p in pulses:
            y = np.maximum(np.asarray(p, dtype=np.float64), 0.0)[:MAX_FIT_BUCKETS]
            if y.sum() <= 0:
                continue
            loglik = grid_posterior(y, family, None, dispersion=float(size))[0]
            constant = special.gammaln(y + size) - special.gammaln(size) - special.gammaln(y + 1)
            total += float(loglik.max() + constant.sum())
        if total > best_ll:
            best, best_ll = float(size), total
    return best


def fit_conversion_prior(
    orders: Sequence[float] | Series, reach: Sequence[float] | Series
) -> Conversion | None:
    """Gamma prior on conversion by marginal likelihood over past pulses (orders_i ~
    Poisson(c_i reach_i), c_i ~ Gamma(shape, rate): orders_i is negative binomial). None
    with fewer than 3 usable outcomes (the caller keeps its default)."""
    o = np.asarray(orders, dtype=np.float64)
    r = np.asarray(reach, dtype=np.float64)
    usable = (r > 0) & np.isfinite(o) & np.isfinite(r) & (o >= 0)
    o, r = np.round(o[usable]), r[usable]
    if o.size < 3:
        return None

    def negative(theta: Series) -> float:
        shape, rate = np.exp(theta)
        ll = (
            special.gammaln(o + shape)
            - special.gammaln(shape)
            + shape * np.log(rate / (rate + r))
            + o * np.log(r / (rate + r))
        )
        return float(-ll.sum())

    pooled = (o.sum() + 0.5) / r.sum()
    start = np.array([0.0, np.log(1.0 / pooled)])
    result = optimize.minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-4})
    shape, rate = np.exp(np.clip(result.x, -10.0, 30.0))
    # Few or alike outcomes can drive the fitted heterogeneity to zero (an infinitely sure
    # prior): it never weighs more than one typical past pulse's orders, so a SKU's own
    # pulse can always move it.
    cap = max(float(o.mean()), 1.0)
    if shape > cap:
        shape, rate = cap, rate * cap / shape
    return Conversion(float(shape), float(rate))


# --- the self-exciting (Hawkes-like) alternative -----------------------------------------

# Grid: branching ratio n (expected later units per unit) and the kernel's geometric memory
# rho (phi(d) = (1 - rho) rho^(d - 1), d >= 1 buckets, sums to one).
SELF_EXCITING_GRID = _product(
    np.exp(np.linspace(np.log(0.02), np.log(1.5), 30)), np.linspace(0.0, 0.95, 20)
)
SELF_EXCITING_PRIOR = ShapePrior((-0.5, 0.18), (0.47, 0.18))  # fitted as PRIORS are


def _self_exciting_transform(grid: Grid) -> Grid:
    return np.stack([np.log(grid[:, 0]), grid[:, 1]], axis=1)


def _self_exciting_log_prior(prior: ShapePrior) -> Series:
    z = (_self_exciting_transform(SELF_EXCITING_GRID) - np.asarray(prior.mean)) / np.asarray(
        prior.sd
    )
    logp = -0.5 * (z * z).sum(axis=1)
    return np.asarray(logp - special.logsumexp(logp), dtype=np.float64)


def _self_exciting_loglik(y: Series, dispersion: float) -> Series:
    """Log-likelihood of ages 1.. given the past (age 0 is exogenous), per grid point."""
    branching, memory = SELF_EXCITING_GRID[:, 0], SELF_EXCITING_GRID[:, 1]
    total = np.zeros(branching.size)
    state = np.zeros(branching.size)  # sum_s y_s memory^(t - 1 - s)
    for t in range(1, y.size):
        state = memory * state + y[t - 1]
        mu = branching * (1 - memory) * state
        total += nb_loglik(np.array([y[t]]), mu[:, None], dispersion)
    return total


@dataclass(frozen=True)
class SelfExcitingFit:
    """A Hawkes-like fit: satisfies demand.PulseComponent."""

    history: Series  # the excess since onset the fit conditions on (at most MAX_FIT_BUCKETS)
    weights: Series
    points: NDArray[np.intp]
    dispersion: float = DISPERSION

    @property
    def model(self) -> str:
        return "pulse_self_exciting"

    def _state(self) -> tuple[Series, Series, Series]:
        grid = SELF_EXCITING_GRID[self.points]
        branching, memory = grid[:, 0], grid[:, 1]
        state = np.zeros(self.points.size)
        for value in self.history:
            state = memory * state + value
        return branching, memory, state

    def mean_path(self, horizon: int) -> Series:
        branching, memory, state = self._state()
        out = np.zeros(horizon)
        mu = branching * (1 - memory) * state
        for step in range(horizon):
            out[step] = float(self.weights @ mu)
            state = memory * state + mu
            mu = branching * (1 - memory) * state
        return out

    def sample_paths(self, horizon: int, draws: int, rng: np.random.Generator) -> Series:
        branching, memory, state = self._state()
        picks = rng.choice(self.weights.size, size=draws, p=self.weights)
        b, m, s = branching[picks], memory[picks], state[picks]
        out = np.zeros((draws, horizon))
        for step in range(horizon):
            counts = nb_counts(np.minimum(b * (1 - m) * s, 1e12), self.dispersion, rng)
            out[:, step] = counts
            s = m * s + counts
        return out


def fit_self_exciting(
    excess: Sequence[float] | Series,
    *,
    prior: ShapePrior = SELF_EXCITING_PRIOR,
    dispersion: float = DISPERSION,
) -> SelfExcitingFit:
    y = np.maximum(np.asarray(excess, dtype=np.float64), 0.0)[-MAX_FIT_BUCKETS:]
    logp = _self_exciting_loglik(y, dispersion) + _self_exciting_log_prior(prior)
    weights = np.exp(logp - special.logsumexp(logp))
    keep = np.flatnonzero(weights > MIN_WEIGHT)
    return SelfExcitingFit(y, weights[keep] / weights[keep].sum(), keep, dispersion)


def fit_self_exciting_prior(
    pulses: Sequence[Series], *, dispersion: float = DISPERSION, rounds: int = 200
) -> ShapePrior:
    """fit_grid_prior's EM for the self-exciting grid, on (log n, rho)."""
    logliks = np.array(
        [
            _self_exciting_loglik(np.maximum(np.asarray(p, dtype=np.float64), 0.0), dispersion)
            for p in pulses
            if len(p) > 1
        ]
    )
    return _summarise(_npmle(logliks, rounds), _self_exciting_transform(SELF_EXCITING_GRID))


def _npmle(logliks: Series, rounds: int) -> Series:
    weights = np.full(logliks.shape[1], 1.0 / logliks.shape[1])
    for _ in range(rounds):
        logpost = logliks + np.log(np.maximum(weights, 1e-300))
        logpost -= special.logsumexp(logpost, axis=1, keepdims=True)
        weights = np.exp(logpost).mean(axis=0)
    return weights


def _summarise(weights: Series, coords: Grid) -> ShapePrior:
    mean = weights @ coords
    sd = np.sqrt(np.maximum(weights @ (coords - mean) ** 2, 0.15**2))
    return ShapePrior(tuple(float(v) for v in mean), tuple(float(v) for v in sd))
