"""The FulfillmentService gRPC servicer: master data, replenishment plans and approvals,
purchase orders, order routing, pre-positioning transfers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from google.protobuf.message import Message
from pulsestock.clock import Clock, utc_now
from pulsestock.errors import Validator
from pulsestock.fulfillment.application.master_records import MasterRecords, sorted_profiles
from pulsestock.fulfillment.application.planner import ReplenishmentPlanner
from pulsestock.fulfillment.application.purchase_orders import PurchaseOrders, to_message
from pulsestock.fulfillment.application.router import OrderRouter
from pulsestock.fulfillment.application.transfers import TransferPlanner
from pulsestock.fulfillment.domain import purchase_orders as po_domain
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1 import fulfillment_pb2_grpc

Transition = Callable[[po_domain.PurchaseOrder, datetime], list[Message]]
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100


class FulfillmentServiceServicer(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    def __init__(
        self,
        orders: PurchaseOrders,
        master: MasterRecords,
        planner: ReplenishmentPlanner,
        router: OrderRouter,
        transfers: TransferPlanner,
        clock: Clock = utc_now,
    ) -> None:
        self.orders = orders
        self.master = master
        self.planner = planner
        self.router = router
        self.transfers = transfers
        self.clock = clock

    async def RouteOrder(
        self, request: pb.RouteOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RouteOrderResponse:
        routed = await self.router.route(request)
        return pb.RouteOrderResponse(
            warehouse_id=routed.warehouse_id,
            allocations=routed.allocations,
            unallocated=routed.unallocated,
        )

    async def PlanTransfers(
        self, request: pb.PlanTransfersRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlanTransfersResponse:
        planned, considered = await self.transfers.plan(request.sku)
        return pb.PlanTransfersResponse(transfers=planned, considered=considered)

    async def ExecuteTransfer(
        self, request: pb.ExecuteTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteTransferResponse:
        planned, executed = await self.transfers.execute(request.transfer_id)
        return pb.ExecuteTransferResponse(transfer=planned, executed=executed)

    async def GetReplenishmentPlan(
        self, request: pb.GetReplenishmentPlanRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReplenishmentPlanResponse:
        return pb.GetReplenishmentPlanResponse(recommendations=await self.planner.plan(request.sku))

    async def ReviewReplenishment(
        self, request: pb.ReviewReplenishmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReplenishmentPlanResponse:
        recommendation = await self.planner.review(request.sku, "requested")
        return pb.GetReplenishmentPlanResponse(recommendations=[recommendation])

    async def ApproveRecommendation(
        self, request: pb.ApproveRecommendationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePurchaseOrderResponse:
        po = await self.planner.approve(request.recommendation_id)
        return pb.CreatePurchaseOrderResponse(
            purchase_order_id=po.purchase_order_id, purchase_order=to_message(po)
        )

    async def SetWarehouse(
        self, request: pb.SetWarehouseRequest, context: grpc.aio.ServicerContext
    ) -> pb.MasterDataResponse:
        return pb.MasterDataResponse(version=await self.master.set_warehouse(request.warehouse))

    async def SetSupplier(
        self, request: pb.SetSupplierRequest, context: grpc.aio.ServicerContext
    ) -> pb.MasterDataResponse:
        return pb.MasterDataResponse(version=await self.master.set_supplier(request.supplier))

    async def SetSkuEconomics(
        self, request: pb.SetSkuEconomicsRequest, context: grpc.aio.ServicerContext
    ) -> pb.MasterDataResponse:
        return pb.MasterDataResponse(version=await self.master.set_economics(request.economics))

    async def GetMasterData(
        self, request: pb.GetMasterDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMasterDataResponse:
        data = await self.master.load()
        return pb.GetMasterDataResponse(
            warehouses=sorted_profiles(data.warehouses.values(), "warehouse_id"),
            suppliers=sorted_profiles(data.suppliers.values(), "supplier_id"),
            skus=sorted_profiles(data.skus.values(), "sku"),
        )

    async def CreatePurchaseOrder(
        self, request: pb.CreatePurchaseOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePurchaseOrderResponse:
        expected_at = (
            request.expected_at.ToDatetime(tzinfo=UTC) if request.HasField("expected_at") else None
        )
        po = await self.orders.create(
            request.request_id,
            request.supplier_id,
            request.warehouse_id,
            list(request.lines),
            expected_at,
            self.clock(),
        )
        return pb.CreatePurchaseOrderResponse(
            purchase_order_id=po.purchase_order_id, purchase_order=to_message(po)
        )

    async def _transition(
        self, request: pb.PurchaseOrderCommand, decide: Transition
    ) -> pb.PurchaseOrderResponse:
        now = self.clock()
        po = await self.orders.execute(request.purchase_order_id, lambda po: decide(po, now))
        return pb.PurchaseOrderResponse(purchase_order=to_message(po))

    async def SubmitPurchaseOrder(
        self, request: pb.PurchaseOrderCommand, context: grpc.aio.ServicerContext
    ) -> pb.PurchaseOrderResponse:
        return await self._transition(request, po_domain.submit)

    async def ConfirmPurchaseOrder(
        self, request: pb.PurchaseOrderCommand, context: grpc.aio.ServicerContext
    ) -> pb.PurchaseOrderResponse:
        return await self._transition(request, po_domain.confirm)

    async def CancelPurchaseOrder(
        self, request: pb.PurchaseOrderCommand, context: grpc.aio.ServicerContext
    ) -> pb.PurchaseOrderResponse:
        return await self._transition(
            request, lambda po, now: po_domain.cancel(po, request.reason, now)
        )

    async def ReceivePurchaseOrder(
        self, request: pb.ReceivePurchaseOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceivePurchaseOrderResponse:
        now = self.clock()
        lines = list(request.lines)
        # Bad input is refused before anything is read or written.
        po_domain.check_receipt(request.receipt_id, lines)
        po = await self.orders.execute(
            request.purchase_order_id,
            lambda po: po_domain.receive(po, request.receipt_id, lines, now),
        )
        return pb.ReceivePurchaseOrderResponse(purchase_order=to_message(po))

    async def GetPurchaseOrder(
        self, request: pb.GetPurchaseOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPurchaseOrderResponse:
        po, history = await self.orders.with_history(request.purchase_order_id)
        return pb.GetPurchaseOrderResponse(purchase_order=to_message(po), history=history)

    async def ListPurchaseOrders(
        self, request: pb.ListPurchaseOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPurchaseOrdersResponse:
        v = Validator()
        if request.sku:
            v.check(valid_id(request.sku), "sku", ID_RULE)
        v.check(
            0 <= request.page_size <= MAX_PAGE_SIZE,
            "page_size",
            f"must be between 0 and {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})",
        )
        known = {status.value for status in po_domain.PoStatus}
        for index, status in enumerate(request.statuses):
            v.check(status in known, f"statuses[{index}]", "is not a purchase order status")
        if request.page_token:
            v.check(valid_id(request.page_token), "page_token", "is not a token this API gave")
        v.raise_if_invalid()
        orders, token = await self.orders.list(
            request.sku,
            list(request.statuses),
            request.page_size or DEFAULT_PAGE_SIZE,
            request.page_token,
        )
        return pb.ListPurchaseOrdersResponse(purchase_orders=orders, next_page_token=token)
