"""The gRPC edge of inventory-sync against a bare grpc.aio server on the same machine.

- grpc_edge.reserve_c100_vs_bare_grpc: Reserve calls per second at 100 concurrent callers
  against inventory-sync running as its own process (real PostgreSQL, group commit, fsync
  on), and against a bare grpc.aio unary server in its own process that parses the same
  ReserveRequest and answers a ReserveResponse of the same bytes (no interceptor, no I/O).
  Rounds alternate ours and the baseline; the ratio is the median per-round ratio with its
  min and max.
- grpc_edge.reserve_p99_ms_c1 / _c100: Reserve latency of ours (p50 and p99) at 1 and 100
  callers, with the baseline's beside it.

The load comes from a separate client process (not the servers' event loops), over several
HTTP/2 connections, with every request serialised before the clock starts, so the client
does as little per call as gRPC lets it. The machine has two cores shared by PostgreSQL,
the server, and the client: compare the ratio, not absolute figures.

Run alone: `python -m tests.bench.bench_grpc_edge run` (embedded servers, fsync on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pulsestock.devstack.servers import EmbeddedNats, free_port
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.bench.report import alternating_rounds, emit
from tests.helpers.infra import Infra, drop_schema, running_infra, unique_name
from tests.helpers.service import migrate, serving, start_service_process

ROUNDS = 3
CONCURRENCY = 100
CALLS_C100 = 6_000  # per round and side
CALLS_C1 = 400
WARMUP_CALLS = 300
CLIENT_CHANNELS = 4
SKU = "EDGE-1"
RESERVE = "/pulsestock.v1.InventorySyncService/Reserve"
REPO_ROOT = Path(__file__).resolve().parents[2]
GOAL_RATIO = 0.5
GOAL_P99_MS = 50.0


def reserve_request(order_id: str) -> bytes:
    return pb.ReserveRequest(
        channel=Channel.CHANNEL_SHOPIFY,
        channel_order_id=order_id,
        lines=[OrderLine(sku=SKU, quantity=1)],
        paid=True,
    ).SerializeToString()


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the load generator (its own process) ------------------------------------------------


def _identity(payload: bytes) -> bytes:
    return payload


async def drive(
    target: str, order_prefix: str, concurrency: int, calls: int, channels: int
) -> dict[str, Any]:
    """`calls` Reserve calls from `concurrency` callers over `channels` connections; returns
    the calls per second and every call's latency in ms."""
    # A local subchannel pool per channel: one TCP connection each, not one shared.
    options = [("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    reserve = [
        channel.unary_unary(
            RESERVE,
            request_serializer=_identity,
            response_deserializer=pb.ReserveResponse.FromString,
        )
        for channel in opened
    ]
    try:
        for channel in opened:
            await channel.channel_ready()
        warmup = [reserve_request(f"{order_prefix}-warm-{i}") for i in range(WARMUP_CALLS)]
        await asyncio.gather(*(reserve[i % channels](r, timeout=30) for i, r in enumerate(warmup)))
        requests = [reserve_request(f"{order_prefix}-{i}") for i in range(calls)]
        latencies: list[float] = []
        next_call = iter(range(calls))

        async def caller(index: int) -> None:
            call = reserve[index % channels]
            for i in next_call:
                started = time.perf_counter()
                reply = await call(requests[i], timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
                if not reply.reserved:
                    raise AssertionError(f"order {i} was not reserved: {reply}")

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in opened:
            await channel.close()
    return {"per_second": calls / elapsed, "latencies_ms": latencies}


@dataclass(frozen=True)
class Load:
    per_second: float
    latencies_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99)


async def run_client(port: int, order_prefix: str, concurrency: int, calls: int) -> Load:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.bench_grpc_edge",
        "client",
        f"127.0.0.1:{port}",
        order_prefix,
        str(concurrency),
        str(calls),
        str(CLIENT_CHANNELS),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed (exit {process.returncode})")
    result = json.loads(out)
    return Load(result["per_second"], result["latencies_ms"])


# --- the baseline: a bare grpc.aio unary server (its own process) -------------------------


async def serve_bare(port: int, response: bytes) -> None:
    """Parses each ReserveRequest (as ours must) and answers the same response bytes."""

    async def reserve(request: pb.ReserveRequest, context: grpc.aio.ServicerContext) -> bytes:
        return response

    handler = grpc.method_handlers_generic_handler(
        "pulsestock.v1.InventorySyncService",
        {
            "Reserve": grpc.unary_unary_rpc_method_handler(
                reserve,
                request_deserializer=pb.ReserveRequest.FromString,
                response_serializer=_identity,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@asynccontextmanager
async def bare_server(response: bytes) -> AsyncIterator[int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.bench.bench_grpc_edge", "bare", str(port), response.hex()),
        cwd=REPO_ROOT,
    )
    try:
        await until_reachable(port, process)
        yield port
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def until_reachable(
    port: int, process: asyncio.subprocess.Process, within: float = 30
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), within)
        except TimeoutError:
            raise RuntimeError(f"nothing listens on {port} (exit {process.returncode})") from None


# --- ours ------------------------------------------------------------------------------


@asynccontextmanager
async def inventory_sync(infra: Infra, extra_env: dict[str, str]) -> AsyncIterator[int]:
    nats = EmbeddedNats(Path(tempfile.mkdtemp(prefix="bench-edge-nats-")))
    nats.start()
    schema = unique_name("bench_edge")
    port = free_port()
    await migrate(infra.database_url, "inventory-sync", schema)
    process = start_service_process(
        "inventory-sync",
        infra.database_url,
        nats.url,
        schema,
        port,
        {"LOG_LEVEL": "error", **extra_env},
    )
    try:
        deadline = time.monotonic() + 30
        while not await serving(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("inventory-sync did not start")
            await asyncio.sleep(0.05)  # polling a process's start-up, not synchronising a test
        yield port
    finally:
        process.terminate()
        process.wait(30)
        nats.stop()
        await drop_schema(infra.database_url, schema)


async def stock_and_sample_response(port: int) -> bytes:
    """Stock for every round; one real Reserve answer, whose bytes the baseline sends."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = InventorySyncServiceStub(channel)
        await stub.Receive(
            pb.ReceiveRequest(sku=SKU, warehouse_id="W1", quantity=10_000_000), timeout=30
        )
        reply = await stub.Reserve(
            pb.ReserveRequest.FromString(reserve_request("sample-order")), timeout=30
        )
    return bytes(reply.SerializeToString())


async def bench_edge(infra: Infra, extra_env: dict[str, str] | None = None) -> None:
    rate_ours: list[float] = []
    rate_bare: list[float] = []
    c1: dict[str, list[float]] = {"ours": [], "bare": []}
    c100: dict[str, list[float]] = {"ours": [], "bare": []}
    async with inventory_sync(infra, extra_env or {}) as ours_port:
        response = await stock_and_sample_response(ours_port)
        async with bare_server(response) as bare_port:
            for round_ in range(ROUNDS):
                for side, port, rates in (
                    ("ours", ours_port, rate_ours),
                    ("bare", bare_port, rate_bare),
                ):
                    prefix = f"{side}-r{round_}"
                    single = await run_client(port, f"{prefix}-c1", 1, CALLS_C1)
                    crowd = await run_client(port, f"{prefix}-c100", CONCURRENCY, CALLS_C100)
                    c1[side].extend(single.latencies_ms)
                    c100[side].extend(crowd.latencies_ms)
                    rates.append(crowd.per_second)
    ratio = alternating_rounds(rate_ours, rate_bare)
    setup = (
        f"client: its own process, {CLIENT_CHANNELS} HTTP/2 connections, requests serialised"
        " before timing; ours: inventory-sync as its own process with all roles, one SKU,"
        " PostgreSQL fsync on; baseline: bare grpc.aio server process parsing the same"
        f" ReserveRequest and answering the same {len(response)}-byte ReserveResponse"
    )
    emit(
        "grpc_edge.reserve_c100_vs_bare_grpc",
        statistics.median(rate_ours),
        "calls/s",
        baseline=statistics.median(rate_bare),
        **ratio,
        goal=f">= {GOAL_RATIO} with p99 < {GOAL_P99_MS:g} ms",
        p99_ms=round(percentile(c100["ours"], 0.99), 2),
        baseline_p99_ms=round(percentile(c100["bare"], 0.99), 2),
        setup=setup,
        **({"env": extra_env} if extra_env else {}),
    )
    for name, samples in (("reserve_p99_ms_c1", c1), ("reserve_p99_ms_c100", c100)):
        emit(
            f"grpc_edge.{name}",
            percentile(samples["ours"], 0.99),
            "ms",
            baseline=percentile(samples["bare"], 0.99),
            lower_is_better=True,
            p50_ms=round(statistics.median(samples["ours"]), 3),
            baseline_p50_ms=round(statistics.median(samples["bare"]), 3),
            calls=len(samples["ours"]),
        )


async def run(infra: Infra) -> None:
    os.environ.setdefault("LOG_LEVEL", "error")
    await bench_edge(infra)


def main(argv: Sequence[str]) -> None:
    """`run` the benchmark; `client` (the load) and `bare` (the baseline server) are the
    processes it starts."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_grpc_edge")
    commands = parser.add_subparsers(dest="command", required=True)
    client = commands.add_parser("client")
    client.add_argument("target")
    client.add_argument("order_prefix")
    client.add_argument("concurrency", type=int)
    client.add_argument("calls", type=int)
    client.add_argument("channels", type=int)
    bare = commands.add_parser("bare")
    bare.add_argument("port", type=int)
    bare.add_argument("response_hex")
    commands.add_parser("run")
    args = parser.parse_args(argv)
    if args.command == "run":
        with running_infra(durable=True) as infra:
            asyncio.run(run(infra))
    elif args.command == "client":
        result = asyncio.run(
            drive(args.target, args.order_prefix, args.concurrency, args.calls, args.channels)
        )
        print(json.dumps(result))
    else:
        asyncio.run(serve_bare(args.port, bytes.fromhex(args.response_hex)))


if __name__ == "__main__":
    main(sys.argv[1:])
