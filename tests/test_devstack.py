"""`pulsestock dev up` from nothing: embedded PostgreSQL and NATS, five services SERVING,
`pulsestock demo` runs the whole chain on it (a pulse into ingest to a received purchase
order and new channel quantities), and Ctrl-C leaves no process behind. Also `pulsestock
events tail` on a real log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from pulsestock.config import env_prefix
from pulsestock.devstack.servers import free_port
from pulsestock.devstack.supervisor import health_status, http_ready
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent
from pulsestock.eventstore.migrations import apply_migrations
from pulsestock.eventstore.store import connect_pool
from pulsestock.services import definition_of, service_names
from pulsestock.v1 import inventory_sync_events_pb2 as ev

from tests.helpers.infra import Infra

pytestmark = pytest.mark.slow
STARTUP_S = 60
DEMO_S = 90  # both demo runs together
DEMO_STEP_S = 30
PULSESTOCK = str(Path(sys.executable).parent / "pulsestock")


def processes_mentioning(text: str) -> list[str]:
    result = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True, check=False)
    return [line for line in result.stdout.splitlines() if "pgrep" not in line]


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`pulsestock demo` against the stack, finding each service by its <SERVICE>_GRPC_PORT
    as it would against `make run`; a step's deadline is well under the whole bound."""
    return subprocess.run(
        [PULSESTOCK, "demo", "--step-timeout", str(DEMO_STEP_S)],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_S,
        check=False,
    )


@dataclass(frozen=True)
class DemoFacts:
    sku: str
    purchase_order_id: str
    ordered: int
    received: int
    on_hand: tuple[int, int]
    channels: dict[str, tuple[int, int]]


def demo_facts(output: str) -> DemoFacts:
    """The key facts the demo prints: its SKU, the purchase order, the receipt in the ledger
    and each channel's quantity before -> after."""
    sku = re.search(r"^demo SKU (\S+)$", output, re.MULTILINE)
    order = re.search(r"purchase order (\S+) for (\d+) units", output)
    receipt = re.search(r"units received (\d+): on hand (\d+) -> (\d+)", output)
    channels = re.search(r"channel quantities (.+?)  \(", output)
    assert sku, output
    assert order, output
    assert receipt, output
    assert channels, output
    return DemoFacts(
        sku=sku[1],
        purchase_order_id=order[1],
        ordered=int(order[2]),
        received=int(receipt[1]),
        on_hand=(int(receipt[2]), int(receipt[3])),
        channels={
            name: (int(before), int(after))
            for name, before, after in re.findall(r"(\w+) (\d+) -> (\d+)", channels[1])
        },
    )


