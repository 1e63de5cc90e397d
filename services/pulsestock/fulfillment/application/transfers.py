"""PlanTransfers and ExecuteTransfer: the pre-positioning rule (domain/transfers.py) over the
forecast service's demand quantiles and pulse, inventory-sync's available stock, the master
data's warehouses and lanes, and the SKU's recent orders by channel and region
(demand_shares.py).

A plan records one TransferPlanned per proposed move (stream `transfers-<sku>` and the
`transfers` table, in one transaction) with its reasons; its transfer_id is derived from what
the plan was made of, so planning again on unchanged inputs proposes the same transfers and
records nothing new. Only the SKU's latest plan may be executed: an older one was decided on
stock and a forecast that have moved since. Executing calls inventory-sync's Transfer keyed
by the transfer (its idempotency key), then records TransferExecuted once: executing twice,
or again after a crash between the two, moves the stock once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import numpy as np
from numpy.typing import NDArray
from pulsestock.clock import Clock, time_range
from pulsestock.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    Unavailable,
)
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.fulfillment.adapters.forecast_client import ForecastClient
from pulsestock.fulfillment.adapters.inventory_sync_client import (
    InventorySyncClient,
    StockRefused,
    StockUnavailable,
)
from pulsestock.fulfillment.application.demand_shares import DemandShares
from pulsestock.fulfillment.application.master_records import (
    MasterData,
    MasterRecords,
    candidate_of,
    economics_of,
)
from pulsestock.fulfillment.domain.master_data import TransferLane
from pulsestock.fulfillment.domain.transfers import (
    Site,
    TransferProposal,
    TransferSettings,
    arrival_hours,
    demand_sites,
    landing_deadline,
    plan_transfers,
)
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.routing import Candidate
from pulsestock.v1 import forecast_events_pb2 as fev
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1.common_pb2 import Quantile

HOUR = timedelta(hours=1)
# Namespace of transfer ids (uuid5 of what a plan was made of).
TRANSFER_NAMESPACE = uuid.UUID("6f1c2a4e-3d1b-5c8e-9a7f-2b4d6e8f0a13")


@dataclass(frozen=True)
class TransferPlannerSettings:
    outlook_hours: int = 1440  # how far the forecast is read (the window end without a pulse)
    coverage_hours: int = 7 * 24  # the destination demand a transfer is planned to serve


def stream_of(sku: str) -> str:
    return f"transfers-{sku}"


def inventory_key(transfer_id: str) -> str:
    """inventory-sync's idempotency key of a transfer: derived from ours, so a retry after a
    crash (or a second ExecuteTransfer) is the same command there."""
    return f"fulfillment.transfer.{transfer_id}"


class PrefetchedOutlook:
    """The domain's DemandOutlook over windows fetched from the forecast service beforehand
    (the rule is synchronous; the windows it asks for are known from the lanes)."""

    def __init__(self, windows: dict[tuple[int, int], NDArray[np.float64]]) -> None:
        self.windows = windows

    def window_quantiles(
        self, start: int, end: int, levels: Sequence[float]
    ) -> NDArray[np.float64]:
        return self.windows[(start, end)]


def peak_step(forecast: fev.ForecastUpdated) -> int | None:
    """The hour (after the first point) of the pulse's highest expected demand; None when no
    pulse is on."""
    if not forecast.pulse_id or not forecast.points:
        return None
    means = [point.mean for point in forecast.points]
    return int(np.argmax(means))


def lanes_of(data: MasterData) -> list[TransferLane]:
    return [
        TransferLane(
            profile.warehouse_id, lane.to_warehouse_id, lane.lead_time_hours, lane.cost_per_unit
        )
        for profile in sorted(data.warehouses.values(), key=lambda p: p.warehouse_id)
        for lane in profile.lanes
    ]


def candidates_of(data: MasterData) -> list[Candidate]:
    return [
        candidate_of(profile)
        for profile in sorted(data.warehouses.values(), key=lambda p: p.warehouse_id)
    ]


class TransferPlanner:
    def __init__(
        self,
        store: EventStore,
        master: MasterRecords,
        shares: DemandShares,
        forecasts: ForecastClient,
        inventory: InventorySyncClient,
        clock: Clock,
        settings: TransferPlannerSettings | None = None,
    ) -> None:
        self.store, self.master, self.shares = store, master, shares
        self.forecasts, self.inventory, self.clock = forecasts, inventory, clock
        self.settings = settings or TransferPlannerSettings()

    # -- planning ------------------------------------------------------------------------

    async def plan(self, sku: str) -> tuple[list[ev.TransferPlanned], list[str]]:
        """The SKU's transfers worth making now, recorded; and one line per lane on why."""
        if not valid_id(sku):
            raise InvalidArgument([FieldViolation("sku", ID_RULE)])
        data = await self.master.load()
        profile = data.skus.get(sku)
        if profile is None:
            raise PreconditionFailed(f"{sku} has no economics: set them with SetSkuEconomics")
        economics = economics_of(profile)
        lanes = lanes_of(data)
        now = self.clock()
        try:
            forecast = (await self.forecasts.forecast(sku, self.settings.outlook_hours)).forecast
            stock = await self.inventory.stock(sku)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"forecast: {error.code().name}: {error.details()}") from error
        except StockUnavailable as error:
            raise Unavailable(f"inventory-sync: {error}") from error
        first_hour = (
            forecast.points[0].period_start.ToDatetime(tzinfo=UTC)
            if forecast.points
            else now.replace(minute=0, second=0, microsecond=0) + HOUR
        )
        peak = peak_step(forecast)
        latest_arrival, land_by_reason = landing_deadline(
            [point.mean for point in forecast.points], bool(forecast.pulse_id)
        )
        available = {level.warehouse_id: int(level.available) for level in stock.warehouses}
        sites = demand_sites(
            economics, await self.shares.buckets(sku), candidates_of(data), available
        )
        settings = TransferSettings(coverage_hours=self.settings.coverage_hours)
        outlook = await self._outlook(sku, first_hour, lanes, latest_arrival, settings)
        decided = plan_transfers(sites, lanes, outlook, latest_arrival, settings)
        events = [
            self._event(sku, proposal, sites, first_hour, now, peak, forecast)
            for proposal in decided.proposals
        ]
        for event in events:
            event.land_by.FromDatetime(first_hour + latest_arrival * HOUR)
            event.reason += f"; lands by {land_by_reason}"
        considered = [
            f"{c.lane.source} -> {c.lane.destination}: {c.reason}" for c in decided.considered
        ]
        for event, proposal in zip(events, decided.proposals, strict=True):
            event.transfer_id = transfer_id_of(sku, proposal, forecast, stock.stream_version)
        recorded = await self._record(sku, events, now)
        return recorded, [*considered, f"land by: {land_by_reason}"]

    async def _outlook(
        self,
        sku: str,
        first_hour: datetime,
        lanes: Sequence[TransferLane],
        latest_arrival: int,
        settings: TransferSettings,
    ) -> PrefetchedOutlook:
        windows: dict[tuple[int, int], NDArray[np.float64]] = {}
        for lane in lanes:
            arrival = arrival_hours(lane)
            if arrival > latest_arrival:
                continue  # the rule does not read a lane landing too late
            end = arrival + settings.coverage_hours
            for window in ((0, end), (arrival, end)):
                if window in windows:
                    continue
                try:
                    values = await self.forecasts.window_quantiles(
                        sku,
                        first_hour + window[0] * HOUR,
                        first_hour + window[1] * HOUR,
                        settings.levels,
                    )
                except grpc.aio.AioRpcError as error:
                    raise Unavailable(
                        f"forecast: {error.code().name}: {error.details()}"
                    ) from error
                windows[window] = np.asarray(values, dtype=np.float64)
        return PrefetchedOutlook(windows)

    def _event(
        self,
        sku: str,
        proposal: TransferProposal,
        sites: Mapping[str, Site],
        first_hour: datetime,
        now: datetime,
        peak: int | None,
        forecast: fev.ForecastUpdated,
    ) -> ev.TransferPlanned:
        lane = proposal.lane
        source, destination = sites[lane.source], sites[lane.destination]
        start, end = proposal.window
        event = ev.TransferPlanned(
            sku=sku,
            from_warehouse_id=lane.source,
            to_warehouse_id=lane.destination,
            quantity=proposal.quantity,
            lead_time_hours=lane.lead_time_hours,
            window=time_range(first_hour + start * HOUR, first_hour + end * HOUR),
            destination_share=destination.share,
            source_share=source.share,
            destination_unit_value=destination.unit_value,
            source_unit_value=source.unit_value,
            destination_need=[
                Quantile(q=q, value=v)
                for q, v in zip(proposal.levels, proposal.destination_need, strict=True)
            ],
            source_need=[
                Quantile(q=q, value=v)
                for q, v in zip(proposal.levels, proposal.source_need, strict=True)
            ],
            destination_available=destination.available,
            source_available=source.available,
            expected_lost_sales_avoided=proposal.expected_lost_sales_avoided,
            expected_source_loss=proposal.expected_source_loss,
            transfer_cost=proposal.transfer_cost,
            reason=proposal.reason,
        )
        event.planned_at.FromDatetime(now)
        event.arrives_at.FromDatetime(now + timedelta(hours=lane.lead_time_hours))
        if peak is not None:
            event.peak_at.FromDatetime(first_hour + peak * HOUR)
        if forecast.HasField("as_of"):
            event.forecast_as_of.CopyFrom(forecast.as_of)
        return event

    async def _record(
        self, sku: str, events: list[ev.TransferPlanned], now: datetime
    ) -> list[ev.TransferPlanned]:
        """Record the plan's new transfers (one already recorded keeps its first record) and
        make it the SKU's latest plan; answer the recorded transfers."""
        stream = stream_of(sku)
        recorded: list[ev.TransferPlanned] = []
        async with self.store.pool.acquire() as conn, conn.transaction():
            await _lock(conn, stream)
            version = await self.store.stream_version(stream, conn=conn)
            fresh: list[NewEvent] = []
            for event in events:
                inserted = await conn.fetchval(
                    "INSERT INTO transfers (transfer_id, sku, planned_at, data)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (transfer_id) DO NOTHING"
                    " RETURNING true",
                    event.transfer_id,
                    sku,
                    now,
                    event.SerializeToString(deterministic=True),
                )
                if inserted:
                    fresh.append(NewEvent.of(event))
                    recorded.append(event)
                else:
                    data = await conn.fetchval(
                        "SELECT data FROM transfers WHERE transfer_id = $1", event.transfer_id
                    )
                    recorded.append(ev.TransferPlanned.FromString(data))
            if fresh:
                await self.store.append(stream, version, fresh, conn=conn)
            await conn.execute(
                "INSERT INTO transfer_plans (sku, planned_at, transfer_ids) VALUES ($1, $2, $3)"
                " ON CONFLICT (sku) DO UPDATE SET planned_at = excluded.planned_at,"
                " transfer_ids = excluded.transfer_ids",
                sku,
                now,
                [event.transfer_id for event in events],
            )
        return recorded

    # -- execution -----------------------------------------------------------------------

    async def execute(self, transfer_id: str) -> tuple[ev.TransferPlanned, ev.TransferExecuted]:
        if not valid_id(transfer_id):
            raise InvalidArgument([FieldViolation("transfer_id", ID_RULE)])
        row = await self.store.pool.fetchrow(
            "SELECT t.data, t.executed, p.transfer_ids @> ARRAY[t.transfer_id] AS latest"
            " FROM transfers t LEFT JOIN transfer_plans p ON p.sku = t.sku"
            " WHERE t.transfer_id = $1",
            transfer_id,
        )
        if row is None:
            raise NotFound(f"transfer {transfer_id} does not exist")
        planned = ev.TransferPlanned.FromString(row["data"])
        if row["executed"] is not None:
            return planned, ev.TransferExecuted.FromString(row["executed"])
        if not row["latest"]:
            raise PreconditionFailed(
                f"transfer {transfer_id} was superseded by a later plan of {planned.sku}:"
                " execute one of the latest (PlanTransfers)"
            )
        now = self.clock()
        if not lands_in_time(planned, now):
            raise PreconditionFailed(
                f"transfer {transfer_id} sent now would land after"
                f" {planned.land_by.ToJsonString()}, the hour it was planned to land by:"
                " plan again (PlanTransfers)"
            )
        try:
            stock_version = await self.inventory.transfer(
                planned.sku,
                planned.from_warehouse_id,
                planned.to_warehouse_id,
                int(planned.quantity),
                inventory_key(transfer_id),
            )
        except StockUnavailable as error:
            raise Unavailable(f"inventory-sync: {error}") from error
        except StockRefused as error:
            if error.code == grpc.StatusCode.FAILED_PRECONDITION:
                raise PreconditionFailed(
                    f"transfer {transfer_id}: inventory-sync refused it: {error.message}"
                ) from error
            raise
        executed = ev.TransferExecuted(
            transfer_id=transfer_id,
            sku=planned.sku,
            from_warehouse_id=planned.from_warehouse_id,
            to_warehouse_id=planned.to_warehouse_id,
            quantity=planned.quantity,
            stock_stream_version=stock_version,
        )
        executed.at.FromDatetime(now)
        return planned, await self._executed(executed)

    async def _executed(self, executed: ev.TransferExecuted) -> ev.TransferExecuted:
        """Record the execution once; a concurrent or earlier record stands."""
        stream = stream_of(executed.sku)
        async with self.store.pool.acquire() as conn, conn.transaction():
            await _lock(conn, stream)
            updated = await conn.execute(
                "UPDATE transfers SET executed = $2 WHERE transfer_id = $1 AND executed IS NULL",
                executed.transfer_id,
                executed.SerializeToString(deterministic=True),
            )
            if updated != "UPDATE 1":
                data = await conn.fetchval(
                    "SELECT executed FROM transfers WHERE transfer_id = $1", executed.transfer_id
                )
                return ev.TransferExecuted.FromString(data)
            version = await self.store.stream_version(stream, conn=conn)
            await self.store.append(stream, version, [NewEvent.of(executed)], conn=conn)
        return executed


def lands_in_time(planned: ev.TransferPlanned, now: datetime) -> bool:
    """Sent now, the transfer still lands by the hour it was planned to land by (a plan
    left unexecuted for too long no longer does what it was planned for)."""
    if not planned.HasField("land_by"):
        return True
    arrival = now + timedelta(hours=planned.lead_time_hours)
    return arrival <= planned.land_by.ToDatetime(tzinfo=UTC)


async def _lock(conn: asyncpg.Connection, stream: str) -> None:
    """One writer of a SKU's transfers at a time (their stream's next version)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", stream)


def transfer_id_of(
    sku: str, proposal: TransferProposal, forecast: fev.ForecastUpdated, stock_version: int
) -> str:
    """Stable: the same SKU, lane and quantity planned on the same forecast and stock."""
    origin = forecast.as_of.ToJsonString() if forecast.HasField("as_of") else ""
    lane = proposal.lane
    key = "|".join(
        (
            sku,
            lane.source,
            lane.destination,
            str(proposal.quantity),
            origin,
            str(stock_version),
        )
    )
    return f"tr-{uuid.uuid5(TRANSFER_NAMESPACE, key)}"
