"""Channel sync end to end: the ledger's channel quantities reach the fake channels, through
faults, throttling, stalls, outside edits and dead letters."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
from nats.aio.client import Client as NATS
from pulsestock.fakes import FakeShopify, fake_channel_env
from pulsestock.fakes.base import RecordedRequest
from pulsestock.fakes.shopify import MUTATION_COST as SHOPIFY_MUTATION_COST
from pulsestock.fakes.shopify import QUERY_COST as SHOPIFY_QUERY_COST
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import eventually
from tests.inventory_sync.conftest import Fakes
from tests.inventory_sync.test_service import (
    channel_quantities,
    receive,
    reserve,
    wait_for_stock,
)

CHANNEL_OF = {
    "tiktok_shop": Channel.CHANNEL_TIKTOK_SHOP,
    "shopify": Channel.CHANNEL_SHOPIFY,
    "amazon": Channel.CHANNEL_AMAZON,
}
CLIENT_TIMEOUT_S = 0.5  # how long the service waits for a channel's answer
# The service and the fakes run in this process and read one monotonic clock: the slack only
# absorbs rounding, far below the 20-100 ms restore windows checked.
CLOCK_SLACK_S = 0.002


@pytest.fixture
def service_env(fakes: Fakes) -> dict[str, str]:
    return {
        **fake_channel_env(*(fake.url for fake in fakes)),
        "CHANNEL_SYNC_RECONCILE_SECONDS": "0.2",
        "CHANNEL_SYNC_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT_S),
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


def shopify_throttle(record: RecordedRequest) -> tuple[float, float] | None:
    """(points available, restore rate per second) from a THROTTLED answer, else None."""
    if not record.answer:
        return None
    answer = json.loads(record.answer)
    errors = answer.get("errors")
    if not isinstance(errors, list) or not any(
        e.get("extensions", {}).get("code") == "THROTTLED" for e in errors
    ):
        return None
    status = answer["extensions"]["cost"]["throttleStatus"]
    return float(status["currentlyAvailable"]), float(status["restoreRate"])


def shopify_cost(shopify: FakeShopify, record: RecordedRequest) -> int:
    return SHOPIFY_MUTATION_COST if shopify.is_write(record) else SHOPIFY_QUERY_COST


async def test_after_errors_throttling_and_stalls_every_channel_shows_the_projection(
    stub: Stub, fakes: Fakes
) -> None:
    tiktok, shopify, amazon = fakes
    tiktok.faults.fail_next, tiktok.faults.fail_status = 6, 503
    shopify.faults.throttle_until = math.inf  # lifted once the service has been throttled
    amazon.faults.stall_next, amazon.faults.stall_s = 3, 1.5  # past the client's 0.5 s timeout
    await receive(stub, "LAMP", 50)
    for index in range(10):
        await reserve(
            stub, "LAMP", 1 + index % 3, f"o{index}", channel=Channel.CHANNEL_SHOPIFY, paid=True
        )

    async def throttled_and_retried() -> bool:
        """Shopify answered THROTTLED (HTTP 200) more than once, and the service took it as a
        failure to retry, not as a confirmed quantity."""
        throttled = [r for r in shopify.writes() if shopify_throttle(r) is not None]
        state = await stub.GetSyncState(
            pb.GetSyncStateRequest(channel=Channel.CHANNEL_SHOPIFY, sku="LAMP"), timeout=10
        )
        recorded = bool(state.states) and "THROTTLED" in state.states[0].last_error
        return len(throttled) >= 2 and recorded

    await eventually(throttled_and_retried, within=10, what="Shopify to throttle the service")
    shopify.faults.throttle_until = 0.0
    await channels_show(stub, fakes, "LAMP", 50 - sum(1 + i % 3 for i in range(10)), within=30)

    assert 503 in [r.status for r in tiktok.writes()]
    # After each THROTTLED answer, Shopify's bucket holds `available` points and refills at
    # `rate`: the next call (of any cost) must wait until the bucket can pay for it.
    calls = sorted(shopify.requests, key=lambda r: r.at)
    waits = []
    for answer in calls:
        throttle = shopify_throttle(answer)
        if throttle is None:
            continue
        available, rate = throttle
        following = next((r for r in calls if r.at >= answer.answered_at), None)
        assert following is not None, "no call after a THROTTLED answer: nothing was retried"
        needed = max(0.0, (shopify_cost(shopify, following) - available) / rate)
        waited = following.at - answer.answered_at
        assert waited >= needed - CLOCK_SLACK_S, (
            f"a call {waited * 1000:.1f} ms after THROTTLED; the bucket needed"
            f" {needed * 1000:.1f} ms"
        )
        waits.append(waited)
    assert len(waits) >= 2
    final = max((r for r in shopify.writes() if r.status == 200), key=lambda r: r.at)
    assert shopify_throttle(final) is None  # the last write was a real, confirmed one
    # The stalled Amazon calls (the first is the token request) outlasted the client's
    # timeout: it gave up on them and called again.
    abandoned = [
        r for r in amazon.requests if r.status == 0 or r.answered_at - r.at > CLIENT_TIMEOUT_S
    ]
    assert abandoned
    assert max(r.at for r in amazon.requests) > abandoned[0].at + CLIENT_TIMEOUT_S


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

    async def order(index: int) -> str:
        # The channel has already sold these: short stock must be recorded as a backorder
        # (oversold), never refused, so any RPC error fails the test.
        reply = await reserve(
            stub,
            "VIRAL",
            1,
            f"o{index}",
            channel=channels[index % 3],
            paid=True,
            already_sold=True,
        )
        assert reply.reserved != reply.oversold, reply
        return "reserved" if reply.reserved else "oversold"

    outcomes = await asyncio.gather(*(order(i) for i in range(600)))
    assert (outcomes.count("reserved"), outcomes.count("oversold")) == (100, 500)
    await wait_for_stock(stub, "VIRAL", on_hand=100, reserved=100, available=0)
    await channels_show(stub, fakes, "VIRAL", 0)


async def test_tiktok_shows_at_most_its_documented_maximum(stub: Stub, fakes: Fakes) -> None:
    """TikTok Shop takes quantities up to 99,999: more stock shows the cap, not a refusal."""
    tiktok, shopify, amazon = fakes
    await receive(stub, "BULK", 150_000)

    async def shown() -> bool:
        return (
            tiktok.quantity_of("BULK") == 99_999
            and shopify.quantity_of("BULK") == 150_000
            and amazon.quantity_of("BULK") == 150_000
        )

    await eventually(shown, what="the capped quantity on TikTok Shop, the whole one elsewhere")
    state = await stub.GetSyncState(
        pb.GetSyncStateRequest(channel=Channel.CHANNEL_TIKTOK_SHOP, sku="BULK"), timeout=10
    )
    assert [(s.desired_quantity, s.dead_lettered) for s in state.states] == [(99_999, False)]
