"""The metrics contract: every series the Grafana dashboard (deploy/grafana-dashboard.json)
queries is one the services export, and every pulsestock series exported is on the
dashboard. The names are read from a real Prometheus exposition, in a process of its own (a
meter provider is installed once per process)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
from pulsestock.devstack.servers import free_port
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json"
PROBE = """
from prometheus_client import REGISTRY, generate_latest
from pulsestock.telemetry import configure_telemetry
configure_telemetry("probe", None, prometheus=True)
from pulsestock import metrics as m
m.GRPC_SERVER_DURATION.record(0.01, {"rpc_method": "/p.S/M", "rpc_code": "OK"})
for name in dir(m):
    instrument = getattr(m, name)
    if name.isupper() and hasattr(instrument, "add"):
        instrument.add(1)
m._readings.outbox_depth, m._readings.outbox_oldest_age_s = 1, 1.0
for readings in ("consumer_pending", "consumer_redelivered", "dead_letters"):
    getattr(m._readings, readings)["x__y"] = 1
m.set_channel_backoff("tiktok_shop", 1.0)
print(generate_latest(REGISTRY).decode())
"""
SUFFIXES = ("_bucket", "_count", "_sum")
ORDERS = "inventory_sync__orders"


def exported() -> set[str]:
    text = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def family(series: str) -> str:
    for suffix in SUFFIXES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def test_the_dashboard_queries_exactly_what_the_services_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(pulsestock_[a-z_]+|process_[a-z_]+)\b", target["expr"])
    }
    names = exported()
    assert queried - names == set()  # nothing on the dashboard that is never exported
    ours = {family(n) for n in names if n.startswith("pulsestock_")}
    assert ours - {family(n) for n in queried} == set()  # nothing exported left off it


def series(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus exposition (None when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{key}="{want}"' in head for key, want in labels.items()):
            return float(value)
    return None


@pytest.mark.slow
async def test_a_running_service_serves_its_series_and_they_move(
    infra: Infra, nats_url: str
) -> None:
    """inventory-sync as a real process with INVENTORY_SYNC_METRICS_PORT: its /metrics has
    the gRPC histogram, reservations, outbox and consumer gauges, and they follow the calls."""
    schema = unique_name("met")
    port, metrics_port = free_port(), free_port()
    await migrate(infra.database_url, "inventory-sync", schema)
    process = start_service_process(
        "inventory-sync",
        infra.database_url,
        nats_url,
        schema,
        port,
        {"INVENTORY_SYNC_METRICS_PORT": str(metrics_port)},
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        await eventually(lambda: serving(port), within=30, what="inventory-sync SERVING")
        async with aiohttp.ClientSession() as http:

            async def scrape() -> str:
                async with http.get(url) as answer:
                    assert answer.status == 200
                    return await answer.text()

            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = InventorySyncServiceStub(channel)
                await stub.Receive(
                    pb.ReceiveRequest(sku="MET-1", warehouse_id="W1", quantity=2, command_id="m1"),
                    timeout=10,
                )
                for order in ("o1", "o2", "o3"):  # 2 units: the third is a backorder
                    await stub.Reserve(
                        pb.ReserveRequest(
                            channel=Channel.CHANNEL_SHOPIFY,
                            channel_order_id=order,
                            lines=[OrderLine(sku="MET-1", quantity=1)],
                            already_sold=True,
                        ),
                        timeout=10,
                    )

            async def moved() -> bool:
                text = await scrape()
                return (
                    series(text, "pulsestock_reservations_total", outcome="reserved") == 2
                    and series(text, "pulsestock_reservations_total", outcome="oversold") == 1
                    and series(text, "pulsestock_outbox_depth") is not None
                    and (series(text, "pulsestock_events_appended_total") or 0) >= 4
                    and (series(text, "pulsestock_outbox_published_total") or 0) >= 1
                    and series(
                        text, "pulsestock_consumer_pending", consumer="inventory_sync__orders"
                    )
                    is not None
                    and (
                        series(
                            text,
                            "pulsestock_grpc_server_duration_seconds_count",
                            rpc_method="/pulsestock.v1.InventorySyncService/Reserve",
                            rpc_code="OK",
                        )
                        or 0
                    )
                    >= 3
                )

            await eventually(moved, within=20, what="the series to follow the calls")
    finally:
        process.terminate()
        process.wait(15)
        await drop_schema(infra.database_url, schema)
