from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


def emit(
    benchmark: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    lower_is_better: bool = False,
    **extra: Any,
) -> None:
    record: dict[str, Any] = {"benchmark": benchmark, "value": round(value, 3), "unit": unit}
    if baseline is not None:
        record["baseline"] = round(baseline, 3)
        record["ratio"] = round((baseline / value) if lower_is_better else (value / baseline), 3)
    record.update(extra)
    print(json.dumps(record), flush=True)


async def rate(count: int, work: Callable[[], Awaitable[Any]]) -> float:
    """Items per second of one run of `work` that handles `count` items."""
    started = time.perf_counter()
    await work()
    return count / (time.perf_counter() - started)


def alternating_rounds(
    ours: list[float], baseline: list[float], *, lower_is_better: bool = False
) -> dict[str, Any]:
    """What `emit` reports for rounds run alternately, ours then the baseline: the median,
    min and max of the per-round ratios (oriented so higher is better) and every round.
    Passed as `**extra`, its `ratio` replaces the ratio of the two medians."""
    ratios = [(b / o) if lower_is_better else (o / b) for o, b in zip(ours, baseline, strict=True)]
    return {
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "rounds": {
            "ours": [round(x, 3) for x in ours],
            "baseline": [round(x, 3) for x in baseline],
            "ratio": [round(r, 3) for r in ratios],
        },
    }
