"""The heat ranking: SKUs by heat, hottest first, each with its active pulse, in one query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000


@dataclass(frozen=True)
class ActivePulse:
    pulse_id: str
    phase: str
    hot_channel: str
    detected_at: datetime
    peak_heat: float
    evidence: list[dict[str, Any]] = field(default_factory=list)
    video_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RankedHeat:
    sku: str
    heat: float
    view_velocity: float
    like_rate: float
    share_rate: float
    as_of: datetime
    pulse: ActivePulse | None


async def rank_heat(
    pool: asyncpg.Pool, limit: int, skus: Sequence[str]
) -> tuple[list[RankedHeat], int]:
    """The `limit` hottest SKUs (of `skus`, when given) and how many matched in all."""
    rows = await pool.fetch(
        "SELECT h.*, count(*) OVER () AS total, p.pulse_id, p.phase, p.hot_channel,"
        " p.detected_at, p.peak_heat, p.evidence, p.video_ids"
        " FROM sku_heat h LEFT JOIN pulses p ON p.sku = h.sku AND p.phase <> 'ended'"
        " WHERE (cardinality($2::text[]) = 0 OR h.sku = ANY($2::text[]))"
        " ORDER BY h.heat DESC, h.sku LIMIT $1",
        limit,
        list(skus),
    )
    ranked = [
        RankedHeat(
            sku=row["sku"],
            heat=row["heat"],
            view_velocity=row["view_velocity"],
            like_rate=row["like_rate"],
            share_rate=row["share_rate"],
            as_of=row["as_of"],
            pulse=None
            if row["pulse_id"] is None
            else ActivePulse(
                pulse_id=row["pulse_id"],
                phase=row["phase"],
                hot_channel=row["hot_channel"],
                detected_at=row["detected_at"],
                peak_heat=row["peak_heat"],
                evidence=list(row["evidence"]),
                video_ids=list(row["video_ids"]),
            ),
        )
        for row in rows
    ]
    return ranked, (rows[0]["total"] if rows else 0)
