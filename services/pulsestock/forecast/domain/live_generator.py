"""A documented generator of minute-level live-commerce sessions, its attention shape
calibrated on real attention pulses (there is no public live-commerce data).

What a session is: for `length` minutes, concurrent viewers per minute, interactions per
minute and orders per minute.

    viewers(t)  = peak_viewers · [floor + (1 - floor) · curve(t) + bumps(t)] · noise(t)
    interactions(t) ~ NB(mean engagement · viewers(t), size 5)
    orders(t)       ~ NB(mean conversion · viewers(t), size dispersion)

`curve` (attention_curve) is 0 at t = 0, rises as a gamma impulse
(t/rise)^2·e^(2(1 - t/rise)) to 1 at t = rise, then decays as (1 + d/s)^(-1/kappa) with
d = t - rise and s = half_life/(2^kappa - 1): kappa = 0 is an exponential tail, kappa > 0 a
power-law (Crane-Sornette) one; the half-life is the minutes from the peak until the excess
over the floor halves.

Calibrated on the real series (numbers measured by `pulse_shapes` on shared/data, the
measurement the bench repeats: tests/bench/bench_forecast_live.py):

- Pulses in wikipedia_traffic_daily: every day whose views are ≥ 5x the trailing 28-day
  median and the largest within ±7 days; onset = the first day of the run whose excess over
  that median is > 10 % of the peak's; half-life and the 10 % point interpolated log-linearly
  between days. 48 pulses in the 10 pages. Measured (median [quartiles]): rise/lifetime 0.37
  [0.30, 0.44] (geometric mean 0.353, log-sd 0.434), half-life/lifetime 0.15 [0.11, 0.22],
  peak/baseline 12.5 [7.5, 16.1] (geometric mean 12.1, log-sd 0.587; the 5x threshold
  censors it from below), lifetime = onset → excess < 10 % of peak.
- Decay tail: the ratio of the time from the peak to 10 % of its excess over the half-life,
  `tail_ratio` (exponential: log 10 / log 2 = 3.32; heavier tails more). Pooled over the
  48 Wikipedia pulses and 188 youtube_trending_us_2017 videos whose largest daily view
  increment is their first observed one (all days consecutive, ≥ 4 increments, decaying
  below 10 % within the trending window): median 3.54 [3.08, 4.41], 10-90 % 2.37-5.71.
  In kappa (tail_ratio(kappa) = (10^kappa - 1)/(2^kappa - 1)): 36 % at 0 (as steep as
  exponential or steeper), median 0.078, 90 % 0.59 -> kappa = max(0, N(mu, 0.40)) (the sd
  from the median-to-90 % spread). mu = 0.15 rather than the real median's 0.08: generated
  sessions measured as the real series are (minute noise, bumps, the floor) show the real
  pooled tail-ratio median with it (3.52 vs 3.54; 3.34 with 0.08).

Rescaled in time: a real pulse's lifetime (its onset to the day its excess falls below
10 % of the peak's) is mapped onto the session's length: lifetime = length/U with
U ~ logN(0, 0.15) (a host stops a little before or after the audience has gone). So
rise = rho·lifetime with rho ~ logN(log 0.42, 0.434) clipped to [0.05, 0.7] (the real
log-sd; the median 0.42 rather than the real 0.353 because the 10 % onset cuts the first
18 % of a gamma rise, so generated sessions measured as the real series are show 0.36 with
it, the real 0.37); the half-life is what the rest of the lifetime leaves,
half_life = (lifetime - rise)/tail_ratio(kappa); floor = 1/P with P ~ logN(log 12.1, 0.587)
clipped to [3, 100].

Generated sessions measured as the real series are (bench, 500 sessions; real in
brackets): rise/lifetime 0.357 [0.373], half-life/lifetime 0.172 [0.151: +14 %, the one
statistic this family, with its lifetime tied to the rise and the tail, does not match],
tail ratio 3.52 [3.54], peak/baseline 13.2 [12.5].

Assumed (nothing public to calibrate against; each a SessionRanges field, widened in the
held-out measurement): length ~ logN(log 90 min, 0.35) clipped to [30, 240]; peak viewers
~ logN(log 1500, 1.0); engagement (interactions per viewer-minute) ~ logN(log 0.05, 0.6);
conversion (orders per viewer-minute) = 0.002 · (engagement/0.05)^0.5 · logN(0, 0.6)
(engaged audiences buy more); order counts overdispersed with NB size ~ logN(log 2, 0.5)
(orders cluster as deals are announced); 0-3 flash-deal bumps (Poisson, mean 1) of height
5-30 % of the peak and width 2-6 % of the length between 20 % and 90 % of the session;
viewer noise a multiplicative log AR(1), sd 0.06, phi 0.8. Daily data cannot show a pulse's
rise (it is mostly one day), so the gamma rise's power (2) is assumed too.

Pure numpy; every session is a function of its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy import special
from scipy.optimize import brentq

Series = NDArray[np.float64]

RISE_POWER = 2.0  # gamma rise (t/rise)^k e^(k(1 - t/rise)); daily data cannot resolve it
EXPONENTIAL_TAIL_RATIO = float(np.log(10) / np.log(2))  # 3.32
# Tail heaviness at or below which the decay is its exponential limit: one threshold for the
# curve, its integral and its tail ratio, so they describe the same curve.
EXPONENTIAL_BELOW = 1e-6


@dataclass(frozen=True)
class PulseShape:
    """One attention pulse's shape, in the series' own time unit."""

    rise: float  # from the last bucket before onset to the peak
    half_life: float  # from the peak until the excess over the baseline halves
    tenth_life: float  # from the peak until the excess falls below 10 % of the peak's
    lifetime: float  # from the last bucket before onset until the 10 % point
    peak_to_baseline: float

    @property
    def tail_ratio(self) -> float:
        return self.tenth_life / self.half_life


@dataclass(frozen=True)
class ShapeSummary:
    """Medians of pulse shapes' dimensionless statistics."""

    pulses: int
    rise_to_lifetime: float
    half_life_to_lifetime: float
    tail_ratio: float
    peak_to_baseline: float

    @staticmethod
    def of(shapes: Sequence[PulseShape]) -> ShapeSummary:
        def median(values: list[float]) -> float:
            return float(np.median(values)) if values else float("nan")

        return ShapeSummary(
            len(shapes),
            median([s.rise / s.lifetime for s in shapes]),
            median([s.half_life / s.lifetime for s in shapes]),
            median([s.tail_ratio for s in shapes]),
            median([s.peak_to_baseline for s in shapes]),
        )


