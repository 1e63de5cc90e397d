"""`python -m tests.bench`: every benchmark, against the servers in DATABASE_URL / NATS_URL
or freshly started embedded ones with PostgreSQL's default durability (fsync on)."""

from __future__ import annotations

import asyncio
import sys

from tests.bench import (
    bench_catalogue,
    bench_collect,
    bench_console,
    bench_eventstore,
    bench_forecast_live,
    bench_forecast_pulses,
    bench_forecast_retail,
    bench_forecast_service,
    bench_fulfillment,
    bench_grpc_edge,
    bench_inventory,
    bench_nab,
    bench_outbox,
    bench_signal_pipeline,
    bench_signal_quality,
)
from tests.helpers.infra import running_infra

BENCHMARKS = [
    bench_eventstore,
    bench_outbox,
    bench_inventory,
    bench_console,
    bench_catalogue,
    bench_grpc_edge,
    bench_signal_quality,
    bench_nab,
    bench_signal_pipeline,
    bench_forecast_service,
    bench_forecast_retail,
    bench_forecast_pulses,
    bench_forecast_live,
    bench_fulfillment,
    bench_collect,
]


def main() -> None:
    selected = sys.argv[1:]
    with running_infra(durable=True) as infra:
        for module in BENCHMARKS:
            if selected and not any(name in module.__name__ for name in selected):
                continue
            asyncio.run(module.run(infra))


if __name__ == "__main__":
    main()
