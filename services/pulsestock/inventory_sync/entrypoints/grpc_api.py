"""The InventorySyncService gRPC servicer: validates requests, turns them into ledger
commands for the writer, and answers queries from the read model and the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.errors import InvalidArgument, PreconditionFailed, Validator
from pulsestock.eventstore import EventStore, ProjectionRunner
from pulsestock.inventory_sync.adapters.catalogue_store import CatalogueStore
from pulsestock.inventory_sync.application import queries
from pulsestock.inventory_sync.application.channel_sync import ChannelSync
from pulsestock.inventory_sync.application.order_lines import Unresolved, placed_lines
from pulsestock.inventory_sync.application.writer import LedgerWriter
from pulsestock.inventory_sync.domain.commands import (
    AdjustStock,
    Applied,
    HeldPart,
    Outcome,
    ReceiveStock,
    ReleaseReservation,
    ReserveOrder,
    ReserveOutcome,
    SetAllocationPolicy,
    ShipReservation,
    TransferStock,
)
from pulsestock.inventory_sync.domain.ledger import timestamp
from pulsestock.inventory_sync.domain.sku import check_sku
from pulsestock.v1 import ingest_events_pb2, inventory_sync_pb2_grpc
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1.common_pb2 import Channel

SELLING_CHANNELS = frozenset(
    name for name in Channel.DESCRIPTOR.values_by_name if name != "CHANNEL_UNSPECIFIED"
)
MAX_REGION = 64
MAX_LINES = 100
MAX_LISTING_ID = 64
MAX_ID_LENGTH = 128
MAX_QUANTITY = 10_000_000
READ_YOUR_WRITES_WAIT_S = 5.0  # a query with min_stream_version and no deadline
MAX_WAIT_S = 30.0


def _check_id(validator: Validator, value: str, field: str, required: bool = True) -> None:
    if not value:
        validator.check(not required, field, "is required")
        return
    validator.check(
        len(value) <= MAX_ID_LENGTH, field, f"must be at most {MAX_ID_LENGTH} characters"
    )
    validator.check(
        value.isprintable() and value.strip() == value,
        field,
        "must be printable, without surrounding spaces",
    )


def _reserved_parts(parts: Iterable[HeldPart]) -> list[pb.ReservedPart]:
    return [
        pb.ReservedPart(
            sku=p.sku,
            reservation_id=p.reservation_id,
            warehouse_id=p.warehouse_id,
            quantity=p.quantity,
        )
        for p in parts
    ]


def _check_channel(validator: Validator, channel: int, field: str = "channel") -> None:
    validator.check(
        channel in Channel.values() and channel != Channel.CHANNEL_UNSPECIFIED,
        field,
        "must be CHANNEL_TIKTOK_SHOP, CHANNEL_SHOPIFY or CHANNEL_AMAZON",
    )


def _check_quantity(validator: Validator, quantity: int, field: str) -> None:
    validator.check(0 < quantity <= MAX_QUANTITY, field, f"must be between 1 and {MAX_QUANTITY}")


def _applied(outcome: Outcome) -> pb.LedgerCommandResponse:
    assert isinstance(outcome, Applied)
    return pb.LedgerCommandResponse(stream_version=outcome.version)


class InventorySyncServicer(inventory_sync_pb2_grpc.InventorySyncServiceServicer):
    def __init__(
        self,
        writer: LedgerWriter,
        store: EventStore,
        read_model: ProjectionRunner,
        sync: ChannelSync | None = None,
    ) -> None:
        self.writer = writer
        self.store = store
        self.read_model = read_model
        self.sync = sync
        self.catalogue = CatalogueStore(store)
        self._catalogue_lock = asyncio.Lock()  # the store's cache is not for concurrent use

    async def Receive(
        self, request: pb.ReceiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.LedgerCommandResponse:
        v = Validator()
        check_sku(v, request.sku)
        _check_id(v, request.warehouse_id, "warehouse_id")
        _check_quantity(v, request.quantity, "quantity")
        _check_id(v, request.command_id, "command_id", required=False)
        v.raise_if_invalid()
        return _applied(
            await self.writer.submit(
                ReceiveStock(
                    request.sku,
                    request.warehouse_id,
                    request.quantity,
                    request.source,
                    request.command_id,
                )
            )
        )

    async def Adjust(
        self, request: pb.AdjustRequest, context: grpc.aio.ServicerContext
    ) -> pb.LedgerCommandResponse:
        v = Validator()
        check_sku(v, request.sku)
        _check_id(v, request.warehouse_id, "warehouse_id")
        v.check(
            request.delta != 0 and abs(request.delta) <= MAX_QUANTITY,
            "delta",
            "must be non-zero and within range",
        )
        v.check(
            request.reason in ev.AdjustmentReason.values()
            and request.reason != ev.ADJUSTMENT_REASON_UNSPECIFIED,
            "reason",
            "must be COUNT, DAMAGE or RETURN",
        )
        _check_id(v, request.command_id, "command_id", required=False)
        v.raise_if_invalid()
        return _applied(
            await self.writer.submit(
                AdjustStock(
                    request.sku,
                    request.warehouse_id,
                    request.delta,
                    request.reason,
                    request.command_id,
                )
            )
        )

    async def Reserve(
        self, request: pb.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReserveResponse:
        v = Validator()
        _check_channel(v, request.channel)
        _check_id(v, request.channel_order_id, "channel_order_id")
        v.check(0 < len(request.lines) <= MAX_LINES, "lines", f"must hold 1 to {MAX_LINES} lines")
        for index, line in enumerate(request.lines):
            if line.listing_id:
                v.check(
                    len(line.listing_id) <= MAX_LISTING_ID,
                    f"lines[{index}].listing_id",
                    f"at most {MAX_LISTING_ID} characters",
                )
            if line.sku or not line.listing_id:
                check_sku(v, line.sku, f"lines[{index}].sku")
            _check_quantity(v, line.quantity, f"lines[{index}].quantity")
        v.check(
            len(request.buyer_region) <= MAX_REGION,
            "buyer_region",
            f"at most {MAX_REGION} characters",
        )
        v.check(
            len(request.marketplace_id) <= MAX_REGION,
            "marketplace_id",
            f"at most {MAX_REGION} characters",
        )
        v.raise_if_invalid()
        lines: tuple[tuple[str, int], ...] = tuple(
            (line.sku, line.quantity) for line in request.lines
        )
        if any(line.listing_id for line in request.lines):
            lines = await self._listing_lines(request)
        outcome = await self.writer.submit(
            ReserveOrder(
                channel=request.channel,
                channel_order_id=request.channel_order_id,
                lines=lines,
                paid=request.paid,
                already_sold=request.already_sold,
                buyer_region=request.buyer_region,
            )
        )
        assert isinstance(outcome, ReserveOutcome)
        response = pb.ReserveResponse(
            reserved=outcome.reserved,
            oversold=outcome.oversold,
            reservation_ids=list(outcome.reservation_ids),
            stream_versions=dict(outcome.stream_versions),
            held=_reserved_parts(outcome.held),
        )
        if outcome.expires_at is not None:
            response.expires_at.CopyFrom(timestamp(outcome.expires_at))
        return response

    async def _listing_lines(self, request: pb.ReserveRequest) -> tuple[tuple[str, int], ...]:
        """The stock items the request's listings take, through the catalogue."""
        async with self._catalogue_lock:
            catalogue = await self.catalogue.load()
        placed = placed_lines(
            catalogue,
            ingest_events_pb2.OrderPlaced(
                channel=request.channel,
                marketplace_id=request.marketplace_id,
                lines=request.lines,
            ),
        )
        if isinstance(placed, Unresolved):
            names = ", ".join(line.listing_id or line.sku for line in placed.lines)
            raise PreconditionFailed(f"no active catalogue listing for: {names}")
        return placed

    async def Release(
        self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.LedgerCommandResponse:
        v = Validator()
        check_sku(v, request.sku)
        _check_id(v, request.reservation_id, "reservation_id")
        v.check(
            request.reason in ev.ReleaseReason.values()
            and request.reason != ev.RELEASE_REASON_UNSPECIFIED,
            "reason",
            "must be CANCELLED, EXPIRED or PAYMENT_FAILED",
        )
        v.raise_if_invalid()
        return _applied(
            await self.writer.submit(
                ReleaseReservation(request.sku, request.reservation_id, request.reason)
            )
        )

    async def Ship(
        self, request: pb.ShipRequest, context: grpc.aio.ServicerContext
    ) -> pb.LedgerCommandResponse:
        v = Validator()
        check_sku(v, request.sku)
        _check_id(v, request.reservation_id, "reservation_id")
        v.raise_if_invalid()
        return _applied(
            await self.writer.submit(ShipReservation(request.sku, request.reservation_id))
        )

    async def Transfer(
        self, request: pb.TransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.LedgerCommandResponse:
        v = Validator()
        check_sku(v, request.sku)
        _check_id(v, request.from_warehouse_id, "from_warehouse_id")
        _check_id(v, request.to_warehouse_id, "to_warehouse_id")
        v.check(
            request.from_warehouse_id != request.to_warehouse_id,
            "to_warehouse_id",
            "must differ from from_warehouse_id",
        )
        _check_quantity(v, request.quantity, "quantity")
        _check_id(v, request.transfer_id, "transfer_id", required=False)
        v.raise_if_invalid()
        return _applied(
            await self.writer.submit(
                TransferStock(
                    request.sku,
                    request.from_warehouse_id,
                    request.to_warehouse_id,
                    request.quantity,
                    request.transfer_id,
                )
            )
        )

    async def SetAllocationPolicy(
        self, request: pb.SetAllocationPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.LedgerCommandResponse:
        policy = request.policy
        v = Validator()
        check_sku(v, policy.sku, "policy.sku")
        v.check(
            policy.kind in ev.AllocationPolicyKind.values()
            and policy.kind != ev.ALLOCATION_POLICY_KIND_UNSPECIFIED,
            "policy.kind",
            "must be SHARED_POOL, FIXED_SHARES or PULSE_PRIORITY",
        )
        for name, buffer in policy.channel_buffers.items():
            v.check(
                name in SELLING_CHANNELS,
                f"policy.channel_buffers[{name}]",
                "unknown channel",
            )
            v.check(buffer >= 0, f"policy.channel_buffers[{name}]", "must not be negative")
        for name, share in policy.channel_shares.items():
            v.check(
                name in SELLING_CHANNELS,
                f"policy.channel_shares[{name}]",
                "unknown channel",
            )
            v.check(
                0.0 <= share <= 1.0, f"policy.channel_shares[{name}]", "must be between 0 and 1"
            )
        v.check(
            sum(policy.channel_shares.values()) <= 1.0 + 1e-9,
            "policy.channel_shares",
            "must sum to at most 1",
        )
        v.check(policy.slow_channel_cap >= 0, "policy.slow_channel_cap", "must not be negative")
        v.raise_if_invalid()
        return _applied(await self.writer.submit(SetAllocationPolicy(policy.sku, policy)))

    async def _caught_up(
        self, sku: str, min_stream_version: int, context: grpc.aio.ServicerContext
    ) -> int:
        """Validate a query's SKU and consistency option; wait for the read model to include
        `min_stream_version` of the SKU's ledger. Returns the version it includes."""
        v = Validator()
        check_sku(v, sku)
        v.check(min_stream_version >= 0, "min_stream_version", "must not be negative")
        v.raise_if_invalid()
        if min_stream_version == 0:
            return await queries.projected_version(self.store.pool, sku)
        remaining = context.time_remaining()
        # Leave time to answer before the caller's deadline; without one, wait a bounded time.
        within = READ_YOUR_WRITES_WAIT_S if remaining is None else max(0.0, remaining - 0.05)
        return await queries.wait_for_version(
            self.store.pool, self.store, sku, min_stream_version, min(within, MAX_WAIT_S)
        )

    async def GetStock(
        self, request: pb.GetStockRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStockResponse:
        version = await self._caught_up(request.sku, request.min_stream_version, context)
        rows = await queries.stock_of(self.store.pool, request.sku)
        return pb.GetStockResponse(
            sku=request.sku,
            available=sum(r.available for r in rows),
            backordered=await queries.backordered(self.store.pool, request.sku),
            stream_version=max([version, *(r.version for r in rows)]),
            warehouses=[
                pb.WarehouseStock(
                    warehouse_id=r.warehouse_id,
                    on_hand=r.on_hand,
                    reserved=r.reserved,
                    safety_hold=r.safety_hold,
                    available=r.available,
                )
                for r in rows
            ],
        )

    async def GetOrderHolds(
        self, request: pb.GetOrderHoldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderHoldsResponse:
        v = Validator()
        _check_channel(v, request.channel)
        _check_id(v, request.channel_order_id, "channel_order_id")
        v.raise_if_invalid()
        parts = await queries.holds_of_order(
            self.store.pool, request.channel, request.channel_order_id
        )
        return pb.GetOrderHoldsResponse(held=_reserved_parts(parts))

    async def GetChannelQuantities(
        self, request: pb.GetChannelQuantitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetChannelQuantitiesResponse:
        await self._caught_up(request.sku, request.min_stream_version, context)
        quantities = await queries.channel_quantities_of(self.store.pool, request.sku)
        return pb.GetChannelQuantitiesResponse(
            quantities=[
                ev.ChannelQuantityChanged(sku=request.sku, channel=channel, quantity=quantity)  # type: ignore[arg-type]
                for channel, quantity in quantities.items()
            ]
        )

    async def GetHistory(
        self, request: pb.GetHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHistoryResponse:
        v = Validator()
        check_sku(v, request.sku)
        v.check(request.from_version >= 0, "from_version", "must not be negative")
        v.check(0 <= request.limit <= 1000, "limit", "must be between 0 (default 100) and 1000")
        v.raise_if_invalid()
        events = await queries.history_of(
            self.store, request.sku, request.from_version, request.limit or 100
        )
        entries = []
        for event in events:
            recorded_at = Timestamp()
            recorded_at.FromDatetime(event.recorded_at)
            entries.append(
                pb.HistoryEntry(
                    stream_version=event.stream_version,
                    type=event.type,
                    data_json=json.dumps(json_format.MessageToDict(event.decode()), sort_keys=True),
                    recorded_at=recorded_at,
                )
            )
        return pb.GetHistoryResponse(entries=entries)

    async def Rebuild(
        self, request: pb.RebuildRequest, context: grpc.aio.ServicerContext
    ) -> pb.RebuildResponse:
        name = self.read_model.projection.name
        if request.projection not in ("", name):
            raise InvalidArgument.single(
                "projection", f"unknown projection; this service has {name!r}"
            )
        return pb.RebuildResponse(events_applied=await self.read_model.rebuild())

    async def GetSyncState(
        self, request: pb.GetSyncStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSyncStateResponse:
        v = Validator()
        v.check(request.channel in Channel.values(), "channel", "unknown channel")
        if request.sku:
            check_sku(v, request.sku)
        v.raise_if_invalid()
        states = await queries.sync_states(self.store.pool, request.channel, request.sku)
        return pb.GetSyncStateResponse(states=[_sync_state(state, request.sku) for state in states])

    async def GetChannelStatus(
        self, request: pb.GetChannelStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetChannelStatusResponse:
        counts = await queries.listing_counts(self.store.pool)
        connected = set(self.sync.clients) if self.sync is not None else set()
        response = pb.GetChannelStatusResponse()
        for channel in sorted(connected | counts.keys()):
            listed = counts.get(channel, queries.ListingCounts(0, 0, 0, 0, 0))
            status = response.channels.add(
                channel=channel,
                listings=listed.listings,
                in_sync=listed.in_sync,
                pending=listed.pending,
                failing=listed.failing,
                dead_lettered=listed.dead_lettered,
                recent_errors=[
                    _sync_state(state, "")
                    for state in await queries.recent_errors(self.store.pool, channel, 5)
                ],
            )
            if self.sync is not None and channel in connected:
                figures = self.sync.call_figures(channel)
                status.rate_limit_per_second = figures.rate_limit_per_second
                status.rate_limit_unit = figures.rate_limit_unit
                status.calls_ok_last_minute = figures.ok
                status.calls_retried_last_minute = figures.retried
                status.calls_refused_last_minute = figures.refused
                status.backoff_seconds = figures.backoff_seconds
                if figures.paused_until is not None:
                    status.paused_until.CopyFrom(timestamp(figures.paused_until))
        return response


def _sync_state(state: queries.SyncState, sku: str) -> pb.ChannelSyncState:
    item = pb.ChannelSyncState(
        channel=state.channel,  # type: ignore[arg-type]
        sku=sku if state.catalogued else state.listing,
        listing=state.listing,
        skus=state.skus,
        desired_quantity=state.desired_quantity,
        last_sent_quantity=state.last_sent_quantity or 0,
        last_confirmed_quantity=state.last_confirmed_quantity or 0,
        consecutive_failures=state.consecutive_failures,
        last_error=state.last_error,
        dead_lettered=state.dead_lettered,
    )
    if state.last_confirmed_at:
        item.last_confirmed_at.CopyFrom(timestamp(state.last_confirmed_at))
    if state.last_reconciled_at:
        item.last_reconciled_at.CopyFrom(timestamp(state.last_reconciled_at))
    return item


def _require_sku(sku: str) -> None:
    v = Validator()
    check_sku(v, sku)
    v.raise_if_invalid()