# What the real series measured (see the module docstring); the generator's own shapes are
# checked against these in the tests and the bench.
REAL_SHAPES = ShapeSummary(
    pulses=48, rise_to_lifetime=0.373, half_life_to_lifetime=0.151, tail_ratio=3.54,
    peak_to_baseline=12.5,
)  # fmt: skip
REAL_TAIL_RATIO_QUARTILES = (3.08, 4.41)


def _crossing(excess: Series, start: int, level: float) -> float | None:
    """When the excess first falls below `level` after `start`, interpolated log-linearly
    between buckets; None if it never does within the series."""
    t = start
    while t + 1 < len(excess) and excess[t + 1] >= level:
        t += 1
    if t + 1 >= len(excess):
        return None
    above, below = float(excess[t]), float(excess[t + 1])
    if below <= 0:
        return t + (above - level) / (above - below)
    return t + float((np.log(above) - np.log(level)) / (np.log(above) - np.log(below)))


def pulse_shapes(
    series: Sequence[float] | Series,
    *,
    threshold: float = 5.0,
    window: int = 28,
    separation: int = 7,
    baseline: float | None = None,
) -> list[PulseShape]:
    """Every pulse of `series`: a bucket ≥ `threshold` x the baseline and the largest within
    ± `separation` buckets. The baseline is the median of the `window` buckets before the
    peak, or `baseline` when given (a generated session's floor, a video's zero)."""
    x = np.asarray(series, dtype=float)
    out = []
    for peak in range(window if baseline is None else 0, len(x)):
        base = float(np.median(x[peak - window : peak])) if baseline is None else baseline
        if base <= 0 or x[peak] < threshold * base:
            continue
        low, high = max(0, peak - separation), min(len(x), peak + separation + 1)
        if int(np.argmax(x[low:high])) + low != peak:
            continue
        excess = x - base
        height = float(excess[peak])
        onset = peak
        while onset > 0 and excess[onset - 1] > 0.1 * height:
            onset -= 1
        half = _crossing(excess, peak, 0.5 * height)
        tenth = _crossing(excess, peak, 0.1 * height)
        if half is None or tenth is None or half <= peak:
            continue
        out.append(
            PulseShape(
                rise=peak - onset + 1.0,
                half_life=half - peak,
                tenth_life=tenth - peak,
                lifetime=tenth - onset + 1.0,
                peak_to_baseline=float(x[peak]) / base,
            )
        )
    return out


