"""Each page's data, assembled from the services' gRPC APIs: the calls a page needs run
concurrently, and each section carries its own value or its own error, so one service down
blanks its sections only, with the reason, never the page."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.console.adapters.peers import Peers
from pulsestock.console.domain.charts import (
    FanPoint,
    HourPoint,
    MinutePoint,
    PulseMark,
    Svg,
    forecast_fan_chart,
    heat_orders_chart,
    live_chart,
)
from pulsestock.console.domain.errors import ServiceError
from pulsestock.console.domain.views import (
    HeatRow,
    RawRanked,
    active_pulses,
    channel_label,
    format_age,
    po_status_label,
    rank,
)
from pulsestock.v1 import fulfillment_pb2, signal_pb2
from pulsestock.v1.common_pb2 import Channel

T = TypeVar("T")
FORECAST_HOURS = 48
AUDIT_ENTRIES = 50
PO_DETAILS = 10
# Ordered from the supplier and not yet here: "in transit" to their warehouse.
IN_TRANSIT = {
    fulfillment_pb2.PURCHASE_ORDER_STATUS_SUBMITTED,
    fulfillment_pb2.PURCHASE_ORDER_STATUS_CONFIRMED,
    fulfillment_pb2.PURCHASE_ORDER_STATUS_PARTIALLY_RECEIVED,
}
OPEN = {*IN_TRANSIT, fulfillment_pb2.PURCHASE_ORDER_STATUS_DRAFT}


@dataclass(frozen=True)
class Section(Generic[T]):
    value: T | None = None
    error: ServiceError | None = None


async def attempt(call: Awaitable[T]) -> Section[T]:
    try:
        return Section(await call)
    except ServiceError as error:
        return Section(error=error)


def _when(stamp: Timestamp) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def raw_ranked(item: signal_pb2.RankedSku) -> RawRanked:
    pulse = item.pulse if item.HasField("pulse") else None
    return RawRanked(
        sku=item.heat.sku,
        heat=item.heat.heat,
        view_velocity=item.heat.view_velocity,
        like_rate=item.heat.like_rate,
        share_rate=item.heat.share_rate,
        as_of=_when(item.heat.as_of),
        pulse_id=pulse.pulse_id if pulse else "",
        phase=item.phase,
        peak_heat=item.peak_heat,
        detected_at=_when(pulse.detected_at) if pulse else None,
        hot_channel=pulse.hot_channel if pulse else "",
        evidence=tuple((e.source, e.description, dict(e.metrics)) for e in pulse.evidence)
        if pulse
        else (),
        video_ids=tuple(pulse.video_ids) if pulse else (),
    )


# --- Now ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NowPage:
    rows: Section[list[HeatRow]]
    pulses: list[HeatRow]
    total: int
    limit: int
    generated_at: datetime


# --- SKU ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarehouseRow:
    warehouse_id: str
    on_hand: int
    reserved: int
    safety_hold: int
    available: int
    in_transit: int  # open purchase orders' units not received yet


@dataclass(frozen=True)
class StockView:
    warehouses: list[WarehouseRow]
    available: int
    backordered: int
    version: int


@dataclass(frozen=True)
class ListingRow:
    channel: str
    listing: str
    skus: list[str]
    desired: int
    last_sent: int
    confirmed: int
    confirmed_at: datetime | None
    failures: int
    last_error: str
    dead_lettered: bool

    @property
    def state(self) -> str:
        if self.dead_lettered:
            return "dead-lettered"
        if self.failures:
            return "retrying"
        return "in sync" if self.desired == self.confirmed else "pending"


@dataclass(frozen=True)
class OptionRow:
    supplier_id: str
    mode: str
    quantity: int
    window_start: datetime | None
    window_end: datetime | None
    need: list[tuple[str, float]]  # ("p10", value)
    inventory_position: float
    expected_lost_margin: float
    expected_leftover_cost: float
    unit_cost: float
    reason: str
    chosen: bool


@dataclass(frozen=True)
class RecommendationView:
    recommendation_id: str
    warehouse_id: str
    quantity: int
    supplier_id: str
    mode: str
    order_by: datetime | None
    reviewed_at: datetime | None
    trigger: str
    rationale: str
    forecast_model: str
    forecast_as_of: datetime | None
    options: list[OptionRow]

    @property
    def approvable(self) -> bool:
        return self.quantity > 0


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    at: datetime | None
    lines: list[tuple[str, int]]


@dataclass(frozen=True)
class PurchaseOrderView:
    purchase_order_id: str
    supplier_id: str
    warehouse_id: str
    status: str
    lines: list[tuple[str, int, int, int]]  # sku, ordered, received, open
    expected_at: datetime | None
    created_at: datetime | None
    in_transit: bool = False  # ordered from the supplier, not all received yet
    receipts: list[Receipt] = field(default_factory=list)
    receipts_error: ServiceError | None = None


@dataclass(frozen=True)
class AuditEntry:
    version: int
    type: str
    at: datetime | None
    data: str


@dataclass(frozen=True)
class ForecastSummary:
    model: str
    as_of: datetime | None
    horizon_hours: int
    horizon_mean: float
    horizon_quantiles: list[tuple[str, float]]
    coverage_80: float
    history_hours: int


@dataclass(frozen=True)
class SkuPage:
    sku: str
    heat: Section[HeatRow | None]
    heat_chart: Section[Svg]
    forecast_chart: Section[Svg]
    forecast: Section[ForecastSummary]
    stock: Section[StockView]
    listings: Section[list[ListingRow]]
    recommendations: Section[list[RecommendationView]]
    orders: Section[list[PurchaseOrderView]]
    audit: Section[list[AuditEntry]]
    generated_at: datetime


# --- Channels and Live ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelRow:
    channel: str
    rate_limit: float
    rate_unit: str
    calls_ok: int
    calls_retried: int
    calls_refused: int
    backoff_seconds: float
    paused_until: datetime | None
    listings: int
    in_sync: int
    pending: int
    failing: int
    dead_lettered: int
    errors: list[ListingRow]

    @property
    def calls_per_minute(self) -> int:
        return self.calls_ok + self.calls_retried + self.calls_refused

    @property
    def limit_per_minute(self) -> float:
        return self.rate_limit * 60

    @property
    def state(self) -> str:
        if self.dead_lettered or self.failing:
            return "attention"
        if self.pending or self.paused_until is not None:
            return "catching up"
        return "in sync"


@dataclass(frozen=True)
class ChannelsPage:
    channels: Section[list[ChannelRow]]
    generated_at: datetime


@dataclass(frozen=True)
class LiveSessionRow:
    live_id: str
    first_sample_at: datetime | None
    last_sample_at: datetime | None
    samples: int
    orders_so_far: float
    viewers: float


@dataclass(frozen=True)
class LiveDetail:
    live_id: str
    model: str
    minutes_observed: int
    orders_so_far: float
    expected_orders: float
    p10: float
    p50: float
    p90: float
    expected_length_minutes: float
    chart: Svg
    minutes: list[MinutePoint]


@dataclass(frozen=True)
class LivePage:
    sessions: Section[list[LiveSessionRow]]
    selected: str
    detail: Section[LiveDetail] | None
    generated_at: datetime


def _level(q: float) -> str:
    return f"p{round(q * 100):d}"


def _listing_row(state: Any) -> ListingRow:
    return ListingRow(
        channel=channel_label(Channel.Name(state.channel)),
        listing=state.listing or state.sku,
        skus=list(state.skus),
        desired=state.desired_quantity,
        last_sent=state.last_sent_quantity,
        confirmed=state.last_confirmed_quantity,
        confirmed_at=_when(state.last_confirmed_at),
        failures=state.consecutive_failures,
        last_error=state.last_error,
        dead_lettered=state.dead_lettered,
    )


class ConsolePages:
    def __init__(self, peers: Peers, clock: Callable[[], datetime], rank_limit: int) -> None:
        self.peers = peers
        self.clock = clock
        self.rank_limit = rank_limit

    async def now(self, limit: int | None = None) -> NowPage:
        limit = limit or self.rank_limit
        now = self.clock()
        ranked = await attempt(self.peers.rank_heat(limit))
        if ranked.value is None:
            return NowPage(Section(error=ranked.error), [], 0, limit, now)
        rows = rank([raw_ranked(item) for item in ranked.value.skus], now)
        return NowPage(Section(rows), active_pulses(rows), ranked.value.total, limit, now)

    # --- SKU ------------------------------------------------------------------------------

    async def sku(self, sku: str) -> SkuPage:
        now = self.clock()
        # Every call at once; each section keeps its own answer or error.
        heat_call = asyncio.create_task(attempt(self.peers.rank_heat(1, [sku])))
        history_call = asyncio.create_task(attempt(self.peers.demand_history(sku)))
        forecast_call = asyncio.create_task(attempt(self.peers.forecast_of(sku, FORECAST_HOURS)))
        stock_call = asyncio.create_task(attempt(self.peers.stock(sku)))
        sync_call = asyncio.create_task(attempt(self.peers.sync_state(sku)))
        plan_call = asyncio.create_task(attempt(self.peers.replenishment_plan(sku)))
        orders_call = asyncio.create_task(attempt(self.peers.purchase_orders(sku)))
        heat, history, forecast = await heat_call, await history_call, await forecast_call
        stock, sync, plan, orders = (
            await stock_call,
            await sync_call,
            await plan_call,
            await orders_call,
        )
        order_views = await self._orders(orders)
        audit = await self._audit(sku, stock)
        return SkuPage(
            sku=sku,
            heat=self._heat(heat, now),
            heat_chart=self._heat_chart(sku, history, now),
            forecast_chart=self._forecast_chart(sku, forecast, history, now),
            forecast=self._forecast(forecast),
            stock=self._stock(stock, order_views),
            listings=Section([_listing_row(s) for s in sync.value.states])
            if sync.value is not None
            else Section(error=sync.error),
            recommendations=Section([self._recommendation(r) for r in plan.value.recommendations])
            if plan.value is not None
            else Section(error=plan.error),
            orders=order_views,
            audit=audit,
            generated_at=now,
        )

    def _heat(self, heat: Section[Any], now: datetime) -> Section[HeatRow | None]:
        if heat.value is None:
            return Section(error=heat.error)
        rows = rank([raw_ranked(item) for item in heat.value.skus], now)
        return Section(rows[0] if rows else None)

    def _heat_chart(self, sku: str, history: Section[Any], now: datetime) -> Section[Svg]:
        if history.value is None:
            return Section(error=history.error)
        hours = [
            HourPoint(h.hour.ToDatetime(tzinfo=UTC), h.orders, h.heat if h.has_heat else None)
            for h in history.value.hours
        ]
        pulses = [
            PulseMark(
                p.pulse_id,
                p.detected_at.ToDatetime(tzinfo=UTC),
                _when(p.ended_at),
            )
            for p in history.value.pulses
        ]
        return Section(heat_orders_chart(hours, pulses, sku, now))

    def _forecast_chart(
        self, sku: str, forecast: Section[Any], history: Section[Any], now: datetime
    ) -> Section[Svg]:
        if forecast.value is None:
            return Section(error=forecast.error)
        fan = []
        for point in forecast.value.forecast.points:
            levels = {round(q.q, 3): q.value for q in point.quantiles}
            fan.append(
                FanPoint(
                    point.period_start.ToDatetime(tzinfo=UTC),
                    levels.get(0.1, point.mean),
                    levels.get(0.5, point.mean),
                    levels.get(0.9, point.mean),
                )
            )
        actuals = []
        if history.value is not None:
            # The last day of actuals before the fan, and those the fan's hours already have.
            recent = list(history.value.hours)[-24:]
            actuals = [HourPoint(h.hour.ToDatetime(tzinfo=UTC), h.orders, None) for h in recent]
        return Section(forecast_fan_chart(fan, actuals, sku, now))

    def _forecast(self, forecast: Section[Any]) -> Section[ForecastSummary]:
        if forecast.value is None:
            return Section(error=forecast.error)
        f = forecast.value.forecast
        return Section(
            ForecastSummary(
                model=f.model,
                as_of=_when(f.as_of),
                horizon_hours=len(f.points),
                horizon_mean=f.horizon_mean,
                horizon_quantiles=[(_level(q.q), q.value) for q in f.horizon_quantiles],
                coverage_80=forecast.value.accuracy.coverage_80,
                history_hours=forecast.value.history_hours,
            )
        )

    def _stock(
        self, stock: Section[Any], orders: Section[list[PurchaseOrderView]]
    ) -> Section[StockView]:
        if stock.value is None:
            return Section(error=stock.error)
        transit: dict[str, int] = {}
        sku = stock.value.sku
        for po in orders.value or []:
            if po.in_transit:
                for line_sku, _, _, still_open in po.lines:
                    if line_sku == sku:
                        transit[po.warehouse_id] = transit.get(po.warehouse_id, 0) + still_open
        rows = [
            WarehouseRow(
                w.warehouse_id,
                w.on_hand,
                w.reserved,
                w.safety_hold,
                w.available,
                transit.pop(w.warehouse_id, 0),
            )
            for w in stock.value.warehouses
        ]
        rows += [WarehouseRow(wh, 0, 0, 0, 0, units) for wh, units in sorted(transit.items())]
        return Section(
            StockView(
                rows, stock.value.available, stock.value.backordered, stock.value.stream_version
            )
        )

    def _recommendation(self, r: Any) -> RecommendationView:
        options = [
            OptionRow(
                supplier_id=o.supplier_id,
                mode=o.mode,
                quantity=o.quantity,
                window_start=_when(o.window.start),
                window_end=_when(o.window.end),
                need=[(_level(q.q), q.value) for q in o.need_quantiles],
                inventory_position=o.inventory_position,
                expected_lost_margin=o.expected_lost_margin,
                expected_leftover_cost=o.expected_leftover_cost,
                unit_cost=o.unit_cost,
                reason=o.reason,
                chosen=o.quantity > 0 and o.supplier_id == r.supplier_id and o.mode == r.mode,
            )
            for o in r.options
        ]
        return RecommendationView(
            recommendation_id=r.recommendation_id,
            warehouse_id=r.warehouse_id,
            quantity=r.quantity,
            supplier_id=r.supplier_id,
            mode=r.mode,
            order_by=_when(r.order_by),
            reviewed_at=_when(r.reviewed_at),
            trigger=r.trigger,
            rationale=r.rationale,
            forecast_model=r.forecast_model,
            forecast_as_of=_when(r.forecast_as_of),
            options=options,
        )

    async def _orders(self, listed: Section[Any]) -> Section[list[PurchaseOrderView]]:
        if listed.value is None:
            return Section(error=listed.error)
        orders = sorted(
            listed.value.purchase_orders,
            key=lambda po: (po.status not in OPEN, -po.created_at.seconds),
        )
        details = await asyncio.gather(
            *(
                attempt(self.peers.purchase_order(po.purchase_order_id))
                for po in orders[:PO_DETAILS]
            )
        )
        views = []
        for index, po in enumerate(orders):
            receipts: list[Receipt] = []
            error = None
            if index < len(details):
                detail = details[index]
                if detail.value is None:
                    error = detail.error
                else:
                    receipts = [
                        _receipt(entry)
                        for entry in detail.value.history
                        if entry.type.endswith("PurchaseOrderReceived")
                    ]
            views.append(
                PurchaseOrderView(
                    purchase_order_id=po.purchase_order_id,
                    supplier_id=po.supplier_id,
                    warehouse_id=po.warehouse_id,
                    status=po_status_label(fulfillment_pb2.PurchaseOrderStatus.Name(po.status)),
                    lines=[(line.sku, line.ordered, line.received, line.open) for line in po.lines],
                    expected_at=_when(po.expected_at),
                    created_at=_when(po.created_at),
                    in_transit=po.status in IN_TRANSIT,
                    receipts=receipts,
                    receipts_error=error,
                )
            )
        return Section(views)

    async def _audit(self, sku: str, stock: Section[Any]) -> Section[list[AuditEntry]]:
        """The SKU's ledger events, newest first (the last AUDIT_ENTRIES of its stream)."""
        if stock.value is None:
            return Section(error=stock.error)
        head = stock.value.stream_version
        if head <= 0:
            return Section([])
        first = max(1, head - AUDIT_ENTRIES + 1)
        read = await attempt(self.peers.history(sku, first, AUDIT_ENTRIES))
        if read.value is None:
            return Section(error=read.error)
        return Section(
            [
                AuditEntry(
                    e.stream_version,
                    e.type.rsplit(".", 1)[-1],
                    _when(e.recorded_at),
                    _compact(e.data_json),
                )
                for e in reversed(read.value.entries)
            ]
        )

    async def approve(self, recommendation_id: str) -> str:
        """The purchase order the recommendation became (the same one however often)."""
        reply = await self.peers.approve(recommendation_id)
        return str(reply.purchase_order_id)

    # --- Channels and Live ----------------------------------------------------------------

    async def channels(self) -> ChannelsPage:
        now = self.clock()
        status = await attempt(self.peers.channel_status())
        if status.value is None:
            return ChannelsPage(Section(error=status.error), now)
        rows = [
            ChannelRow(
                channel=channel_label(Channel.Name(c.channel)),
                rate_limit=c.rate_limit_per_second,
                rate_unit=c.rate_limit_unit or "calls",
                calls_ok=c.calls_ok_last_minute,
                calls_retried=c.calls_retried_last_minute,
                calls_refused=c.calls_refused_last_minute,
                backoff_seconds=c.backoff_seconds,
                paused_until=_when(c.paused_until),
                listings=c.listings,
                in_sync=c.in_sync,
                pending=c.pending,
                failing=c.failing,
                dead_lettered=c.dead_lettered,
                errors=[_listing_row(s) for s in c.recent_errors],
            )
            for c in status.value.channels
        ]
        return ChannelsPage(Section(rows), now)

    async def live(self, live_id: str = "") -> LivePage:
        now = self.clock()
        listed = await attempt(self.peers.live_sessions(50))
        sessions: Section[list[LiveSessionRow]]
        if listed.value is None:
            sessions = Section(error=listed.error)
        else:
            sessions = Section(
                [
                    LiveSessionRow(
                        s.live_id,
                        _when(s.first_sample_at),
                        _when(s.last_sample_at),
                        s.samples,
                        s.orders_so_far,
                        s.viewers,
                    )
                    for s in listed.value.sessions
                ]
            )
        selected = live_id or (sessions.value[0].live_id if sessions.value else "")
        detail = await self._live_detail(selected) if selected else None
        return LivePage(sessions, selected, detail, now)

    async def _live_detail(self, live_id: str) -> Section[LiveDetail]:
        read = await attempt(self.peers.live_forecast(live_id))
        if read.value is None:
            return Section(error=read.error)
        r = read.value
        minutes = [MinutePoint(m.viewers, m.interactions, m.orders) for m in r.minutes]
        return Section(
            LiveDetail(
                live_id=r.live_id,
                model=r.model,
                minutes_observed=r.minutes_observed,
                orders_so_far=r.orders_so_far,
                expected_orders=r.expected_orders,
                p10=r.p10,
                p50=r.p50,
                p90=r.p90,
                expected_length_minutes=r.expected_length_minutes,
                chart=live_chart(
                    minutes, r.p10, r.p50, r.p90, r.expected_length_minutes, r.live_id
                ),
                minutes=minutes,
            )
        )


def _receipt(entry: Any) -> Receipt:
    try:
        data = json.loads(entry.data_json)
    except ValueError:
        data = {}
    lines = [
        (str(line.get("sku", "")), int(line.get("quantity", 0)))
        for line in data.get("lines", [])
        if isinstance(line, dict)
    ]
    return Receipt(str(data.get("receiptId", "")), _when(entry.recorded_at), lines)


def _compact(data_json: str) -> str:
    """An event's JSON on one line, keys sorted (already so), for the audit trail."""
    try:
        return json.dumps(json.loads(data_json), separators=(", ", ": "), sort_keys=True)
    except ValueError:
        return data_json


def age_since(moment: datetime | None, now: datetime) -> str:
    if moment is None or not math.isfinite(moment.timestamp()):
        return "—"
    return format_age((now - moment).total_seconds())
