"""Channel sync end to end: the ledger's channel quantities reach the fake channels, through
faults, throttling, stalls, outside edits and dead letters."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from nats.aio.client import Client as NATS
from pulsestock.fakes import fake_channel_env
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import eventually
from tests.inventory_sync.conftest import Fakes
from tests.inventory_sync.test_service import channel_quantities, receive, reserve

CHANNEL_OF = {
    "tiktok_shop": Channel.CHANNEL_TIKTOK_SHOP,
    "shopify": Channel.CHANNEL_SHOPIFY,
    "amazon": Channel.CHANNEL_AMAZON,
}


@pytest.fixture
def service_env(fakes: Fakes) -> dict[str, str]:
    return {
        **fake_channel_env(*(fake.url for fake in fakes)),
        "CHANNEL_SYNC_RECONCILE_SECONDS": "0.2",
        "CHANNEL_SYNC_TIMEOUT_SECONDS": "0.5",
        "CHANNEL_SYNC_BASE_BACKOFF_SECONDS": "0.05",
        "CHANNEL_SYNC_MAX_BACKOFF_SECONDS": "0.5",
        "CHANNEL_SYNC_MAX_FAILURES": "30",
    }


async def channels_show(
    stub: Stub, fakes: Fakes, sku: str, quantity: int, within: float = 20
) -> None:
    """Wait until the ledger projects `quantity` to every channel and every channel shows it."""

    async def agree() -> bool:
        projected = await channel_quantities(stub, sku)
        if projected != dict.fromkeys(CHANNEL_OF.values(), quantity):
            return False
        return all(fake.quantity_of(sku) == projected[CHANNEL_OF[fake.name]] for fake in fakes)

    await eventually(agree, within=within, what=f"every channel to show {quantity} of {sku}")


async def test_quantities_reach_every_channel(stub: Stub, fakes: Fakes) -> None:
    await receive(stub, "MUG", 40)
    await reserve(stub, "MUG", 5, "o1", paid=True)
    await channels_show(stub, fakes, "MUG", 35)


async def test_after_errors_throttling_and_stalls_every_channel_shows_the_projection(
    stub: Stub, fakes: Fakes
) -> None:
    tiktok, shopify, amazon = fakes
    tiktok.faults.fail_next, tiktok.faults.fail_status = 6, 503
    shopify.faults.throttle_until = time.monotonic() + 1.5
    amazon.faults.stall_next, amazon.faults.stall_s = 3, 1.5  # past the client's 0.5 s timeout
    await receive(stub, "LAMP", 50)
    for index in range(10):
        await reserve(
            stub, "LAMP", 1 + index % 3, f"o{index}", channel=Channel.CHANNEL_SHOPIFY, paid=True
        )
    await channels_show(stub, fakes, "LAMP", 50 - sum(1 + i % 3 for i in range(10)), within=30)
    assert 503 in [r.status for r in tiktok.writes()]
    assert any(b"THROTTLED" not in r.body and r.status == 200 for r in shopify.writes())
    abandoned = [r for r in amazon.requests if r.status == 0]  # the client gave up waiting
    assert abandoned


async def test_a_burst_of_changes_is_coalesced_while_the_channel_is_throttled(
    stub: Stub, fakes: Fakes
) -> None:
    tiktok = fakes[0]
    await receive(stub, "SOCK", 100)
    await channels_show(stub, fakes, "SOCK", 100)
    before = len(tiktok.writes())
    tiktok.faults.throttle_until = time.monotonic() + 1.0
    await asyncio.gather(*(reserve(stub, "SOCK", 1, f"b{i}", paid=True) for i in range(30)))
    await channels_show(stub, fakes, "SOCK", 70)
    successful = [r for r in tiktok.writes()[before:] if r.status == 200]
    assert len(successful) < 30  # the latest quantity, not every step


async def test_drift_made_on_the_channel_is_corrected(stub: Stub, fakes: Fakes) -> None:
    await receive(stub, "CAP", 12)
    await channels_show(stub, fakes, "CAP", 12)
    fakes[2].set_quantity_outside("CAP", 999)  # someone edits the Amazon listing by hand

    async def corrected() -> bool:
        return fakes[2].quantity_of("CAP") == 12

    await eventually(corrected, within=10, what="the reconciler to correct Amazon")


async def test_a_refused_update_is_dead_lettered_and_revived_by_the_next_change(
    stub: Stub, fakes: Fakes, bus: NATS
) -> None:
    dead = await bus.jetstream().subscribe("dead_letters.>")
    amazon = fakes[2]
    amazon.faults.fail_next, amazon.faults.fail_status = 1, 400  # a request Amazon rejects
    await receive(stub, "JAR", 9)
    letter = await dead.next_msg(timeout=15)
    assert letter.headers is not None
    assert "HTTP 400" in letter.headers["dead-letter-reason"]
    state = await stub.GetSyncState(
        pb.GetSyncStateRequest(channel=Channel.CHANNEL_AMAZON, sku="JAR"), timeout=10
    )
    assert state.states[0].dead_lettered
    assert state.states[0].desired_quantity == 9
    await reserve(stub, "JAR", 2, "after", paid=True)  # a new quantity revives the SKU
    await channels_show(stub, fakes, "JAR", 7)
    state = await stub.GetSyncState(
        pb.GetSyncStateRequest(channel=Channel.CHANNEL_AMAZON, sku="JAR"), timeout=10
    )
    assert not state.states[0].dead_lettered
    assert state.states[0].last_confirmed_quantity == 7


async def test_six_hundred_orders_leave_ledger_read_model_and_channels_agreeing(
    stub: Stub, fakes: Fakes
) -> None:
    await receive(stub, "VIRAL", 100)
    channels = [Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON]

    async def order(index: int) -> bool:
        try:
            reply = await reserve(
                stub,
                "VIRAL",
                1,
                f"o{index}",
                channel=channels[index % 3],
                paid=True,
                already_sold=True,
            )
        except grpc.aio.AioRpcError:
            return False
        return reply.reserved

    outcomes = await asyncio.gather(*(order(i) for i in range(600)))
    assert sum(outcomes) == 100
    await channels_show(stub, fakes, "VIRAL", 0)
