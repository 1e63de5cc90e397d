"""inventory-sync killed with SIGKILL at random moments under load, and restarted: no
acknowledged reservation is lost, none is applied twice, and a rebuilt read model equals the
live one."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess

import asyncpg
import grpc
import pytest
from pulsestock.devstack.servers import free_port
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

pytestmark = pytest.mark.slow
STOCK = 1200
ORDERS = 2000
KILLS = 3


async def test_sigkill_under_load_loses_and_duplicates_nothing(infra: Infra, nats_url: str) -> None:
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
                pb.ReceiveRequest(
                    sku="HOT", warehouse_id="W1", quantity=STOCK, command_id="stock-1"
                ),
                timeout=10,
            )
            answers: dict[str, bool] = {}

            async def place(index: int) -> None:
                order_id = f"o{index}"
                request = pb.ReserveRequest(
                    channel=Channel.CHANNEL_TIKTOK_SHOP,
                    channel_order_id=order_id,
                    lines=[OrderLine(sku="HOT", quantity=1)],
                    paid=True,
                )
                while True:  # retry through crashes with the same order id (idempotent)
                    try:
                        reply = await stub.Reserve(request, timeout=5)
                        answers[order_id] = reply.reserved
                        return
                    except grpc.aio.AioRpcError as error:
                        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                            answers[order_id] = False
                            return
                        await asyncio.sleep(0.05)  # back off while the service restarts

            load = asyncio.gather(*(place(i) for i in range(ORDERS)))
            unanswered_at_kill = []
            for kill in range(KILLS):
                # A random moment while orders are still arriving.
                share = ORDERS // (KILLS + 1)
                target = rng.randint(kill * share + 1, (kill + 1) * share)

                async def reached(target: int = target) -> bool:
                    return len(answers) >= target

                await eventually(reached, within=60, what=f"{target} orders answered")
                unanswered_at_kill.append(ORDERS - len(answers))
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                process = start()
                await eventually(lambda: serving(port), within=30, what="inventory-sync restarted")
            await asyncio.wait_for(load, 120)
            assert max(unanswered_at_kill) > 0, "no kill landed while orders were in flight"

            reserved_orders = {order for order, ok in answers.items() if ok}
            assert len(answers) == ORDERS
            assert len(reserved_orders) == STOCK  # more orders than units
            reservations = []
            for from_version in range(1, 100_000, 1000):  # the audit trail, page by page
                page = await stub.GetHistory(
                    pb.GetHistoryRequest(sku="HOT", from_version=from_version, limit=1000),
                    timeout=10,
                )
                reservations += [e for e in page.entries if e.type == "pulsestock.v1.StockReserved"]
                if len(page.entries) < 1000:
                    break
            assert len(reservations) == STOCK  # none lost, none applied twice
            assert {f"tiktok_shop:{o}:HOT" for o in reserved_orders} == {
                __import__("json").loads(e.data_json)["reservationId"] for e in reservations
            }

            async def read_model_caught_up() -> bool:
                stock = await stub.GetStock(pb.GetStockRequest(sku="HOT"), timeout=10)
                return sum(w.reserved for w in stock.warehouses) == STOCK

            await eventually(read_model_caught_up, within=30, what="read model to catch up")
            pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
            try:
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
