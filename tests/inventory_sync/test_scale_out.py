"""Replicas share the SKU partitions: each writes only its own, and a survivor takes over the
partitions of a replica that stops."""

from __future__ import annotations

import grpc
import pytest
from pulsestock.bus import partition_for
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service

FAST_LEASES = {"INVENTORY_SYNC_LEASE_REBALANCE_SECONDS": "0.1", "PULSESTOCK_PARTITIONS": "8"}


def sku_in(partition: int) -> str:
    return next(f"S{i}" for i in range(10_000) if partition_for(f"S{i}", 8) == partition)


async def owner_of(stubs: list[Stub], sku: str) -> list[int]:
    """Which replicas accept a write for the SKU (the others must answer UNAVAILABLE)."""
    accepted, refusals = [], []
    for index, stub in enumerate(stubs):
        try:
            await stub.Receive(pb.ReceiveRequest(sku=sku, warehouse_id="W1", quantity=1), timeout=5)
            accepted.append(index)
        except grpc.aio.AioRpcError as error:
            refusals.append((error.code(), error.details() or ""))
    for code, details in refusals:
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "another replica" in details
    return accepted


@pytest.mark.slow
async def test_two_replicas_split_the_partitions_and_one_takes_over(
    infra: Infra, nats_url: str
) -> None:
    schema = unique_name("scale")
    try:
        async with running_service(
            "inventory-sync", infra.database_url, nats_url, schema, FAST_LEASES
        ) as first:
            async with running_service(
                "inventory-sync", infra.database_url, nats_url, schema, FAST_LEASES
            ) as second:
                stubs = [Stub(first.channel), Stub(second.channel)]
                skus = [sku_in(p) for p in range(8)]

                async def split_evenly() -> bool:
                    owners = [await owner_of(stubs, sku) for sku in skus]
                    return (
                        all(len(o) == 1 for o in owners)
                        and sorted(o[0] for o in owners) == [0] * 4 + [1] * 4
                    )

                await eventually(split_evenly, within=20, what="an even split of partitions")
            # The second replica has stopped: the first owns every partition again.
            only_first = [Stub(first.channel)]

            async def first_owns_all() -> bool:
                return all([await owner_of(only_first, sku) == [0] for sku in skus])

            await eventually(first_owns_all, within=20, what="the survivor to take over")
    finally:
        await drop_schema(infra.database_url, schema)
