"""An online pulse detector that needs no hand-set threshold per video: CUSUM of a robust
z-score of log view velocity against an exponentially weighted baseline.

Each observation sees only the ones before it. The baseline (EW mean and EW mean absolute
deviation of log1p(velocity)) is frozen while an alarm is on, so a pulse does not become
its own baseline; outliers are clipped before they update it. The alarm fires once, on the
observation where the CUSUM first crosses `h`, and re-arms when the CUSUM returns to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DetectorConfig:
    warmup: int = 8  # observations that only learn the baseline
    alpha: float = 0.08  # weight of a new observation in the baseline
    k: float = 1.0  # CUSUM slack, in robust-z units
    h: float = 8.0  # CUSUM alarm level
    # One observation adds at most z_cap - k: above h, so one extreme jump alone can alarm
    # (daily data would otherwise catch a one-day pulse a day late); tune_detector.py.
    z_cap: float = 10.0
    min_scale: float = 0.1  # floor of the robust scale (log units)


@dataclass(frozen=True)
class Step:
    score: float  # 0..1; 0.5 at the alarm level
    alert: bool  # True only on the observation where a pulse is first detected
    z: float


@dataclass
class PulseDetector:
    config: DetectorConfig = field(default_factory=DetectorConfig)
    seen: int = 0
    mean: float = 0.0
    deviation: float = 0.0
    cusum: float = 0.0
    alarm: bool = False

    def update(self, rate: float) -> Step:
        """Feed the next rate (e.g. views per hour); returns its score and alert."""
        c = self.config
        x = math.log1p(max(rate, 0.0))
        if self.seen == 0:
            self.mean, self.deviation = x, 0.0
        scale = max(1.4826 * self.deviation, c.min_scale)
        z = (x - self.mean) / scale
        self.seen += 1
        alert = False
        if self.seen > c.warmup:
            self.cusum = max(0.0, self.cusum + min(z, c.z_cap) - c.k)
            if self.cusum > c.h and not self.alarm:
                self.alarm = alert = True
            elif self.cusum == 0.0:
                self.alarm = False
        if not self.alarm:
            clipped = min(max(x, self.mean - 3 * scale), self.mean + 3 * scale)
            self.mean += c.alpha * (clipped - self.mean)
            self.deviation += c.alpha * (abs(clipped - self.mean) - self.deviation)
        score = self.cusum / (self.cusum + c.h) if self.cusum > 0 else 0.0
        return Step(score=score, alert=alert, z=z)

    def snapshot(self) -> dict[str, float | int | bool]:
        return {
            "seen": self.seen,
            "mean": self.mean,
            "deviation": self.deviation,
            "cusum": self.cusum,
            "alarm": self.alarm,
        }

    @classmethod
    def restore(cls, state: dict[str, float | int | bool], config: DetectorConfig) -> PulseDetector:
        return cls(
            config,
            int(state["seen"]),
            float(state["mean"]),
            float(state["deviation"]),
            float(state["cusum"]),
            bool(state["alarm"]),
        )


def rates_from_cumulative(values: list[float]) -> list[float]:
    """Per-interval increments of a cumulative counter (never negative)."""
    return [max(0.0, b - a) for a, b in zip([values[0], *values], values, strict=False)]
