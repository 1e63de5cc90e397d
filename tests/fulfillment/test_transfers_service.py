"""Pre-positioning transfers through the real services: a TikTok Shop pulse on ingest's and
signal's streams -> the forecast's pulse and fulfillment's demand shares by channel and
region -> PlanTransfers proposes moving stock from a regional warehouse (which does not sell
on TikTok) into the empty FBT warehouse, landing by the pulse's deadline, with its reasons;
a lane too slow for it proposes nothing; ExecuteTransfer moves the stock once in
inventory-sync however often executed; refusals (unknown id, stock gone, superseded, bad
input); demand shares decayed and folded in any order, a redelivery counted once."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from nats.aio.client import Client as NATS
from pulsestock.bus import Envelope, service_stream
from pulsestock.bus.consumer import idempotent
from pulsestock.fulfillment.application.demand_shares import DemandShares
from pulsestock.fulfillment.application.transfers import inventory_key
from pulsestock.messages import event_type_of
from pulsestock.v1 import forecast_pb2 as fpb
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import inventory_sync_events_pb2 as invev
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1 import signal_events_pb2 as sig
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub

from tests.forecast.test_service import publish, stamp
from tests.fulfillment.conftest import Chain
from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, eventually
from tests.helpers.service import service_store
from tests.helpers.waiting import consumer_settled

pytestmark = pytest.mark.slow
SKU = "SERUM-9"
STOCK = 3000
LANE_HOURS = 6


def placed(
    order_id: str, channel: Channel.ValueType, region: str, units: int, at: datetime
) -> iev.OrderPlaced:
    return iev.OrderPlaced(
        channel=channel,
        channel_order_id=order_id,
        lines=[OrderLine(sku=SKU, quantity=units)],
        placed_at=stamp(at),
        buyer_region=region,
    )


async def warehouses(api: FulfillmentServiceStub, lane_hours: float) -> None:
    """An empty FBT warehouse in us-east selling only on TikTok Shop, and our own us-east
    warehouse (which does not sell on TikTok) with a lane into it."""
    await api.SetWarehouse(
        pb.SetWarehouseRequest(
            warehouse=ev.WarehouseProfile(
                warehouse_id="fbt-east",
                region="us-east",
                kind="fbt",
                channels=[Channel.CHANNEL_TIKTOK_SHOP],
            )
        )
    )
    await api.SetWarehouse(
        pb.SetWarehouseRequest(
            warehouse=ev.WarehouseProfile(
                warehouse_id="own-east",
                region="us-east",
                kind="own",
                channels=[Channel.CHANNEL_SHOPIFY],
                lanes=[
                    ev.TransferLaneProfile(
                        to_warehouse_id="fbt-east", lead_time_hours=lane_hours, cost_per_unit=1.5
                    )
                ],
            )
        )
    )


async def a_tiktok_pulse(bus: NATS, forecasts: ForecastServiceStub) -> fpb.GetForecastResponse:
    """Two weeks of a slow Shopify seller in us-east, then a TikTok video: views climbing for
    three hours, TikTok orders from us-east following them. Returns the forecast once every
    order and signal is folded."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    onset = now - timedelta(hours=3)
    counts = np.random.default_rng(7).poisson(0.5, 14 * 24)
    for index, count in enumerate(counts):
        if count:
            at = onset - timedelta(hours=len(counts) - index) + timedelta(minutes=10)
            order = placed(f"s-{index}", Channel.CHANNEL_SHOPIFY, "us-east", int(count), at)
            await publish(bus, "ingest", SKU, order)
    detected = sig.PulseDetected(
        pulse_id="p-1", sku=SKU, detected_at=stamp(onset), hot_channel="CHANNEL_TIKTOK_SHOP"
    )
    await publish(bus, "signal", SKU, detected)
    for hour, views in enumerate((10_000, 30_000, 60_000)):
        at = onset + timedelta(hours=hour, minutes=30)
        heat = sig.HeatUpdated(sku=SKU, heat=views / 1000, view_velocity=views, as_of=stamp(at))
        await publish(bus, "signal", SKU, heat)
        order = placed(f"t-{hour}", Channel.CHANNEL_TIKTOK_SHOP, "us-east", views // 500, at)
        await publish(bus, "ingest", SKU, order)

    js = bus.jetstream()
    heads = {
        name: (await js.stream_info(service_stream(name).name)).state.last_seq
        for name in ("ingest", "signal")
    }

    async def folded() -> bool:
        checks = (
            ("ingest", "forecast__orders"),
            ("signal", "forecast__signals"),
            ("ingest", "fulfillment__order_shares"),
            ("ingest", "inventory_sync__orders"),
        )
        for producer, durable in checks:
            stream = service_stream(producer).name
            if not await consumer_settled(js, stream, durable, heads[producer]):
                return False
        return True

    await eventually(folded, within=120, what="every order and signal folded")
    reply: fpb.GetForecastResponse = await forecasts.GetForecast(
        fpb.GetForecastRequest(sku=SKU, horizon=Duration(seconds=1440 * 3600)), timeout=10
    )
    assert reply.forecast.pulse_id == "p-1"
    return reply


async def test_a_tiktok_pulse_moves_stock_into_fbt_before_its_peak_once(
    chain: Chain, bus: NATS
) -> None:
    api, stock, forecasts = chain
    await warehouses(api, lane_hours=2000)  # a lane far too slow for any pulse
    await api.SetSkuEconomics(
        pb.SetSkuEconomicsRequest(
            economics=ev.SkuEconomics(
                sku=SKU, price=30, unit_cost=9, salvage=2, holding_per_unit_day=0.02,
                target_service_level=0.95, warehouse_id="own-east",
            )
        )
    )  # fmt: skip
    seeded = await stock.Receive(
        inv.ReceiveRequest(sku=SKU, warehouse_id="own-east", quantity=STOCK, command_id="seed")
    )
    await stock.GetStock(
        inv.GetStockRequest(sku=SKU, min_stream_version=seeded.stream_version), timeout=10
    )
    forecast = (await a_tiktok_pulse(bus, forecasts)).forecast
    first_hour = forecast.points[0].period_start.ToDatetime(tzinfo=UTC)

    # A lane too slow for any pulse: nothing proposed, and the lane says why.
    slow = await api.PlanTransfers(pb.PlanTransfersRequest(sku=SKU))
    assert list(slow.transfers) == []
    assert any("own-east -> fbt-east: lands at +2000 h" in line for line in slow.considered)

    await warehouses(api, lane_hours=LANE_HOURS)
    plan = await api.PlanTransfers(pb.PlanTransfersRequest(sku=SKU))
    (transfer,) = plan.transfers
    assert (transfer.from_warehouse_id, transfer.to_warehouse_id) == ("own-east", "fbt-east")
    assert 0 < transfer.quantity <= transfer.source_available <= STOCK
    assert transfer.destination_available == 0
    land_by = transfer.land_by.ToDatetime(tzinfo=UTC)
    assert transfer.arrives_at.ToDatetime(tzinfo=UTC) <= land_by
    assert transfer.window.start.ToDatetime(tzinfo=UTC) == first_hour + timedelta(hours=LANE_HOURS)
    # The production forecast's pulse decays from its first hour: the peak is behind it, so
    # the transfer lands by the hour half of the pulse's remaining excess is expected.
    assert transfer.peak_at.ToDatetime(tzinfo=UTC) <= land_by
    # Most recent orders are TikTok's, and only FBT sells there: a unit short is a lost sale.
    assert transfer.destination_share > 0.8
    assert transfer.destination_unit_value == pytest.approx(30 - 9)
    # Shopify's few orders are the source's own, and no other warehouse sells there either:
    # a unit short there is a lost sale too. The pulse needs more than the source has, so
    # units move until the source's own buyers would likely miss the next one: most of the
    # stock, never all of it.
    assert transfer.source_share < 0.2
    assert transfer.source_unit_value == pytest.approx(30 - 9)
    assert transfer.source_available / 2 < transfer.quantity < transfer.source_available
    assert 0 < transfer.expected_source_loss < transfer.expected_lost_sales_avoided
    value = transfer.expected_lost_sales_avoided - transfer.expected_source_loss
    assert value > transfer.transfer_cost == pytest.approx(1.5 * transfer.quantity)
    levels = [q.q for q in transfer.destination_need]
    assert levels == sorted(levels)
    # Never more than the destination's largest need in the window.
    assert transfer.quantity <= max(q.value for q in transfer.destination_need) + 1
    assert "lands by" in transfer.reason

    # A lane landing an hour after that: nothing, and the earlier plan is superseded.
    too_late = math.ceil((land_by - first_hour) / timedelta(hours=1)) + 1
    await warehouses(api, lane_hours=too_late)
    late = await api.PlanTransfers(pb.PlanTransfersRequest(sku=SKU))
    assert list(late.transfers) == []
    assert any(f"lands at +{too_late} h, after" in line for line in late.considered)
    with pytest.raises(grpc.aio.AioRpcError) as superseded:
        await api.ExecuteTransfer(pb.ExecuteTransferRequest(transfer_id=transfer.transfer_id))
    assert superseded.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Back to the fast lane, on the same forecast and stock: the same transfer, recorded once.
    await warehouses(api, lane_hours=LANE_HOURS)
    again = await api.PlanTransfers(pb.PlanTransfersRequest(sku=SKU))
    assert [t.transfer_id for t in again.transfers] == [transfer.transfer_id]
    assert again.transfers[0] == transfer

    before = await stock.GetStock(inv.GetStockRequest(sku=SKU))
    held = {w.warehouse_id: w for w in before.warehouses}
    # A first attempt that reached inventory-sync but whose answer was lost (fulfillment
    # crashed before recording it): its command carries the key derived from the transfer.
    await stock.Transfer(
        inv.TransferRequest(
            sku=SKU,
            from_warehouse_id=transfer.from_warehouse_id,
            to_warehouse_id=transfer.to_warehouse_id,
            quantity=transfer.quantity,
            transfer_id=inventory_key(transfer.transfer_id),
        )
    )
    first = await api.ExecuteTransfer(pb.ExecuteTransferRequest(transfer_id=transfer.transfer_id))
    second = await api.ExecuteTransfer(pb.ExecuteTransferRequest(transfer_id=transfer.transfer_id))
    assert first.executed == second.executed
    assert first.executed.quantity == transfer.quantity
    after = await stock.GetStock(
        inv.GetStockRequest(sku=SKU, min_stream_version=first.executed.stock_stream_version),
        timeout=10,
    )
    moved = {w.warehouse_id: w for w in after.warehouses}
    assert moved["own-east"].on_hand == held["own-east"].on_hand - transfer.quantity
    assert moved["fbt-east"].on_hand == transfer.quantity
    history = await stock.GetHistory(inv.GetHistoryRequest(sku=SKU, limit=1000))
    transfers = [e for e in history.entries if e.type.endswith("StockTransferred")]
    assert len(transfers) == 1

    # The stock is now in FBT: a new plan proposes nothing more than what is still needed,
    # and the executed transfer stays executed.
    replanned = await api.PlanTransfers(pb.PlanTransfersRequest(sku=SKU))
    assert sum(t.quantity for t in replanned.transfers) < transfer.quantity
    third = await api.ExecuteTransfer(pb.ExecuteTransferRequest(transfer_id=transfer.transfer_id))
    assert third.executed == first.executed


async def test_transfer_refusals(chain: Chain, bus: NATS) -> None:
    api, stock, forecasts = chain
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await api.ExecuteTransfer(pb.ExecuteTransferRequest(transfer_id="tr-nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad_id:
        await api.ExecuteTransfer(pb.ExecuteTransferRequest(transfer_id="has space"))
    assert bad_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad_id.value)) == {"transfer_id"}
    with pytest.raises(grpc.aio.AioRpcError) as bad_sku:
        await api.PlanTransfers(pb.PlanTransfersRequest(sku=""))
    assert bad_sku.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad_sku.value)) == {"sku"}
    with pytest.raises(grpc.aio.AioRpcError) as no_economics:
        await api.PlanTransfers(pb.PlanTransfersRequest(sku="UNKNOWN-1"))
    assert no_economics.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # A planned transfer whose source no longer holds the stock.
    await warehouses(api, lane_hours=LANE_HOURS)
    await api.SetSkuEconomics(
        pb.SetSkuEconomicsRequest(
            economics=ev.SkuEconomics(
                sku=SKU, price=30, unit_cost=9, salvage=2, holding_per_unit_day=0.02,
                target_service_level=0.95, warehouse_id="own-east",
            )
        )
    )  # fmt: skip
    await stock.Receive(
        inv.ReceiveRequest(sku=SKU, warehouse_id="own-east", quantity=STOCK, command_id="seed")
    )
    await a_tiktok_pulse(bus, forecasts)
    (transfer,) = (await api.PlanTransfers(pb.PlanTransfersRequest(sku=SKU))).transfers
    available = {
        w.warehouse_id: w.available
        for w in (await stock.GetStock(inv.GetStockRequest(sku=SKU))).warehouses
    }
    await stock.Adjust(
        inv.AdjustRequest(
            sku=SKU,
            warehouse_id="own-east",
            delta=-(available["own-east"] - transfer.quantity + 1),
            reason=invev.ADJUSTMENT_REASON_DAMAGE,
            command_id="damaged",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await api.ExecuteTransfer(pb.ExecuteTransferRequest(transfer_id=transfer.transfer_id))
    assert gone.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def envelope(event_id: str, order: iev.OrderPlaced) -> Envelope:
    return Envelope(
        event_id=event_id,
        type=event_type_of(order),
        source="/pulsestock/ingest",
        subject=SKU,
        time="",
        data=order.SerializeToString(),
        headers={},
    )


async def test_demand_shares_decay_fold_in_any_order_and_count_a_redelivery_once(
    infra: Infra,
) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    orders = [
        (f"e-{i}", placed(f"o-{i}", channel, region, units, start + timedelta(hours=hours)))
        for i, (channel, region, units, hours) in enumerate(
            [
                (Channel.CHANNEL_SHOPIFY, "us-east", 4, 0),
                (Channel.CHANNEL_TIKTOK_SHOP, "us-east", 10, 24),
                (Channel.CHANNEL_SHOPIFY, "us-east", 2, 48),
                (Channel.CHANNEL_TIKTOK_SHOP, "us-west", 3, 72),
                (Channel.CHANNEL_TIKTOK_SHOP, "us-east", 6, 60),
            ]
        )
    ]
    weights = []
    for sequence in (orders, orders[::-1], [*orders, orders[1]]):  # the last: a redelivery
        async with service_store(infra.database_url, "fulfillment") as store:
            shares = DemandShares(store.pool, lambda: start)
            record = idempotent(store.pool, "order_shares", shares.record)
            for event_id, order in sequence:
                await record(envelope(event_id, order))
            weights.append({(b.channel, b.region): b.weight for b in await shares.buckets(SKU)})
            schema = store.schema
        await drop_schema(infra.database_url, schema)
    # Decayed to the latest order (+72 h) with a 24 h half-life.
    expected = {
        ("shopify", "us-east"): 4 * 0.5**3 + 2 * 0.5 ** (24 / 24),
        ("tiktok_shop", "us-east"): 10 * 0.5**2 + 6 * 0.5 ** (12 / 24),
        ("tiktok_shop", "us-west"): 3.0,
    }
    for folded in weights:
        assert folded.keys() == expected.keys()
        for bucket, weight in expected.items():
            assert folded[bucket] == pytest.approx(weight, rel=1e-9)
