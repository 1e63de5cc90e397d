from __future__ import annotations

import json
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
