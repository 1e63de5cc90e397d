"""The life of a SKU's pulse: detected, peaking, decaying, ended — from its heat."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Evidence:
    source: str  # "detector" or "rule:<name>"
    description: str
    metrics: dict[str, float]
    video_id: str


@dataclass
class Pulse:
    pulse_id: str
    sku: str
    detected_at: datetime
    hot_channel: str
    evidence: list[Evidence] = field(default_factory=list)
    phase: str = "detected"
    peak_heat: float = 0.0
    ended_at: datetime | None = None


PEAKING, DECAYING, ENDED = "peaking", "decaying", "ended"
DECAY_BELOW = 0.8  # of the peak: the pulse is past its peak
END_BELOW = 0.2  # of the peak: the pulse is over


def advance(pulse: Pulse, heat: float, now: datetime) -> bool:
    """Move the pulse along with the SKU's heat; True when it has just ended."""
    if pulse.phase == ENDED:
        return False
    if heat >= pulse.peak_heat:
        pulse.peak_heat = heat
        pulse.phase = PEAKING
        return False
    if heat < END_BELOW * pulse.peak_heat:
        pulse.phase, pulse.ended_at = ENDED, now
        return True
    if heat < DECAY_BELOW * pulse.peak_heat:
        pulse.phase = DECAYING
    return False
