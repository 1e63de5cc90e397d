"""GetChannelStatus: each connected channel's calls of the last minute against its rate
limit, backoff, listings by sync state and latest errors, after real calls to the fakes."""

from __future__ import annotations

import pytest
from pulsestock.fakes import fake_channel_env
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub as Stub

from tests.helpers.infra import eventually
from tests.inventory_sync.conftest import Fakes
from tests.inventory_sync.test_service import receive


@pytest.fixture
def service_env(fakes: Fakes) -> dict[str, str]:
    return {
        **fake_channel_env(*(fake.url for fake in fakes)),
        "CHANNEL_SYNC_BASE_BACKOFF_SECONDS": "0.05",
        "CHANNEL_SYNC_MAX_BACKOFF_SECONDS": "0.2",
        "CHANNEL_SYNC_MAX_FAILURES": "30",
    }


async def test_calls_backoff_listings_and_errors_per_channel(stub: Stub, fakes: Fakes) -> None:
    tiktok, _, amazon = fakes
    tiktok.faults.fail_next, tiktok.faults.fail_status = 2, 503  # retried, then it succeeds
    amazon.faults.fail_next, amazon.faults.fail_status = 1, 400  # refused: dead-lettered
    await receive(stub, "DESK", 12)

    async def settled() -> bool:
        reply = await stub.GetChannelStatus(pb.GetChannelStatusRequest(), timeout=10)
        by = {s.channel: s for s in reply.channels}
        return (
            len(by) == 3
            and by[Channel.CHANNEL_TIKTOK_SHOP].in_sync == 1
            and by[Channel.CHANNEL_SHOPIFY].in_sync == 1
            and by[Channel.CHANNEL_AMAZON].dead_lettered == 1
        )

    await eventually(settled, within=20, what="tiktok and shopify in sync, amazon dead-lettered")
    reply = await stub.GetChannelStatus(pb.GetChannelStatusRequest(), timeout=10)
    by = {s.channel: s for s in reply.channels}
    tiktok_status = by[Channel.CHANNEL_TIKTOK_SHOP]
    assert tiktok_status.rate_limit_per_second == pytest.approx(50.0)
    assert tiktok_status.rate_limit_unit == "calls"
    assert tiktok_status.calls_retried_last_minute == 2
    assert tiktok_status.calls_ok_last_minute >= 1
    assert tiktok_status.backoff_seconds == 0  # the last call succeeded
    assert (tiktok_status.listings, tiktok_status.failing, tiktok_status.pending) == (1, 0, 0)
    assert not tiktok_status.recent_errors  # confirmed since: no error left
    shopify_status = by[Channel.CHANNEL_SHOPIFY]
    assert shopify_status.rate_limit_unit == "query cost points"
    assert shopify_status.rate_limit_per_second > 0
    amazon_status = by[Channel.CHANNEL_AMAZON]
    assert amazon_status.rate_limit_per_second == pytest.approx(5.0)
    assert amazon_status.calls_refused_last_minute == 1
    assert amazon_status.calls_ok_last_minute == 0
    assert (amazon_status.listings, amazon_status.in_sync) == (1, 0)
    (error,) = amazon_status.recent_errors
    assert error.listing == "DESK"
    assert error.dead_lettered
    assert "HTTP 400" in error.last_error
    assert error.desired_quantity == 12
