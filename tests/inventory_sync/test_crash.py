"""inventory-sync killed with SIGKILL at random moments under load, and restarted: no
acknowledged reservation is lost, none is applied twice, every published event is on
JetStream once, and a rebuilt read model equals the live one."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
from collections import Counter

import asyncpg
import grpc
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pulsestock.bus import service_stream
from pulsestock.devstack.servers import free_port
from pulsestock.eventstore import NewEvent
from pulsestock.inventory_sync.adapters.ledger_repository import outbox_route
from pulsestock.inventory_sync.domain.sku import ledger_stream
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

pytestmark = pytest.mark.slow
STOCK = 1200
ORDERS = 2000
KILLS = 3
SKU = "HOT"
# What a call cut off by a kill (or made while the service restarts) ends with. CANCELLED
# too: with 2,000 calls in flight on one channel, grpc-core answers some it never handed to
# the servicer with CANCELLED, with or without a kill (reported; the calls are idempotent).
RETRY_THROUGH_A_CRASH = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)
STREAM = service_stream("inventory-sync").name


async def everything_on_the_stream(bus: NATS) -> list[Msg]:
    """Every message of the service's stream, in stream order (this test's NATS is its own)."""
    js = bus.jetstream()
    total = (await js.stream_info(STREAM)).state.messages
    subscription = await js.subscribe(f"{STREAM.lower()}.>", ordered_consumer=True)
    try:
        return [await subscription.next_msg(timeout=10) for _ in range(total)]
    finally:
        await subscription.unsubscribe()


def is_published(event_type: str) -> bool:
    """Whether the service's outbox route sends a logged event of this type to JetStream."""
    return outbox_route(1)(ledger_stream(SKU), NewEvent(type=event_type, data=b"")) is not None


async def check_published_once(bus: NATS, pool: asyncpg.Pool, schema: str) -> None:
    """Each logged event the service publishes is on JetStream exactly once, and so is each
    read-model StockChanged (they are not logged): reserved only grows in this test, so a
    batch published twice would repeat a level."""
    rows = await pool.fetch(f"SELECT event_id, type FROM {schema}.events")
    logged = {str(row["event_id"]) for row in rows if is_published(row["type"])}
    assert logged  # the channel quantities, at least
    copies: Counter[str] = Counter()
    levels: list[int] = []
    stock_changes: set[str] = set()
    for message in await everything_on_the_stream(bus):
        assert message.headers is not None
        event_type, event_id = message.headers["ce-type"], message.headers["ce-id"]
        if is_published(event_type):
            copies[event_id] += 1
        else:
            assert event_type == "pulsestock.v1.StockChanged", event_type
            stock_changes.add(event_id)
            levels.append(ev.StockChanged.FromString(message.data).reserved)
    assert set(copies) == logged, "logged events missing from JetStream, or unknown ones there"
    assert set(copies.values()) == {1}, "an event on JetStream more than once"
    assert len(stock_changes) == len(levels), "a StockChanged on JetStream more than once"
    assert levels == sorted(set(levels)), "a stock level published twice, or out of order"
    assert levels[-1] == STOCK


async def test_sigkill_under_load_loses_and_duplicates_nothing(
    infra: Infra, nats_url: str, bus: NATS
) -> None:
    schema = unique_name("crash")
    port = free_port()
    await migrate(infra.database_url, "inventory-sync", schema)
    rng = random.Random(1234)

    def start() -> subprocess.Popen[bytes]:
        return start_service_process(
            "inventory-sync", infra.database_url, nats_url, schema, port, {}
        )

    process = start()
    try:
        await eventually(lambda: serving(port), within=30, what="inventory-sync up")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = InventorySyncServiceStub(channel)
            await stub.Receive(
                pb.ReceiveRequest(sku=SKU, warehouse_id="W1", quantity=STOCK, command_id="stock-1"),
                timeout=10,
            )
            answers: dict[str, bool] = {}
            interrupted: set[str] = set()  # orders a kill cut off, or held up

            async def place(index: int) -> None:
                order_id = f"o{index}"
                request = pb.ReserveRequest(
                    channel=Channel.CHANNEL_TIKTOK_SHOP,
                    channel_order_id=order_id,
                    lines=[OrderLine(sku=SKU, quantity=1)],
                    paid=True,
                )
                while True:  # retry through crashes with the same order id (idempotent)
                    try:
                        reply = await stub.Reserve(request, timeout=5)
                        answers[order_id] = reply.reserved
                        return
                    except grpc.aio.AioRpcError as error:
                        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                            answers[order_id] = False  # sold out: the documented refusal
                            return
                        if error.code() not in RETRY_THROUGH_A_CRASH:
                            raise
                        if error.code() != grpc.StatusCode.CANCELLED:
                            interrupted.add(order_id)
                        await asyncio.sleep(0.05)  # back off while the service restarts

            load = asyncio.gather(*(place(i) for i in range(ORDERS)))
            for kill in range(KILLS):
                # A random moment while orders are still arriving.
                share = ORDERS // (KILLS + 1)
                target = rng.randint(kill * share + 1, (kill + 1) * share)

                async def reached(target: int = target) -> bool:
                    return len(answers) >= target

                await eventually(reached, within=60, what=f"{target} orders answered")
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                process = start()
                await eventually(lambda: serving(port), within=30, what="inventory-sync restarted")
            await asyncio.wait_for(load, 120)
            assert interrupted, "no kill cut off an order in flight"

            acknowledged = {f"tiktok_shop:{o}:{SKU}" for o, ok in answers.items() if ok}
            assert len(answers) == ORDERS
            assert len(acknowledged) == STOCK  # more orders than units: every unit sold once
            reservations = []
            for from_version in range(1, 100_000, 1000):  # the audit trail, page by page
                page = await stub.GetHistory(
                    pb.GetHistoryRequest(sku=SKU, from_version=from_version, limit=1000),
                    timeout=10,
                )
                reservations += [e for e in page.entries if e.type == "pulsestock.v1.StockReserved"]
                if len(page.entries) < 1000:
                    break
            in_the_log = Counter(json.loads(e.data_json)["reservationId"] for e in reservations)
            assert set(in_the_log) == acknowledged  # none lost, none made without an answer
            assert set(in_the_log.values()) == {1}  # none applied twice

            async def read_model_caught_up() -> bool:
                stock = await stub.GetStock(pb.GetStockRequest(sku=SKU), timeout=10)
                return sum(w.reserved for w in stock.warehouses) == STOCK

            await eventually(read_model_caught_up, within=30, what="read model to catch up")
            pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
            try:

                async def outbox_drained() -> bool:
                    return await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox") == 0

                await eventually(outbox_drained, within=30, what="the outbox relay to finish")
                await check_published_once(bus, pool, schema)
                tables = ("stock_levels", "active_reservations", "channel_quantities")
                live = {
                    t: sorted(map(tuple, await pool.fetch(f"SELECT * FROM {schema}.{t}")))
                    for t in tables
                }
                await stub.Rebuild(pb.RebuildRequest(), timeout=60)
                rebuilt = {
                    t: sorted(map(tuple, await pool.fetch(f"SELECT * FROM {schema}.{t}")))
                    for t in tables
                }
                assert rebuilt == live
            finally:
                await pool.close()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        await drop_schema(infra.database_url, schema)
