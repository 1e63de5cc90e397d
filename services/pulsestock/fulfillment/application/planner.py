"""The replenishment planner: reviews a SKU when its forecast moves (forecast.updated marks
it due) and on its schedule (hourly while a pulse is on, daily otherwise), runs the domain's
review on the forecast service's demand quantiles and inventory-sync's stock, and records a
ReplenishmentRecommended with every option's reasons. Approving one creates draft purchase
orders (automatically for SKUs set to auto-approve).

The inventory position counts open purchase orders at the hour they are expected to land
(their `expected_at`; one without it counts as landing at once, the seller having said nothing
else), so a far-future order never covers demand before it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from pulsestock.bus import Envelope
from pulsestock.clock import Clock, time_range
from pulsestock.errors import FieldViolation, InvalidArgument, NotFound, PreconditionFailed
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.fulfillment.adapters.forecast_client import ForecastClient
from pulsestock.fulfillment.adapters.inventory_sync_client import (
    InventorySyncClient,
    StockUnavailable,
)
from pulsestock.fulfillment.application.master_records import MasterRecords, economics_of
from pulsestock.fulfillment.application.purchase_orders import PurchaseOrders
from pulsestock.fulfillment.domain.purchase_orders import PoStatus, PurchaseOrder
from pulsestock.fulfillment.domain.replenishment import (
    Recommendation,
    ReviewSettings,
    StockPosition,
    review,
)
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.telemetry import get_logger
from pulsestock.v1 import forecast_events_pb2 as fev
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1.common_pb2 import OrderLine, Quantile

log = get_logger(__name__)
HOUR = timedelta(hours=1)
OPEN_STATUSES = (
    PoStatus.DRAFT,
    PoStatus.SUBMITTED,
    PoStatus.CONFIRMED,
    PoStatus.PARTIALLY_RECEIVED,
)
# A forecast is "in a pulse" until its mean falls back to within this factor of its tail.
PULSE_OVER_FACTOR = 1.5


@dataclass(frozen=True)
class PlannerSettings:
    outlook_hours: int = 1440  # how far the forecast is read (lead time + coverage)
    pulse_review: timedelta = timedelta(hours=1)
    quiet_review: timedelta = timedelta(days=1)
    poll_seconds: float = 1.0


def stream_of(sku: str) -> str:
    return f"replenishment-{sku}"


class ServiceOutlook:
    """The domain's DemandOutlook over the forecast service. `review` is synchronous and
    runs in a worker thread; each window it asks for is fetched on the service's event loop
    (and remembered for the rest of the review)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        forecasts: ForecastClient,
        sku: str,
        first_hour: datetime,
        means: Sequence[float],
        pulse_on: bool,
    ) -> None:
        self.loop, self.forecasts, self.sku, self.first_hour = loop, forecasts, sku, first_hour
        tail = list(means[-24:]) or [0.0]
        self._tail_rate = sum(tail) / len(tail)
        self._pulse_end = 0
        if pulse_on:
            threshold = PULSE_OVER_FACTOR * self._tail_rate + 1e-3
            above = [step for step, mean in enumerate(means) if mean > threshold]
            self._pulse_end = above[-1] + 1 if above else 0
        self._cache: dict[tuple[int, int, tuple[float, ...]], list[float]] = {}

    def tail_rate(self) -> float:
        return self._tail_rate

    def pulse_end(self) -> int:
        return self._pulse_end

    def window_quantiles(self, start: int, end: int, levels: Sequence[float]) -> list[float]:
        key = (start, end, tuple(levels))
        if key not in self._cache:
            call = self.forecasts.window_quantiles(
                self.sku,
                self.first_hour + start * HOUR,
                self.first_hour + end * HOUR,
                levels,
            )
            future: Future[list[float]] = asyncio.run_coroutine_threadsafe(call, self.loop)
            self._cache[key] = future.result()
        return self._cache[key]


