"""`make soak` (`python -m tests.soak`): the whole system under a steady mixed load for a
bounded time, on loopback only; not part of CI.

It starts `pulsestock dev up` on free ports (embedded PostgreSQL and NATS, the channel fakes,
every service), stocks 20 SKUs, then for SOAK_SECONDS (600) drives, open loop at fixed rates:
video samples (a message of 20 a second, one per video, each a client stream; one batch in
flight at a time so each video's samples stay in order), orders through ingest's `RecordOrder`
(5 a second), signed Shopify `orders/create` webhooks (2 a second) and `GetStock` reads (5 a
second), and counts the error lines the services log meanwhile. Every minute it records each
kind's completed calls and errors, and every 10 s the resident memory of each service process
(/proc/<pid>/status VmRSS).

Verdict (exit 1 otherwise): zero errors; every full minute after warm-up (SOAK_WARMUP_SECONDS,
60) completes at least 95 % of its target calls of each kind; each service's resident memory
at the end is within 20 % of its level at the end of warm-up. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.config import env_prefix
from pulsestock.devstack.servers import free_port
from pulsestock.fakes import fake_channel_env
from pulsestock.services import service_names
from pulsestock.v1 import common_pb2, ingest_events_pb2, ingest_pb2, inventory_sync_pb2
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.service import serving

PULSESTOCK = str(Path(sys.executable).parent / "pulsestock")
WEBHOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
SKUS = [f"SOAK-{index:02d}" for index in range(20)]
VIDEOS = [f"soak-video-{index:02d}" for index in range(20)]
RATES = {"sample_batches": 1.0, "orders": 5.0, "webhooks": 2.0, "reads": 5.0}  # per second
IN_FLIGHT = {"sample_batches": 1, "orders": 64, "webhooks": 64, "reads": 64}
SHOPIFY_SECRET = fake_channel_env("", "", "")["SHOPIFY_WEBHOOK_SECRET"]


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


@dataclass
class Tally:
    started: float
    done: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    memory: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))

    def minute(self) -> int:
        return int((time.monotonic() - self.started) // 60)

    def ok(self, kind: str, count: int = 1) -> None:
        self.done[(kind, self.minute())] += count

    def failed(self, kind: str, error: str) -> None:
        if len(self.errors[kind]) < 20:
            self.errors[kind].append(error)
        else:
            self.errors[kind].append("...")


async def paced(
    rate: float,
    until: float,
    tally: Tally,
    kind: str,
    call: Callable[[int], Awaitable[None]],
    most_in_flight: int,
) -> None:
    """Start `call` at `rate` a second (open loop up to `most_in_flight` calls: a slow system
    falls behind its target and shows it, it is not asked less)."""
    in_flight: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(most_in_flight)
    interval = 1.0 / rate
    next_at = time.monotonic()
    index = 0

    async def one(i: int) -> None:
        try:
            await call(i)
            tally.ok(kind)
        except Exception as error:  # every failure counts; the soak reports them all
            tally.failed(kind, repr(error)[:300])
        finally:
            gate.release()

    while time.monotonic() < until:
        await gate.acquire()
        task = asyncio.create_task(one(index))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        index += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*in_flight, return_exceptions=True)


def service_pids(supervisor: int) -> dict[str, int]:
    """The supervisor's children that serve a service (`pulsestock.cli serve <name>`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("PPid")), ""
        )
        if parent == str(supervisor) and b"serve" in argv:
            found[argv[argv.index(b"serve") + 1].decode()] = int(entry.name)
    return found


