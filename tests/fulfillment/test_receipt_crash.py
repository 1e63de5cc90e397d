"""A receipt reaches stock exactly once although fulfillment is SIGKILLed between recording it
and inventory-sync applying it, and again after a crash that left the call made but the
checkpoint unmoved (the process manager replays its calls with the same command ids)."""

from __future__ import annotations

import signal
import subprocess

import asyncpg
import grpc
import pytest
from pulsestock.devstack.servers import free_port
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1.common_pb2 import OrderLine
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

pytestmark = pytest.mark.slow


async def test_sigkill_between_receipt_and_receive_stocks_once(infra: Infra, nats_url: str) -> None:
    ful_schema, inv_schema = unique_name("ful"), unique_name("inv")
    for service, schema in (("fulfillment", ful_schema), ("inventory-sync", inv_schema)):
        await migrate(infra.database_url, service, schema)
    ful_port, inv_port = free_port(), free_port()
    ful_env = {"INVENTORY_SYNC_ADDR": f"127.0.0.1:{inv_port}"}
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(service: str) -> None:
        schema, port, env = (
            (ful_schema, ful_port, ful_env)
            if service == "fulfillment"
            else (inv_schema, inv_port, {})
        )
        processes[service] = start_service_process(
            service, infra.database_url, nats_url, schema, port, env
        )

    def kill_fulfillment() -> None:
        processes["fulfillment"].send_signal(signal.SIGKILL)
        processes["fulfillment"].wait(10)

    db = await asyncpg.connect(infra.database_url)
    try:
        # inventory-sync is not running yet: the receipt is recorded, its Receive cannot
        # succeed, and fulfillment is killed while its process manager keeps retrying.
        start("fulfillment")
        await eventually(lambda: serving(ful_port), within=30, what="fulfillment up")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ful_port}") as channel:
            api = FulfillmentServiceStub(channel)
            created = await api.CreatePurchaseOrder(
                pb.CreatePurchaseOrderRequest(
                    supplier_id="acme",
                    warehouse_id="wh-1",
                    lines=[OrderLine(sku="LAMP-9", quantity=40)],
                )
            )
            po_id = created.purchase_order_id
            await api.SubmitPurchaseOrder(pb.PurchaseOrderCommand(purchase_order_id=po_id))
            await api.ReceivePurchaseOrder(
                pb.ReceivePurchaseOrderRequest(
                    purchase_order_id=po_id,
                    receipt_id="grn-77",
                    lines=[OrderLine(sku="LAMP-9", quantity=25)],
                )
            )
        checkpoint = (
            f"SELECT coalesce((SELECT position FROM {ful_schema}.projection_checkpoints"
            " WHERE name = 'receipts_to_stock'), 0)"
        )
        head = await db.fetchval(f"SELECT max(global_position) FROM {ful_schema}.events")
        assert await db.fetchval(checkpoint) < head  # the receipt is not applied
        kill_fulfillment()

        start("inventory-sync")
        await eventually(lambda: serving(inv_port), within=30, what="inventory-sync up")
        start("fulfillment")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{inv_port}") as channel:
            stock = InventorySyncServiceStub(channel)

            async def on_hand() -> int:
                reply = await stock.GetStock(inv.GetStockRequest(sku="LAMP-9"))
                return sum(w.on_hand for w in reply.warehouses if w.warehouse_id == "wh-1")

            async def received_once() -> bool:
                return await on_hand() == 25

            await eventually(received_once, within=30, what="the receipt in stock")

            async def checkpoint_at_head() -> bool:
                return bool(await db.fetchval(checkpoint) >= head)

            await eventually(checkpoint_at_head, within=30, what="receipts checkpoint moved")

            # A crash after the call and before the commit leaves the call made and the
            # checkpoint where it was: replaying it must not stock the goods twice.
            kill_fulfillment()
            await db.execute(
                f"UPDATE {ful_schema}.projection_checkpoints SET position = 0"
                " WHERE name = 'receipts_to_stock'"
            )
            start("fulfillment")
            await eventually(checkpoint_at_head, within=30, what="receipts replayed")
            assert await on_hand() == 25
            history = await stock.GetHistory(inv.GetHistoryRequest(sku="LAMP-9", limit=1000))
            received = [e for e in history.entries if e.type.endswith("StockReceived")]
            assert len(received) == 1
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)
        await db.close()
        for schema in (ful_schema, inv_schema):
            await drop_schema(infra.database_url, schema)
