"""The chain through the real services: orders on ingest's stream -> forecast.updated ->
fulfillment's review -> a recommendation with its reasons -> approved into a purchase order
(once, however often approved) -> received -> stock and channel quantities in inventory-sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from nats.aio.client import Client as NATS
from pulsestock.v1 import forecast_pb2 as fpb
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1.common_pb2 import OrderLine
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub

from tests.forecast.test_service import order, publish
from tests.fulfillment.conftest import Chain
from tests.helpers.infra import eventually

pytestmark = pytest.mark.slow
SKU = "LAMP-7"


async def master_data(api: FulfillmentServiceStub) -> None:
    await api.SetWarehouse(
        pb.SetWarehouseRequest(
            warehouse=ev.WarehouseProfile(warehouse_id="wh-1", region="us-east", kind="own")
        )
    )
    options = [
        ev.LeadTimeOptionProfile(
            mode="air",
            lead_time_hours=ev.LeadTimeHours(mean=48, sd=6),
            unit_cost=6.0,
            case_pack=10,
            delivers_to=["wh-1"],
        ),
        ev.LeadTimeOptionProfile(
            mode="sea",
            lead_time_hours=ev.LeadTimeHours(mean=900, sd=96),
            unit_cost=3.0,
            moq=20000,
            delivers_to=["wh-1"],
        ),
    ]
    await api.SetSupplier(
        pb.SetSupplierRequest(supplier=ev.SupplierProfile(supplier_id="acme", options=options))
    )
    await api.SetSkuEconomics(
        pb.SetSkuEconomicsRequest(
            economics=ev.SkuEconomics(
                sku=SKU,
                price=25,
                unit_cost=6,
                salvage=2,
                holding_per_unit_day=0.01,
                target_service_level=0.95,
                warehouse_id="wh-1",
                supplier_ids=["acme"],
            )
        )
    )


async def test_orders_become_a_recommendation_a_po_and_stock(chain: Chain, bus: NATS) -> None:
    api, stock, forecasts = chain
    # Two weeks of steady sales, about 3 an hour, up to two hours ago; they had their stock
    # (none is a backorder the review would have to cover) and 20 are left to sell.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    counts = np.random.default_rng(5).poisson(3.0, 14 * 24)
    counts[-1] = max(counts[-1], 1)
    seed = 20 + int(counts.sum()) + 3  # and the last order below
    await stock.Receive(
        inv.ReceiveRequest(sku=SKU, warehouse_id="wh-1", quantity=seed, command_id="seed")
    )
    for index, count in enumerate(counts):
        if count:
            at = now - timedelta(hours=len(counts) + 1 - index)
            await publish(bus, "ingest", SKU, order(f"o-{index}", SKU, int(count), at))

    async def folded() -> bool:
        reply = await forecasts.GetForecast(fpb.GetForecastRequest(sku=SKU), timeout=10)
        return reply.forecast.as_of.ToDatetime(tzinfo=UTC) >= now - timedelta(hours=2)

    await eventually(folded, within=60, what="every order in the forecast")
    # Master data arrives; the next hour's order moves the forecast (a new hour of content
    # time), whose forecast.updated makes the SKU due for review.
    await master_data(api)
    await publish(bus, "ingest", SKU, order("o-last", SKU, 3, now - timedelta(minutes=30)))

    async def recommended() -> bool:
        plan = await api.GetReplenishmentPlan(pb.GetReplenishmentPlanRequest(sku=SKU))
        return bool(plan.recommendations) and plan.recommendations[0].quantity > 0

    await eventually(recommended, within=60, what="a recommendation from forecast.updated")
    (rec,) = (
        await api.GetReplenishmentPlan(pb.GetReplenishmentPlanRequest(sku=SKU))
    ).recommendations
    assert rec.trigger == "forecast_updated"
    assert rec.mode == "air"  # the sea option's MOQ dwarfs what is needed before it lands
    assert rec.quantity % 10 == 0  # case pack
    by_mode = {option.mode: option for option in rec.options}
    air, sea = by_mode["air"], by_mode["sea"]
    assert air.quantity == rec.quantity
    assert sea.quantity == 0
    assert sea.reason  # why not the sea option
    # The air window starts about 48 h out; ~3 orders an hour against 20 on hand.
    window_hours = (air.window.end.ToDatetime() - air.window.start.ToDatetime()) / timedelta(
        hours=1
    )
    assert window_hours >= 24
    landing = air.window.start.ToDatetime(tzinfo=UTC)
    assert now + timedelta(hours=46) <= landing <= now + timedelta(hours=50)
    assert 24 * 3 * 0.5 < rec.quantity < (48 + window_hours) * 3 * 2
    levels = [q.q for q in air.need_quantiles]
    assert levels == sorted(levels)
    assert air.expected_lost_margin >= 0
    assert air.expected_leftover_cost >= 0

    first = await api.ApproveRecommendation(
        pb.ApproveRecommendationRequest(recommendation_id=rec.recommendation_id)
    )
    again = await api.ApproveRecommendation(
        pb.ApproveRecommendationRequest(recommendation_id=rec.recommendation_id)
    )
    assert again.purchase_order_id == first.purchase_order_id  # a double click: one PO
    po = first.purchase_order
    assert po.status == pb.PURCHASE_ORDER_STATUS_DRAFT
    assert [(line.sku, line.ordered) for line in po.lines] == [(SKU, rec.quantity)]

    # The open PO now counts as on order: a review asked for now orders less.
    (after,) = (
        await api.ReviewReplenishment(pb.ReviewReplenishmentRequest(sku=SKU))
    ).recommendations
    assert after.quantity < rec.quantity
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await api.ApproveRecommendation(
            pb.ApproveRecommendationRequest(recommendation_id=rec.recommendation_id + "x")
        )
    assert stale.value.code() == grpc.StatusCode.NOT_FOUND

    await api.SubmitPurchaseOrder(pb.PurchaseOrderCommand(purchase_order_id=po.purchase_order_id))
    await api.ReceivePurchaseOrder(
        pb.ReceivePurchaseOrderRequest(
            purchase_order_id=po.purchase_order_id,
            receipt_id="grn-1",
            lines=[OrderLine(sku=SKU, quantity=rec.quantity)],
        )
    )

    async def audit_trail() -> list[inv.HistoryEntry]:
        entries: list[inv.HistoryEntry] = []
        while True:  # the whole trail, a page at a time
            page = await stock.GetHistory(
                inv.GetHistoryRequest(sku=SKU, from_version=len(entries) + 1, limit=1000)
            )
            entries.extend(page.entries)
            if len(page.entries) < 1000:
                return entries

    async def receipts() -> list[inv.HistoryEntry]:
        return [e for e in await audit_trail() if e.type.endswith("StockReceived")]

    async def received() -> bool:
        return len(await receipts()) >= 2

    await eventually(received, within=30, what="the receipt in the ledger")
    trail = await receipts()
    assert len(trail) == 2  # the seed and the purchase order's receipt, once
    assert str(rec.quantity) in trail[1].data_json
    # The read model and every channel's quantity include the receipt (read your writes).
    version = trail[1].stream_version
    levels = await stock.GetStock(inv.GetStockRequest(sku=SKU, min_stream_version=version))
    assert levels.available > 0
    channels = await stock.GetChannelQuantities(
        inv.GetChannelQuantitiesRequest(sku=SKU, min_stream_version=version)
    )
    assert channels.quantities
    assert all(0 <= q.quantity <= levels.available for q in channels.quantities)
    assert max(q.quantity for q in channels.quantities) > 0


async def test_review_refusals(
    chain: Chain,
) -> None:
    api, _, _ = chain
    with pytest.raises(grpc.aio.AioRpcError) as no_economics:
        await api.ReviewReplenishment(pb.ReviewReplenishmentRequest(sku="UNKNOWN-1"))
    assert no_economics.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.GetReplenishmentPlan(pb.GetReplenishmentPlanRequest(sku="bad sku"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    empty = await api.GetReplenishmentPlan(pb.GetReplenishmentPlanRequest(sku="NEW-1"))
    assert list(empty.recommendations) == []