def resident_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def watch_memory(supervisor: int, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        for name, pid in service_pids(supervisor).items():
            kib = resident_kib(pid)
            if kib is not None:
                tally.memory[name].append((time.monotonic() - tally.started, kib))
        await asyncio.sleep(10)


def shopify_webhook(index: int) -> tuple[bytes, dict[str, str]]:
    order: dict[str, Any] = json.loads(
        (WEBHOOKS / "shopify_order_shopify-api-ruby.json").read_text()
    )["order"]
    order["id"] = 900_000_000 + index
    order["name"] = f"#S{index}"
    order["line_items"] = order["line_items"][:1]
    order["line_items"][0]["sku"] = SKUS[index % len(SKUS)]
    order["line_items"][0]["quantity"] = 1
    body = json.dumps(order, separators=(",", ":")).encode()
    digest = hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()
    return body, {
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
        "Content-Type": "application/json",
    }


async def drive(env: dict[str, str], supervisor: int, seconds: float, warmup: float) -> Tally:
    ingest_addr = f"127.0.0.1:{env['INGEST_GRPC_PORT']}"
    inventory_addr = f"127.0.0.1:{env['INVENTORY_SYNC_GRPC_PORT']}"
    webhook_url = f"http://127.0.0.1:{env['INGEST_HTTP_PORT']}/webhooks/shopify"
    run = uuid.uuid4().hex[:8]
    async with (
        grpc.aio.insecure_channel(ingest_addr) as ingest_channel,
        grpc.aio.insecure_channel(inventory_addr) as inventory_channel,
        aiohttp.ClientSession() as http,
    ):
        ingest = IngestServiceStub(ingest_channel)
        inventory = InventorySyncServiceStub(inventory_channel)
        published = datetime.now(UTC) - timedelta(hours=1)
        for sku in SKUS:
            await inventory.Receive(
                inventory_sync_pb2.ReceiveRequest(
                    sku=sku,
                    warehouse_id="WH-SOAK",
                    quantity=5_000,
                    source="soak",
                    command_id=f"soak-{run}-{sku}",
                ),
                timeout=10,
            )
        for video, sku in zip(VIDEOS, SKUS, strict=True):
            await ingest.RegisterVideo(
                ingest_pb2.RegisterVideoRequest(
                    video_id=f"{video}-{run}",
                    skus=[sku],
                    creator_id="soak-creator",
                    creator_followers=10_000,
                    published_at=stamp(published),
                    channel=common_pb2.CHANNEL_TIKTOK_SHOP,
                ),
                timeout=10,
            )
        tally = Tally(started=time.monotonic())
        until = tally.started + seconds
        views = [1000] * len(VIDEOS)

        async def sample_batches(index: int) -> None:
            now = stamp(datetime.now(UTC))
            batch = []
            for video in range(len(VIDEOS)):
                views[video] += 50 + (index + video) % 7
                batch.append(
                    ingest_events_pb2.VideoSampled(
                        video_id=f"{VIDEOS[video]}-{run}",
                        observed_at=now,
                        views=views[video],
                        likes=views[video] // 12,
                        shares=views[video] // 60,
                        comments=views[video] // 90,
                    )
                )

            async def stream() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
                yield ingest_pb2.PushVideoSamplesRequest(samples=batch)

            reply = await ingest.PushVideoSamples(stream(), timeout=10)
            if reply.rejected:
                raise RuntimeError(f"rejected: {list(reply.rejections)[:1]}")

        async def orders(index: int) -> None:
            await ingest.RecordOrder(
                ingest_pb2.RecordOrderRequest(
                    order=ingest_events_pb2.OrderPlaced(
                        channel=common_pb2.CHANNEL_TIKTOK_SHOP,
                        channel_order_id=f"soak-{run}-{index}",
                        lines=[common_pb2.OrderLine(sku=SKUS[index % len(SKUS)], quantity=1)],
                        placed_at=stamp(datetime.now(UTC)),
                    )
                ),
                timeout=10,
            )

        async def webhooks(index: int) -> None:
            body, headers = shopify_webhook(index + int(time.time()) * 1000)
            async with http.post(webhook_url, data=body, headers=headers) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"webhook {answer.status}: {(await answer.text())[:200]}")

        async def reads(index: int) -> None:
            await inventory.GetStock(
                inventory_sync_pb2.GetStockRequest(sku=SKUS[index % len(SKUS)]), timeout=10
            )

        calls = {
            "sample_batches": sample_batches,
            "orders": orders,
            "webhooks": webhooks,
            "reads": reads,
        }
        await asyncio.gather(
            watch_memory(supervisor, until, tally),
            *(paced(RATES[k], until, tally, k, call, IN_FLIGHT[k]) for k, call in calls.items()),
        )
        return tally


def verdict(tally: Tally, seconds: float, warmup: float) -> dict[str, Any]:
    minutes = range(int(warmup // 60), int(seconds // 60))
    per_minute = {
        kind: [tally.done[(kind, m)] for m in range(int(seconds // 60))] for kind in RATES
    }
    short = {
        kind: [m for m in minutes if per_minute[kind][m] < 0.95 * RATES[kind] * 60]
        for kind in RATES
    }
    memory = {}
    for name, readings in sorted(tally.memory.items()):
        after_warmup = [kib for at, kib in readings if at >= warmup]
        if not after_warmup:
            continue
        level, end = after_warmup[0], after_warmup[-1]
        memory[name] = {
            "after_warmup_mib": round(level / 1024, 1),
            "end_mib": round(end / 1024, 1),
            "max_mib": round(max(after_warmup) / 1024, 1),
            "change": round(end / level - 1, 3),
        }
    errors = {kind: len(found) for kind, found in tally.errors.items() if found}
    return {
        "benchmark": "soak",
        "seconds": seconds,
        "warmup_seconds": warmup,
        "target_per_second": RATES,
        "completed_per_minute": per_minute,
        "minutes_below_95_percent": {k: v for k, v in short.items() if v},
        "errors": errors,
        "error_samples": {k: v[:3] for k, v in tally.errors.items() if v},
        "resident_memory": memory,
        "passed": not errors
        and not any(short.values())
        and all(abs(m["change"]) <= 0.20 for m in memory.values()),
    }


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    warmup = float(os.environ.get("SOAK_WARMUP_SECONDS", "60"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    ports = {name: free_port() for name in service_names()}
    env.update({f"{env_prefix(name)}_GRPC_PORT": str(port) for name, port in ports.items()})
    env.update({"INGEST_HTTP_PORT": str(free_port()), "COLLECT_HTTP_PORT": str(free_port())})
    env["LOG_LEVEL"] = "warning"
    with (
        TemporaryDirectory(prefix="pulsestock-soak-") as data_dir,
        open(Path(data_dir).with_suffix(".log"), "w+b") as log_file,
    ):
        supervisor = subprocess.Popen(
            [PULSESTOCK, "dev", "up", "--data-dir", data_dir],
            env=env,
            start_new_session=True,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:

            async def up() -> None:
                deadline = time.monotonic() + 120
                while not all([await serving(port) for port in ports.values()]):
                    if time.monotonic() > deadline or supervisor.poll() is not None:
                        raise SystemExit("the stack did not come up")
                    await asyncio.sleep(0.5)

            asyncio.run(up())
            tally = asyncio.run(drive(env, supervisor.pid, seconds, warmup))
            log_file.flush()
            log_file.seek(0)
            # Errors the services logged while under load (not while stopping).
            logged = [
                line for line in log_file.read().decode().splitlines() if '"level": "error"' in line
            ]
            tally.errors["service_logs"].extend(line[:300] for line in logged)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(supervisor.pid, signal.SIGINT)
            supervisor.wait(60)
    report = verdict(tally, seconds, warmup)
    print(json.dumps(report), flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
