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