def tail_ratio(kappa: float) -> float:
    """Time to 10 % over time to 50 % of a (1 + d/s)^(-1/kappa) decay; 3.32 at kappa = 0."""
    if kappa <= EXPONENTIAL_BELOW:
        return EXPONENTIAL_TAIL_RATIO
    return float(np.expm1(kappa * np.log(10.0)) / np.expm1(kappa * np.log(2.0)))


def tail_ratios(kappa: Series) -> Series:
    """tail_ratio of each kappa."""
    k = np.asarray(kappa, dtype=float)
    power = k > EXPONENTIAL_BELOW
    safe = np.where(power, k, 1.0)
    ratios = np.expm1(safe * np.log(10.0)) / np.expm1(safe * np.log(2.0))
    return np.where(power, ratios, EXPONENTIAL_TAIL_RATIO)


def kappa_for(ratio: float) -> float:
    """The tail heaviness kappa whose tail_ratio is `ratio` (0 for ratios at or below 3.32)."""
    if ratio <= EXPONENTIAL_TAIL_RATIO:
        return 0.0
    return float(brentq(lambda k: tail_ratio(k) - ratio, EXPONENTIAL_BELOW, 20.0))


def attention_curve(
    minutes: Series, rise: Series | float, half_life: Series | float, kappa: Series | float
) -> Series:
    """The pulse's excess over the floor, 1 at the peak (t = rise): a gamma rise, then an
    exponential (kappa = 0) or power-law (kappa > 0) decay with the given half-life. Broadcasts, so
    a column of parameters against a row of minutes gives one curve per row."""
    t = np.asarray(minutes, dtype=float)
    rise_ = np.maximum(np.asarray(rise, dtype=float), 1e-3)
    half = np.maximum(np.asarray(half_life, dtype=float), 1e-3)
    k = np.maximum(np.asarray(kappa, dtype=float), 0.0)
    x = np.clip(t / rise_, 0.0, None)
    rising = np.where(x > 0, x, 1.0) ** RISE_POWER * np.exp(RISE_POWER * (1.0 - x))
    rising = np.where(x > 0, rising, 0.0)
    after = np.maximum(t - rise_, 0.0)
    power = k > EXPONENTIAL_BELOW
    safe_k = np.where(power, k, 1.0)
    # (1 + d/s)^(-1/kappa) halves at d = s (2^kappa - 1), so s = half / (2^kappa - 1).
    scale = half / np.where(power, np.expm1(safe_k * np.log(2.0)), 1.0)
    decaying = np.where(
        power,
        (1.0 + after / scale) ** (-1.0 / safe_k),
        np.exp(-np.log(2.0) * after / half),
    )
    return np.asarray(np.where(t <= rise_, rising, decaying), dtype=float)