def test_dev_up_serves_all_five_runs_the_demo_twice_then_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in service_names()}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env.update({f"{env_prefix(name)}_GRPC_PORT": str(port) for name, port in ports.items()})
    env["INGEST_HTTP_PORT"] = str(free_port())
    env["COLLECT_HTTP_PORT"] = str(free_port())
    env["CONSOLE_PORT"] = str(free_port())
    console = f"http://127.0.0.1:{env['CONSOLE_PORT']}"
    data_dir = tmp_path / "stack"
    supervisor = subprocess.Popen(
        [PULSESTOCK, "dev", "up", "--data-dir", str(data_dir)],
        env=env,
        start_new_session=True,  # its own process group, as a terminal would give it
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    started = time.monotonic()
    try:
        pending = set(service_names())
        # Two cores start PostgreSQL, NATS, the fakes and five Python processes at once
        # (about 20 s when the machine is otherwise idle): a liveness bound, not a goal.
        while pending and time.monotonic() - started < STARTUP_S:
            assert supervisor.poll() is None, supervisor.stdout.read() if supervisor.stdout else ""
            pending = {name for name in pending if not health_status(ports[name])}
        assert not pending, f"not SERVING within {STARTUP_S} s: {pending}"
        while not http_ready(f"{console}/healthz") and time.monotonic() - started < STARTUP_S:
            assert supervisor.poll() is None, supervisor.stdout.read() if supervisor.stdout else ""
            time.sleep(0.1)
        assert "Now" in http_text(console + "/")
        # The whole chain on the running stack, twice: each run makes its own SKU.
        demo_started = time.monotonic()
        demos = [run_demo(env), run_demo(env)]
        demo_seconds = time.monotonic() - demo_started
        # The console shows the demo's purchase order on its SKU's page.
        first_facts = demo_facts(demos[0].stdout)
        sku_page = http_text(f"{console}/sku/{first_facts.sku}")
        assert first_facts.purchase_order_id in sku_page
    finally:
        with contextlib.suppress(ProcessLookupError):  # exited early: the assert above says why
            os.killpg(supervisor.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
        output = supervisor.communicate(timeout=30)[0].decode()
    assert supervisor.returncode == 0, output
    for name, port in ports.items():  # each service's line, with the port it really serves on
        assert f"{name:<15} grpc 127.0.0.1:{port}" in output, output
    assert f"http 127.0.0.1:{env['INGEST_HTTP_PORT']}  SERVING" in output, output
    assert f"console         {console}  (open it in a browser)" in output, output
    assert "stopped" in output
    # The collector polled the Display fake's demo creator and pushed into ingest.
    collected = [line for line in output.splitlines() if '"event": "collected"' in line]
    assert any(re.search(r'"pushed": [1-9]', line) for line in collected), output
    with pytest.raises(ProcessLookupError):
        os.killpg(supervisor.pid, 0)  # no service process is left in the group
    assert processes_mentioning(str(data_dir)) == []  # nor PostgreSQL / nats-server

    for demo in demos:
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "demo passed" in demo.stdout
        facts = demo_facts(demo.stdout)
        assert facts.purchase_order_id
        assert facts.received == facts.ordered > 0  # the whole purchase order arrived
        assert facts.on_hand[1] - facts.on_hand[0] == facts.received
        assert set(facts.channels) == {"TIKTOK_SHOP", "SHOPIFY", "AMAZON"}, facts.channels
        increases = [after - before for before, after in facts.channels.values()]
        assert 0 < max(increases) <= facts.received, facts.channels
    first, second = (demo_facts(demo.stdout) for demo in demos)
    assert first.sku != second.sku
    assert first.purchase_order_id != second.purchase_order_id
    assert demo_seconds < DEMO_S, demo_seconds


async def test_events_tail_prints_readable_events(infra: Infra) -> None:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await apply_migrations(conn, "inventory_sync", definition_of("inventory-sync").migrations())
    finally:
        await conn.close()
    pool = await connect_pool(infra.database_url, "inventory_sync")
    try:
        store = EventStore(pool, "inventory_sync")
        sku = f"TAIL-{time.monotonic_ns()}"
        await store.append(
            f"sku-{sku}",
            NO_STREAM,
            [NewEvent.of(ev.StockReceived(sku=sku, warehouse_id="W1", quantity=4))],
        )
    finally:
        await pool.close()
    tail = await asyncio.create_subprocess_exec(
        PULSESTOCK,
        "events",
        "tail",
        "--service",
        "inventory-sync",
        env={**os.environ, "DATABASE_URL": infra.database_url},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(tail.communicate(), 60)
    assert tail.returncode == 0
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    mine = [line for line in lines if line["stream"] == f"sku-{sku}"]
    assert len(mine) == 1
    assert mine[0]["type"] == "pulsestock.v1.StockReceived"
    assert mine[0]["data"] == {"sku": sku, "warehouseId": "W1", "quantity": "4"}


def test_configured_webhook_secrets_are_not_replaced_by_the_fakes() -> None:
    from pulsestock.devstack.supervisor import with_fake_channels
    from pulsestock.fakes import fake_channel_env

    fakes = fake_channel_env("http://t", "http://s", "http://a")
    configured = {"SHOPIFY_WEBHOOK_SECRET": "the-shops-own-secret", "AMAZON_WEBHOOK_TOKEN": ""}
    child = with_fake_channels(configured, fakes)
    assert child["SHOPIFY_WEBHOOK_SECRET"] == "the-shops-own-secret"
    assert child["AMAZON_WEBHOOK_TOKEN"] == fakes["AMAZON_WEBHOOK_TOKEN"]  # empty = unset
    assert child["SHOPIFY_API_URL"] == "http://s"
