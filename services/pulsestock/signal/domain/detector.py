"""An online pulse detector that needs no hand-set threshold per series: CUSUM of a robust
z-score of the log rate against an exponentially weighted baseline.

Each observation sees only the ones before it, in O(1) time and memory.
- Scale-free transform: log(rate + c), with c a tenth of the median of the warm-up
  observations, so a cost per click of 0.08 and a view velocity of 80,000 are judged alike
  (log1p treated small values as nearly constant, and a fixed floor of the scale then hid
  their pulses).
- Baseline: EW mean and EW mean absolute deviation of the transformed rate; residuals are
  clipped to 3 scales before they update it, so an outlier barely moves it.
- Evidence: one-sided CUSUM of the z-score (slack `k`, each observation capped at `z_cap`,
  above `h + k`, so one extreme jump alone alarms) catches both a spike and a sustained rise.
- Alarm: it fires once, on the observation where the CUSUM crosses `h`; the CUSUM then
  restarts. While the alarm is on, the baseline still learns, at a fifth of its pace (a
  frozen baseline never re-armed after a lasting level shift, and a fast one would learn the
  pulse as normal); it re-arms, with a fresh CUSUM, after `rearm_after` calm observations
  (z below `calm_z`).
Parameters were chosen on NAB's realAdExchange only (tests/bench/tune_detector.py); its
other categories, the generated series and Wikipedia are reported held out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Mean absolute deviation of a normal variable times this is its standard deviation.
MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2)


@dataclass(frozen=True)
class DetectorConfig:
    warmup: int = 8  # observations that only learn the transform and the baseline
    alpha: float = 0.1  # weight of a new observation in the baseline level
    scale_alpha: float = 0.01  # ... in its scale (slower: a scale is harder to estimate)
    k: float = 1.0  # CUSUM slack, in robust-z units
    h: float = 6.0  # CUSUM alarm level
    z_cap: float = 10.0  # most one observation adds to the CUSUM
    clip: float = 3.0  # residuals beyond this many scales update the baseline as if at it
    min_scale: float = 0.01  # floor of the scale (log units: a 1 % change)
    offset_share: float = 0.1  # c = this share of the warm-up median
    alarm_slowdown: float = 0.2  # the baseline's pace while an alarm is on
    rearm_after: int = 3  # calm observations that end an alarm
    calm_z: float = 1.0


@dataclass(frozen=True)
class Step:
    score: float  # 0..1; 0.5 at the alarm level
    alert: bool  # True only on the observation where a pulse is first detected
    z: float


@dataclass
class PulseDetector:
    config: DetectorConfig = field(default_factory=DetectorConfig)
    seen: int = 0
    mean: float = 0.0  # baseline level of log(rate + offset)
    deviation: float = 0.0  # baseline mean absolute deviation
    cusum: float = 0.0
    alarm: bool = False
    offset: float = 1.0
    calm: int = 0  # consecutive calm observations during an alarm
    warming: list[float] = field(default_factory=list)  # the warm-up rates

    def _transform(self, rate: float) -> float:
        return math.log(max(rate, 0.0) + self.offset)

    def update(self, rate: float) -> Step:
        """Feed the next rate (e.g. views per hour); returns its score and alert."""
        c = self.config
        self.seen += 1
        if self.seen <= c.warmup:
            self.warming.append(max(rate, 0.0))
            if self.seen == c.warmup:
                self._start()
            return Step(score=0.0, alert=False, z=0.0)
        x = self._transform(rate)
        scale = max(MEAN_ABS_TO_SIGMA * self.deviation, c.min_scale)
        residual = x - self.mean
        z = residual / scale
        self.cusum = max(0.0, self.cusum + min(z, c.z_cap) - c.k)
        score = self.cusum / (self.cusum + c.h) if self.cusum > 0 else 0.0
        alert = False
        if self.alarm:
            self.calm = self.calm + 1 if z < c.calm_z else 0
            if self.calm >= c.rearm_after:
                self.alarm = False
                self.cusum = 0.0  # what the pulse accumulated does not count again
        if self.cusum > c.h and not self.alarm:
            alert = self.alarm = True
            self.calm = 0
            self.cusum = 0.0
        pace = c.alarm_slowdown if self.alarm else 1.0
        clipped = min(max(residual, -c.clip * scale), c.clip * scale)
        self.mean += c.alpha * pace * clipped
        self.deviation += c.scale_alpha * pace * (abs(clipped) - self.deviation)
        return Step(score=score, alert=alert, z=z)

    def _start(self) -> None:
        """Fix the transform's offset and the first baseline from the warm-up rates."""
        ordered = sorted(self.warming)
        median = ordered[len(ordered) // 2] if ordered else 0.0
        self.offset = self.config.offset_share * median if median > 0 else 1.0
        logs = sorted(self._transform(r) for r in self.warming)
        self.mean = logs[len(logs) // 2] if logs else 0.0
        self.deviation = sum(abs(v - self.mean) for v in logs) / len(logs) if logs else 0.0
        self.warming = []

    def snapshot(self) -> dict[str, float | int | bool | list[float]]:
        return {
            "seen": self.seen,
            "mean": self.mean,
            "deviation": self.deviation,
            "cusum": self.cusum,
            "alarm": self.alarm,
            "offset": self.offset,
            "calm": self.calm,
            "warming": list(self.warming),
        }

    @classmethod
    def restore(
        cls, state: dict[str, float | int | bool | list[float]], config: DetectorConfig
    ) -> PulseDetector:
        """A detector from `snapshot`; a snapshot of the earlier log1p detector (no offset,
        calm or warm-up keys) resumes with offset 1, its baseline kept."""
        warming = state.get("warming", [])
        assert isinstance(warming, list)
        seen = int(state["seen"])  # type: ignore[arg-type]
        if "warming" not in state and seen < config.warmup:
            seen = config.warmup  # the old detector learnt its baseline from the first one
        return cls(
            config,
            seen,
            float(state["mean"]),  # type: ignore[arg-type]
            float(state["deviation"]),  # type: ignore[arg-type]
            float(state["cusum"]),  # type: ignore[arg-type]
            bool(state["alarm"]),
            float(state.get("offset", 1.0)),  # type: ignore[arg-type]
            int(state.get("calm", 0)),  # type: ignore[arg-type]
            [float(r) for r in warming],
        )


def rates_from_cumulative(values: list[float]) -> list[float]:
    """Per-interval increments of a cumulative counter (never negative)."""
    return [max(0.0, b - a) for a, b in zip([values[0], *values], values, strict=False)]