def attention_integral(
    minutes: Series | float, rise: Series | float, half_life: Series | float, kappa: Series | float
) -> Series:
    """∫₀ᵗ attention_curve: closed form (an incomplete gamma for the rise, the decay's own
    antiderivative after it), so a forecast sums a curve's future without evaluating it
    minute by minute."""
    t = np.maximum(np.asarray(minutes, dtype=float), 0.0)
    rise_ = np.maximum(np.asarray(rise, dtype=float), 1e-3)
    half = np.maximum(np.asarray(half_life, dtype=float), 1e-3)
    k = np.maximum(np.asarray(kappa, dtype=float), 0.0)

    # ∫₀^t (u/r)^2 e^(2(1 - u/r)) du = r e² gamma_lower(3, 2t/r) / 2³ = r e² P(3, 2t/r) / 4.
    def rising(upto: Series) -> Series:
        return np.asarray(
            rise_ * np.exp(RISE_POWER) * special.gammainc(3.0, RISE_POWER * upto / rise_) / 4.0
        )

    after = np.maximum(t - rise_, 0.0)
    power = k > EXPONENTIAL_BELOW
    safe_k = np.where(power, k, 1.0)
    scale = half / np.where(power, np.expm1(safe_k * np.log(2.0)), 1.0)
    exponent = 1.0 - 1.0 / safe_k  # of (1 + d/scale) in the antiderivative
    near_log = np.abs(exponent) < 1e-6
    safe_exponent = np.where(near_log, 1.0, exponent)
    power_part = np.where(
        near_log,
        scale * np.log1p(after / scale),
        scale * ((1.0 + after / scale) ** safe_exponent - 1.0) / safe_exponent,
    )
    rate = np.log(2.0) / half
    exponential_part = -np.expm1(-rate * after) / rate
    decayed = np.where(power, power_part, exponential_part)
    return np.asarray(rising(np.minimum(t, rise_)) + decayed, dtype=float)


@dataclass(frozen=True)
class LogNormal:
    """logN(log median, sd), clipped to [low, high]."""

    median: float
    sd: float
    low: float = 0.0
    high: float = float("inf")

    def draw(self, rng: np.random.Generator) -> float:
        value = self.median * float(np.exp(self.sd * rng.standard_normal()))
        return float(np.clip(value, self.low, self.high))

    def widened(self, factor: float) -> LogNormal:
        return replace(self, sd=self.sd * factor, low=self.low / factor, high=self.high * factor)


@dataclass(frozen=True)
class SessionRanges:
    """The distribution each session's parameters are drawn from. The shape fields are the
    calibration; the rest are assumptions (module docstring)."""

    length: LogNormal = LogNormal(90.0, 0.35, 30.0, 240.0)
    rise_fraction: LogNormal = LogNormal(0.42, 0.434, 0.05, 0.7)
    kappa_mean: float = 0.15
    kappa_sd: float = 0.40
    lifetime_over_length: LogNormal = LogNormal(1.0, 0.15)
    peak_to_floor: LogNormal = LogNormal(12.1, 0.587, 3.0, 100.0)
    peak_viewers: LogNormal = LogNormal(1500.0, 1.0, 20.0)
    engagement: LogNormal = LogNormal(0.05, 0.6)
    conversion_at_median_engagement: float = 0.002
    conversion_engagement_slope: float = 0.5
    conversion_sd: float = 0.6
    order_dispersion: LogNormal = LogNormal(2.0, 0.5, 0.3, 50.0)
    bumps_per_session: float = 1.0
    bump_height: tuple[float, float] = (0.05, 0.30)
    viewer_noise_sd: float = 0.06
    viewer_noise_phi: float = 0.8
    max_length: int = 480

    def widened(self, factor: float) -> SessionRanges:
        """Every spread x `factor` (and the clip bounds moved out): the held-out ranges."""
        return replace(
            self,
            length=self.length.widened(factor),
            rise_fraction=replace(
                self.rise_fraction.widened(factor), high=min(0.85, self.rise_fraction.high * factor)
            ),
            kappa_sd=self.kappa_sd * factor,
            lifetime_over_length=self.lifetime_over_length.widened(factor),
            peak_to_floor=replace(self.peak_to_floor.widened(factor), low=2.0),
            peak_viewers=self.peak_viewers.widened(factor),
            engagement=self.engagement.widened(factor),
            conversion_sd=self.conversion_sd * factor,
            order_dispersion=self.order_dispersion.widened(factor),
            bumps_per_session=self.bumps_per_session * factor,
            bump_height=(self.bump_height[0], min(0.8, self.bump_height[1] * factor)),
            viewer_noise_sd=self.viewer_noise_sd * factor,
        )