class ReplenishmentPlanner:
    def __init__(
        self,
        store: EventStore,
        master: MasterRecords,
        orders: PurchaseOrders,
        forecasts: ForecastClient,
        inventory: InventorySyncClient,
        clock: Clock,
        settings: PlannerSettings | None = None,
    ) -> None:
        self.store, self.master, self.orders = store, master, orders
        self.forecasts, self.inventory, self.clock = forecasts, inventory, clock
        self.settings = settings or PlannerSettings()

    # -- inputs ------------------------------------------------------------------------

    async def mark_due(self, conn: asyncpg.Connection, envelope: Envelope) -> None:
        """forecast.updated: the SKU's next review is due now."""
        update = fev.ForecastUpdated.FromString(envelope.data)
        await conn.execute(
            "INSERT INTO replenishment_reviews (sku, due, pulse_on, trigger)"
            " VALUES ($1, true, $2, 'forecast_updated') ON CONFLICT (sku) DO UPDATE"
            " SET due = true, pulse_on = excluded.pulse_on, trigger = excluded.trigger",
            update.sku,
            bool(update.pulse_id),
        )

    async def _position(self, sku: str, warehouse_id: str, anchor: datetime) -> StockPosition:
        """Stock now, and open orders at their landing hour counted from `anchor` (the
        outlook's step 0, so an order placed for a window lands in that window)."""
        stock = await self.inventory.stock(sku)
        level = next((w for w in stock.warehouses if w.warehouse_id == warehouse_id), None)
        on_hand = float(level.on_hand) if level else 0.0
        committed = float(level.reserved) if level else 0.0
        on_order: list[tuple[float, float]] = []
        for po in await self._open_orders(sku, warehouse_id):
            landing = (
                po.expected_at.ToDatetime(tzinfo=UTC) if po.HasField("expected_at") else anchor
            )
            hours = max((landing - anchor) / HOUR, 0.0)
            on_order.extend((hours, float(line.open)) for line in po.lines if line.sku == sku)
        return StockPosition(
            on_hand, min(committed, on_hand), tuple(on_order), float(stock.backordered)
        )

    async def _open_orders(self, sku: str, warehouse_id: str) -> list[pb.PurchaseOrder]:
        """Open purchase orders of the SKU into the warehouse, as the read model has them
        (written with each order's events)."""
        rows = await self.store.pool.fetch(
            "SELECT state FROM purchase_orders WHERE skus @> ARRAY[$1::text]"
            " AND warehouse_id = $2 AND status = ANY($3::int[])",
            sku,
            warehouse_id,
            [status.value for status in OPEN_STATUSES],
        )
        return [pb.PurchaseOrder.FromString(row["state"]) for row in rows]

    # -- the review ----------------------------------------------------------------------

    async def review(self, sku: str, trigger: str) -> ev.ReplenishmentRecommended:
        if not valid_id(sku):
            raise InvalidArgument([FieldViolation("sku", ID_RULE)])
        data = await self.master.load()
        profile = data.skus.get(sku)
        if profile is None:
            raise PreconditionFailed(f"{sku} has no economics: set them with SetSkuEconomics")
        options = data.options_for(sku)
        if not options:
            raise PreconditionFailed(
                f"no supplier option of {sku} delivers to {profile.warehouse_id}"
            )
        now = self.clock()
        forecast = (await self.forecasts.forecast(sku, self.settings.outlook_hours)).forecast
        first_hour = (
            forecast.points[0].period_start.ToDatetime(tzinfo=UTC)
            if forecast.points
            else now.replace(minute=0, second=0, microsecond=0) + HOUR
        )
        pulse_on = bool(forecast.pulse_id)
        outlook = ServiceOutlook(
            asyncio.get_running_loop(),
            self.forecasts,
            sku,
            first_hour,
            [point.mean for point in forecast.points],
            pulse_on,
        )
        position = await self._position(sku, profile.warehouse_id, first_hour)
        review_every = self.settings.pulse_review if pulse_on else self.settings.quiet_review
        settings = ReviewSettings(review_hours=max(1, int(review_every / HOUR)))
        decided = await asyncio.to_thread(
            review, economics_of(profile), options, outlook, position, now, settings
        )
        event = self._event(decided, profile.warehouse_id, first_hour, now, trigger, forecast)
        await self._record(event, pulse_on)
        if profile.auto_approve and event.quantity > 0:
            await self.approve(event.recommendation_id)
        return event

    def _event(
        self,
        decided: Recommendation,
        warehouse_id: str,
        first_hour: datetime,
        now: datetime,
        trigger: str,
        forecast: fev.ForecastUpdated,
    ) -> ev.ReplenishmentRecommended:
        chosen = decided.chosen
        event = ev.ReplenishmentRecommended(
            sku=decided.sku,
            warehouse_id=warehouse_id,
            quantity=chosen.quantity if chosen else 0,
            recommendation_id=str(uuid.uuid4()),
            trigger=trigger,
            supplier_id=chosen.option.supplier if chosen else "",
            mode=chosen.option.mode if chosen else "",
            forecast_model=forecast.model,
            rationale=chosen.reason
            if chosen
            else "; ".join(f"{d.option.label}: {d.reason}" for d in decided.decisions),
        )
        event.reviewed_at.FromDatetime(now)
        event.order_by.FromDatetime(now)
        if forecast.HasField("as_of"):
            event.forecast_as_of.CopyFrom(forecast.as_of)
        for decision in decided.decisions:
            start, end = decision.window
            event.options.append(
                ev.OptionConsidered(
                    supplier_id=decision.option.supplier,
                    mode=decision.option.mode,
                    quantity=decision.quantity,
                    window=time_range(first_hour + start * HOUR, first_hour + end * HOUR),
                    need_quantiles=[
                        Quantile(q=q, value=v)
                        for q, v in zip(decision.levels, decision.need_quantiles, strict=False)
                    ],
                    inventory_position=decision.position,
                    expected_lost_margin=decision.expected_lost_margin,
                    expected_leftover_cost=decision.expected_leftover_cost,
                    reason=decision.reason,
                    unit_cost=decision.option.unit_cost,
                )
            )
        return event

    async def _record(self, event: ev.ReplenishmentRecommended, pulse_on: bool) -> None:
        stream = stream_of(event.sku)
        async with self.store.pool.acquire() as conn, conn.transaction():
            version = await self.store.stream_version(stream, conn=conn)
            await self.store.append(stream, version, [NewEvent.of(event)], conn=conn)
            await conn.execute(
                "INSERT INTO recommendations (recommendation_id, sku, reviewed_at, data)"
                " VALUES ($1, $2, $3, $4)",
                event.recommendation_id,
                event.sku,
                event.reviewed_at.ToDatetime(tzinfo=UTC),
                event.SerializeToString(deterministic=True),
            )
            await conn.execute(
                "INSERT INTO replenishment_reviews (sku, due, pulse_on, last_review_at, trigger)"
                " VALUES ($1, false, $2, $3, $4) ON CONFLICT (sku) DO UPDATE SET due = false,"
                " pulse_on = excluded.pulse_on, last_review_at = excluded.last_review_at",
                event.sku,
                pulse_on,
                event.reviewed_at.ToDatetime(tzinfo=UTC),
                event.trigger,
            )

    # -- queries and approval ------------------------------------------------------------

    async def plan(self, sku: str) -> list[ev.ReplenishmentRecommended]:
        """The SKU's latest recommendation (empty before its first review)."""
        if not valid_id(sku):
            raise InvalidArgument([FieldViolation("sku", ID_RULE)])
        row = await self.store.pool.fetchrow(
            "SELECT data FROM recommendations WHERE sku = $1 ORDER BY reviewed_at DESC LIMIT 1",
            sku,
        )
        return [ev.ReplenishmentRecommended.FromString(row["data"])] if row else []

    async def approve(self, recommendation_id: str) -> PurchaseOrder:
        """Draft purchase orders for every option the recommendation orders from (one per
        option, their ids derived from the recommendation's, so approving twice creates
        nothing more). A recommendation a later review superseded is refused."""
        if not valid_id(recommendation_id):
            raise InvalidArgument([FieldViolation("recommendation_id", ID_RULE)])
        row = await self.store.pool.fetchrow(
            "SELECT r.data, (SELECT max(reviewed_at) FROM recommendations l WHERE l.sku = r.sku)"
            " > r.reviewed_at AS superseded FROM recommendations r WHERE recommendation_id = $1",
            recommendation_id,
        )
        if row is None:
            raise NotFound(f"recommendation {recommendation_id} does not exist")
        event = ev.ReplenishmentRecommended.FromString(row["data"])
        ordering = [option for option in event.options if option.quantity > 0]
        if not ordering:
            raise PreconditionFailed(f"recommendation {recommendation_id} orders nothing")
        if row["superseded"]:
            raise PreconditionFailed(
                f"recommendation {recommendation_id} was superseded by a later review of"
                f" {event.sku}: approve the latest (GetReplenishmentPlan)"
            )
        now = self.clock()
        created: list[PurchaseOrder] = []
        for index, option in enumerate(ordering):
            landing = option.window.start.ToDatetime(tzinfo=UTC)
            created.append(
                await self.orders.create(
                    f"{recommendation_id}.{index}",
                    option.supplier_id,
                    event.warehouse_id,
                    [OrderLine(sku=event.sku, quantity=option.quantity)],
                    max(landing, now),
                    now,
                )
            )
        await self._approved(event, created[0], now)
        return created[0]

    async def _approved(
        self, event: ev.ReplenishmentRecommended, po: PurchaseOrder, now: datetime
    ) -> None:
        async with self.store.pool.acquire() as conn, conn.transaction():
            updated = await conn.execute(
                "UPDATE recommendations SET purchase_order_id = $2"
                " WHERE recommendation_id = $1 AND purchase_order_id IS NULL",
                event.recommendation_id,
                po.purchase_order_id,
            )
            if updated != "UPDATE 1":
                return  # approved before: the same purchase orders, nothing more to record
            stream = stream_of(event.sku)
            version = await self.store.stream_version(stream, conn=conn)
            approved = ev.RecommendationApproved(
                recommendation_id=event.recommendation_id,
                sku=event.sku,
                purchase_order_id=po.purchase_order_id,
            )
            approved.at.FromDatetime(now)
            await self.store.append(stream, version, [NewEvent.of(approved)], conn=conn)

    # -- the schedule --------------------------------------------------------------------

    async def due(self, now: datetime, limit: int = 100) -> list[tuple[str, str]]:
        rows = await self.store.pool.fetch(
            "SELECT sku, CASE WHEN due THEN trigger ELSE 'schedule' END AS trigger"
            " FROM replenishment_reviews WHERE due OR last_review_at IS NULL"
            " OR last_review_at <= $1::timestamptz - (CASE WHEN pulse_on THEN $2::interval"
            " ELSE $3::interval END) ORDER BY last_review_at NULLS FIRST LIMIT $4",
            now,
            self.settings.pulse_review,
            self.settings.quiet_review,
            limit,
        )
        return [(row["sku"], row["trigger"]) for row in rows]

    async def _set_aside(self, sku: str, now: datetime) -> None:
        """A SKU that cannot be reviewed yet (no master data): try again on its schedule."""
        await self.store.pool.execute(
            "UPDATE replenishment_reviews SET due = false, last_review_at = $2 WHERE sku = $1",
            sku,
            now,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Review every due SKU until `stop`; a peer that is down is waited for."""
        backoff = self.settings.poll_seconds
        while not stop.is_set():
            try:
                for sku, trigger in await self.due(self.clock()):
                    if stop.is_set():
                        break
                    try:
                        await self.review(sku, trigger)
                    except PreconditionFailed as refused:
                        log.info("replenishment review skipped", sku=sku, reason=str(refused))
                        await self._set_aside(sku, self.clock())
                backoff = self.settings.poll_seconds
            except (
                StockUnavailable,
                grpc.aio.AioRpcError,  # forecast down or refusing: wait, keep the role alive
                OSError,
                asyncpg.PostgresError,
            ) as error:
                log.warning("replenishment reviews waiting", error=str(error))
                backoff = min(backoff * 2, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