@dataclass(frozen=True)
class LiveSession:
    """A generated session: per-minute counts and the parameters that made them."""

    viewers: Series
    attention: Series  # the viewers the pulse would have had over twice the session's length
    interactions: Series
    orders: Series
    rise: float
    half_life: float
    kappa: float
    floor: float
    peak_viewers: float
    engagement: float
    conversion: float
    dispersion: float

    @property
    def length(self) -> int:
        return len(self.viewers)

    @property
    def total_orders(self) -> float:
        return float(self.orders.sum())


def generate_session(rng: np.random.Generator, ranges: SessionRanges | None = None) -> LiveSession:
    r = ranges or SessionRanges()
    length = round(min(r.length.draw(rng), r.max_length))
    lifetime = length / r.lifetime_over_length.draw(rng)
    rise = r.rise_fraction.draw(rng) * lifetime
    kappa = max(0.0, r.kappa_mean + r.kappa_sd * float(rng.standard_normal()))
    half_life = max((lifetime - rise) / tail_ratio(kappa), 0.5)
    floor = 1.0 / r.peak_to_floor.draw(rng)
    # The attention pulse runs on after the host stops (`extended`): measuring its shape
    # needs its tail, the session sees only its first `length` minutes.
    extended = 2 * length
    minutes = np.arange(extended, dtype=float)
    shape = floor + (1.0 - floor) * attention_curve(minutes, rise, half_life, kappa)
    for _ in range(int(rng.poisson(r.bumps_per_session))):
        at = rng.uniform(0.2, 0.9) * length
        width = max(rng.uniform(0.02, 0.06) * length, 1.0)
        height = rng.uniform(*r.bump_height)
        shape = shape + height * attention_curve(minutes - at + width, width, width, 0.0)
    innovations = rng.standard_normal(extended) * r.viewer_noise_sd
    noise = np.empty(extended)
    level = innovations[0] / np.sqrt(1.0 - r.viewer_noise_phi**2)
    for t in range(extended):
        level = r.viewer_noise_phi * level + innovations[t] if t else level
        noise[t] = level
    peak_viewers = r.peak_viewers.draw(rng)
    attention = np.maximum(np.round(peak_viewers * shape * np.exp(noise)), 0.0)
    viewers = attention[:length]
    engagement = r.engagement.draw(rng)
    conversion = (
        r.conversion_at_median_engagement
        * (engagement / r.engagement.median) ** r.conversion_engagement_slope
        * float(np.exp(r.conversion_sd * rng.standard_normal()))
    )
    dispersion = r.order_dispersion.draw(rng)
    interactions = _negative_binomial(rng, engagement * viewers, 5.0)
    orders = _negative_binomial(rng, conversion * viewers, dispersion)
    return LiveSession(
        viewers=viewers,
        attention=attention,
        interactions=interactions,
        orders=orders,
        rise=rise,
        half_life=half_life,
        kappa=kappa,
        floor=floor,
        peak_viewers=peak_viewers,
        engagement=engagement,
        conversion=conversion,
        dispersion=dispersion,
    )


def generate_sessions(
    count: int, seed: int, ranges: SessionRanges | None = None
) -> list[LiveSession]:
    rng = np.random.default_rng(seed)
    return [generate_session(rng, ranges) for _ in range(count)]


def session_shape(session: LiveSession) -> PulseShape | None:
    """The main attention pulse of a session, measured as the real series are (baseline: the
    session's floor audience; its tail past the session's end included), or None if it does
    not decay to 10 % within twice the session's length."""
    base = session.floor * session.peak_viewers
    shapes = pulse_shapes(
        session.attention, threshold=2.0, separation=len(session.attention), baseline=base
    )
    return shapes[0] if shapes else None


def _negative_binomial(rng: np.random.Generator, mean: Series, size: float) -> Series:
    mean = np.maximum(mean, 0.0)
    return rng.negative_binomial(size, size / (size + mean)).astype(float)
