"""`pulsestock demo`: the whole chain on a running system (`make run`), for a fresh SKU.

Master data in fulfillment, a little stock in inventory-sync, then a pulse pushed into
ingest (a video whose views take off and the SKU's orders rising with them); signal detects
it, forecast includes it, fulfillment recommends a purchase, which is approved, submitted,
confirmed and received; inventory-sync's stock and channel quantities show the receipt.
Each step has a deadline and prints one line with its numbers; the first that fails ends the
demo with exit 1, naming the step and what it saw.

Only the services' public gRPC APIs are used (the generated stubs), never a service's code.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO, TypeVar

import grpc
from pulsestock.clock import timestamp as stamp
from pulsestock.config import Env, env_prefix
from pulsestock.grpckit.client import insecure_channel
from pulsestock.services import definition_of
from pulsestock.v1 import (
    forecast_pb2,
    forecast_pb2_grpc,
    fulfillment_pb2,
    fulfillment_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    inventory_sync_pb2,
    inventory_sync_pb2_grpc,
    signal_pb2,
    signal_pb2_grpc,
)
from pulsestock.v1 import fulfillment_events_pb2 as fev
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1.common_pb2 import Channel, OrderLine

T = TypeVar("T")
# Each service the demo calls -> its gRPC service's full name (its channel retries UNAVAILABLE).
GRPC_SERVICES = {
    "ingest": "pulsestock.v1.IngestService",
    "signal": "pulsestock.v1.SignalService",
    "forecast": "pulsestock.v1.ForecastService",
    "inventory-sync": "pulsestock.v1.InventorySyncService",
    "fulfillment": "pulsestock.v1.FulfillmentService",
}
WAREHOUSE = "demo-wh"
SUPPLIER = "demo-air"
AIR_LEAD_HOURS = 4.0  # short enough that the demo's window starts within the pulse
CASE_PACK = 10
SEED_UNITS = 24
BASELINE_MINUTES = 150  # a quiet video, sampled every minute ...
SURGE_MINUTES = 30  # ... then it takes off over the last half hour
# What a read model may answer while it is catching up (NOT_FOUND: signal knows no heat
# for the SKU yet) or a service while it restarts.
WORTH_ANOTHER_LOOK = frozenset(
    {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)
HISTORY_PAGE = 1000
SETTLE_S = 1.5  # a forecast unchanged this long has folded the last heat signal sent


class StepFailed(Exception):
    """What a step saw when it could not go on (the message is printed after its name)."""


@dataclass(frozen=True)
class Addresses:
    by_service: dict[str, str]

    @classmethod
    def resolve(cls, flags: dict[str, str | None], environ: dict[str, str]) -> Addresses:
        """--<service>-addr, else <SERVICE>_ADDR, else 127.0.0.1:<SERVICE>_GRPC_PORT with the
        service's own default port (the one `pulsestock dev up` serves it on)."""
        env = Env(environ)
        resolved: dict[str, str] = {}
        for service in GRPC_SERVICES:
            prefix = env_prefix(service)
            address = flags.get(service) or env.raw(f"{prefix}_ADDR")
            if address is None:
                port = env.port(f"{prefix}_GRPC_PORT", definition_of(service).grpc_port)
                address = f"127.0.0.1:{port}"
            resolved[service] = address
        return cls(resolved)


@dataclass(frozen=True)
class Stubs:
    ingest: ingest_pb2_grpc.IngestServiceStub
    signal: signal_pb2_grpc.SignalServiceStub
    forecast: forecast_pb2_grpc.ForecastServiceStub
    inventory: inventory_sync_pb2_grpc.InventorySyncServiceStub
    fulfillment: fulfillment_pb2_grpc.FulfillmentServiceStub


@dataclass(frozen=True)
class DemoOrder:
    order_id: str
    quantity: int
    placed_at: datetime


@dataclass(frozen=True)
class Pulse:
    video_id: str
    samples: list[iev.VideoSampled]
    orders: list[DemoOrder]

    @property
    def units(self) -> int:
        return sum(order.quantity for order in self.orders)


def fresh_sku(now: datetime) -> str:
    return f"DEMO-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def pulse_for(sku: str, now: datetime) -> Pulse:
    """A video sampled every minute for three hours up to a minute ago: ~20 views a minute,
    then a surge of thousands a minute over the last half hour (likes and shares follow);
    an order every half hour while it is quiet, then one a minute, growing with the views."""
    start = now.replace(second=0, microsecond=0) - timedelta(
        minutes=BASELINE_MINUTES + SURGE_MINUTES
    )
    video_id = f"{sku}-video"
    samples: list[iev.VideoSampled] = []
    orders: list[DemoOrder] = []
    views = 1_000
    for minute in range(BASELINE_MINUTES + SURGE_MINUTES):
        surge = minute - BASELINE_MINUTES + 1  # 1.. during the surge
        views += 20 + minute % 3 if surge <= 0 else 400 * surge
        at = start + timedelta(minutes=minute)
        samples.append(
            iev.VideoSampled(
                video_id=video_id,
                observed_at=stamp(at),
                views=views,
                likes=views // 12,
                shares=views // 60,
                comments=views // 90,
            )
        )
        if surge > 0:
            orders.append(DemoOrder(f"{sku}-o{minute}", 1 + surge // 6, at))
        elif minute % 30 == 15:
            orders.append(DemoOrder(f"{sku}-o{minute}", 1, at))
    return Pulse(video_id, samples, orders)


async def until(
    probe: Callable[[], Awaitable[tuple[T | None, str]]], deadline: float, what: str
) -> T:
    """Poll `probe` (its answer, or None with what it saw) until it answers or the deadline
    passes; then fail with the last thing seen. Polling, because these are other processes'
    read models: there is nothing to wait on from here."""
    seen = "nothing yet"
    pause = 0.1
    while True:
        try:
            answer, seen = await probe()
        except grpc.aio.AioRpcError as error:
            if error.code() not in WORTH_ANOTHER_LOOK:
                raise  # a refusal: asking again would be refused again
            answer, seen = None, f"{error.code().name}: {error.details()}"
        if answer is not None:
            return answer
        if time.monotonic() + pause > deadline:
            raise StepFailed(f"no {what} before the deadline; last seen: {seen}")
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 1.0)


def total_on_hand(stock: inventory_sync_pb2.GetStockResponse) -> int:
    return sum(warehouse.on_hand for warehouse in stock.warehouses)


def channel_quantities(
    reply: inventory_sync_pb2.GetChannelQuantitiesResponse,
) -> dict[str, int]:
    return {Channel.Name(q.channel).removeprefix("CHANNEL_"): q.quantity for q in reply.quantities}


async def ledger_history(
    inventory: inventory_sync_pb2_grpc.InventorySyncServiceStub, sku: str
) -> list[inventory_sync_pb2.HistoryEntry]:
    """The SKU's whole ledger, a page at a time."""
    entries: list[inventory_sync_pb2.HistoryEntry] = []
    while True:
        page = await inventory.GetHistory(
            inventory_sync_pb2.GetHistoryRequest(
                sku=sku, from_version=len(entries) + 1, limit=HISTORY_PAGE
            )
        )
        entries.extend(page.entries)
        if len(page.entries) < HISTORY_PAGE:
            return entries


def describe_stock(stock: inventory_sync_pb2.GetStockResponse) -> str:
    return (
        f"on hand {total_on_hand(stock)}, reserved {sum(w.reserved for w in stock.warehouses)},"
        f" available {stock.available}"
    )


class Demo:
    def __init__(
        self, stubs: Stubs, sku: str, step_timeout: float, out: TextIO, now: datetime
    ) -> None:
        self.stubs = stubs
        self.sku = sku
        self.step_timeout = step_timeout
        self.out = out
        self.now = now
        self.step = 0
        self.pulse = pulse_for(sku, now)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def run(self) -> int:
        started = time.monotonic()
        self.say(f"demo SKU {self.sku}")
        steps: list[tuple[str, Callable[[float], Awaitable[str]]]] = [
            ("master data", self.master_data),
            ("initial stock", self.initial_stock),
            ("pulse into ingest", self.push_pulse),
            ("orders in inventory-sync", self.orders_in_inventory),
            ("pulse detected", self.pulse_detected),
            ("forecast", self.forecast),
            ("recommendation", self.recommendation),
            ("purchase order", self.purchase_order),
            ("stock and channels", self.stock_and_channels),
        ]
        for name, step in steps:
            self.step += 1
            step_started = time.monotonic()
            deadline = step_started + self.step_timeout
            try:
                async with asyncio.timeout(self.step_timeout):
                    facts = await step(deadline)
            except StepFailed as failure:
                self.say(f"[{self.step}/{len(steps)}] {name}: FAILED - {failure}")
                return 1
            except TimeoutError:
                self.say(
                    f"[{self.step}/{len(steps)}] {name}: FAILED - no answer within"
                    f" {self.step_timeout:.0f} s"
                )
                return 1
            except grpc.aio.AioRpcError as error:
                self.say(
                    f"[{self.step}/{len(steps)}] {name}: FAILED -"
                    f" {error.code().name}: {error.details()}"
                )
                return 1
            elapsed = time.monotonic() - step_started
            self.say(f"[{self.step}/{len(steps)}] {name}: {facts}  ({elapsed:.1f} s)")
        self.say(f"demo passed in {time.monotonic() - started:.1f} s")
        return 0

    # --- the steps: each returns its line's facts or raises StepFailed -----------------

    async def master_data(self, deadline: float) -> str:
        api = self.stubs.fulfillment
        warehouse = fev.WarehouseProfile(
            warehouse_id=WAREHOUSE,
            region="us-east",
            kind="own",
            channels=[Channel.CHANNEL_TIKTOK_SHOP, Channel.CHANNEL_SHOPIFY, Channel.CHANNEL_AMAZON],
        )
        await api.SetWarehouse(fulfillment_pb2.SetWarehouseRequest(warehouse=warehouse))
        air = fev.LeadTimeOptionProfile(
            mode="air",
            lead_time_hours=fev.LeadTimeHours(mean=AIR_LEAD_HOURS, sd=1.0),
            unit_cost=6.0,
            case_pack=CASE_PACK,
            delivers_to=[WAREHOUSE],
        )
        supplier = fev.SupplierProfile(supplier_id=SUPPLIER, options=[air])
        await api.SetSupplier(fulfillment_pb2.SetSupplierRequest(supplier=supplier))
        economics = fev.SkuEconomics(
            sku=self.sku,
            price=25.0,
            unit_cost=6.0,
            salvage=2.0,
            holding_per_unit_day=0.01,
            target_service_level=0.95,
            warehouse_id=WAREHOUSE,
            supplier_ids=[SUPPLIER],
        )
        reply = await api.SetSkuEconomics(
            fulfillment_pb2.SetSkuEconomicsRequest(economics=economics)
        )
        return (
            f"warehouse {WAREHOUSE} (us-east, own), supplier {SUPPLIER} (air"
            f" {AIR_LEAD_HOURS:g} h +- 1 h, $6.00/unit, case pack {CASE_PACK}), {self.sku}"
            f" price $25.00 cost $6.00 service 95 % (master data v{reply.version})"
        )

    async def initial_stock(self, deadline: float) -> str:
        reply = await self.stubs.inventory.Receive(
            inventory_sync_pb2.ReceiveRequest(
                sku=self.sku,
                warehouse_id=WAREHOUSE,
                quantity=SEED_UNITS,
                source="pulsestock demo",
                command_id=f"{self.sku}-seed",
            )
        )
        stock = await self.stubs.inventory.GetStock(
            inventory_sync_pb2.GetStockRequest(
                sku=self.sku, min_stream_version=reply.stream_version
            )
        )
        if total_on_hand(stock) != SEED_UNITS:
            raise StepFailed(f"received {SEED_UNITS} but GetStock shows {describe_stock(stock)}")
        return f"received {SEED_UNITS} units at {WAREHOUSE}; {describe_stock(stock)}"

    async def push_pulse(self, deadline: float) -> str:
        pulse = self.pulse
        first, last = pulse.samples[0].observed_at, pulse.samples[-1].observed_at
        await self.stubs.ingest.RegisterVideo(
            ingest_pb2.RegisterVideoRequest(
                video_id=pulse.video_id,
                skus=[self.sku],
                creator_id="demo-creator",
                creator_followers=250_000,
                published_at=stamp(first.ToDatetime(tzinfo=UTC) - timedelta(hours=1)),
                channel=Channel.CHANNEL_TIKTOK_SHOP,
            )
        )

        async def requests() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
            for sample in pulse.samples:
                yield ingest_pb2.PushVideoSamplesRequest(samples=[sample])

        pushed = await self.stubs.ingest.PushVideoSamples(requests())
        if pushed.rejected or pushed.accepted != len(pulse.samples):
            raise StepFailed(
                f"ingest accepted {pushed.accepted} of {len(pulse.samples)} samples:"
                f" {[(r.index, r.reason) for r in pushed.rejections[:3]]}"
            )
        for order in pulse.orders:
            await self.stubs.ingest.RecordOrder(
                ingest_pb2.RecordOrderRequest(
                    order=iev.OrderPlaced(
                        channel=Channel.CHANNEL_TIKTOK_SHOP,
                        channel_order_id=order.order_id,
                        lines=[OrderLine(sku=self.sku, quantity=order.quantity)],
                        placed_at=stamp(order.placed_at),
                        buyer_region="us-east",
                    )
                )
            )
        views = [sample.views for sample in pulse.samples]
        surge_orders = pulse.orders[-SURGE_MINUTES:]
        surge_views = views[-1] - views[-SURGE_MINUTES - 1]
        quiet_views = views[-SURGE_MINUTES - 1] - views[-2 * SURGE_MINUTES - 1]
        return (
            f"video {pulse.video_id}: {pushed.accepted} samples accepted"
            f" ({first.ToDatetime():%H:%M}-{last.ToDatetime():%H:%M} UTC, views"
            f" {views[0]:,} -> {views[-1]:,}; +{surge_views:,} in the last {SURGE_MINUTES} min"
            f" vs +{quiet_views:,} in the {SURGE_MINUTES} before);"
            f" {len(pulse.orders)} orders recorded, {pulse.units} units"
            f" ({sum(o.quantity for o in surge_orders)} in the surge)"
        )

    async def orders_in_inventory(self, deadline: float) -> str:
        """Every order recorded into ingest reaches inventory-sync, reserved or (past the
        stock) a backorder; the receipt's before/after below is read after all of them."""
        wanted = {order.order_id for order in self.pulse.orders}

        async def probe() -> tuple[dict[str, int] | None, str]:
            entries = await ledger_history(self.stubs.inventory, self.sku)
            units: dict[str, int] = {}
            handled: set[str] = set()
            for entry in entries:
                data = json.loads(entry.data_json)
                if data.get("channelOrderId") in wanted:
                    handled.add(data["channelOrderId"])
                    kind = entry.type.rsplit(".", 1)[-1]
                    units[kind] = units.get(kind, 0) + int(data.get("quantity", 0))
            seen = f"{len(handled)} of {len(wanted)} orders in the ledger ({units})"
            return (units if handled == wanted else None), seen

        units = await until(probe, deadline, "ledger entry for every order")
        stock = await self.stubs.inventory.GetStock(
            inventory_sync_pb2.GetStockRequest(sku=self.sku)
        )
        by_kind = ", ".join(f"{kind} {quantity}" for kind, quantity in sorted(units.items()))
        return f"all {len(wanted)} orders in the ledger ({by_kind} units); {describe_stock(stock)}"

    async def pulse_detected(self, deadline: float) -> str:
        last_sample = self.pulse.samples[-1].observed_at.ToDatetime(tzinfo=UTC)

        async def probe() -> tuple[str | None, str]:
            listed = await self.stubs.signal.ListPulses(signal_pb2.ListPulsesRequest(sku=self.sku))
            if not listed.pulses:
                return None, "no pulse listed for the SKU"
            heat = (await self.stubs.signal.GetHeat(signal_pb2.GetHeatRequest(sku=self.sku))).heat
            if heat.as_of.ToDatetime(tzinfo=UTC) < last_sample:  # every sample folded
                return None, f"heat as of {heat.as_of.ToDatetime():%H:%M}, not the last sample"
            pulse = listed.pulses[0]
            evidence = ", ".join(e.source for e in pulse.evidence)
            return (
                f"pulse {pulse.pulse_id} detected at {pulse.detected_at.ToDatetime():%H:%M} UTC"
                f" on {pulse.hot_channel.removeprefix('CHANNEL_')} (evidence: {evidence});"
                f" heat {heat.heat:,.0f}, {heat.view_velocity:,.0f} views/h as of"
                f" {heat.as_of.ToDatetime():%H:%M}",
                "",
            )

        return await until(probe, deadline, "pulse from signal")

    async def forecast(self, deadline: float) -> str:
        """Forecast refits on every input; signal publishes heat at most once a second, so
        the last of it can arrive a second or so after the orders. The forecast counts as
        settled once it includes the pulse, has seen the last input, and has stayed the same
        for SETTLE_S."""
        last_input = self.pulse.orders[-1].placed_at
        previous: tuple[str, float] | None = None
        unchanged_since = time.monotonic()

        async def probe() -> tuple[forecast_pb2.GetForecastResponse | None, str]:
            nonlocal previous, unchanged_since
            reply = await self.stubs.forecast.GetForecast(
                forecast_pb2.GetForecastRequest(sku=self.sku)
            )
            forecast = reply.forecast
            seen = (
                f"model {forecast.model!r}, pulse {forecast.pulse_id or 'none'}, as of"
                f" {forecast.as_of.ToDatetime():%H:%M:%S}, horizon mean"
                f" {forecast.horizon_mean:.1f}, {reply.history_hours} h of history"
            )
            current = forecast.as_of.ToDatetime(tzinfo=UTC) >= last_input
            if not (forecast.pulse_id and current):
                previous = None
                return None, seen
            state = (forecast.pulse_id, forecast.horizon_mean)
            if state != previous:
                previous, unchanged_since = state, time.monotonic()
            settled = time.monotonic() - unchanged_since >= SETTLE_S
            return (reply if settled else None), seen

        reply = await until(probe, deadline, "settled forecast including the pulse")
        forecast = reply.forecast
        day = forecast.points[:24]
        day_mean = sum(point.mean for point in day)
        total = {q.q: q.value for q in forecast.horizon_quantiles}
        quantiles = ", ".join(f"p{round(q * 100)} {v:.0f}" for q, v in sorted(total.items()))
        return (
            f"model {forecast.model}, pulse {forecast.pulse_id}, as of"
            f" {forecast.as_of.ToDatetime():%H:%M} UTC: next 24 h mean {day_mean:.1f} units;"
            f" {len(forecast.points)} h horizon mean {forecast.horizon_mean:.1f} ({quantiles})"
        )

    async def recommendation(self, deadline: float) -> str:
        api = self.stubs.fulfillment
        before = await api.GetReplenishmentPlan(
            fulfillment_pb2.GetReplenishmentPlanRequest(sku=self.sku)
        )
        automatic = [f"{rec.trigger} {rec.quantity} units" for rec in before.recommendations] or [
            "none"
        ]
        # forecast.updated triggers reviews too, but one may have reviewed a forecast from
        # before the last inputs; the documented ReviewReplenishment reviews the settled one
        # now rather than waiting for the schedule.
        plan = await api.ReviewReplenishment(
            fulfillment_pb2.ReviewReplenishmentRequest(sku=self.sku)
        )
        if not plan.recommendations:
            raise StepFailed("ReviewReplenishment answered no recommendation")
        rec = plan.recommendations[0]
        self.recommended = rec
        if rec.quantity <= 0:
            raise StepFailed(f"recommendation {rec.recommendation_id} orders 0: {rec.rationale}")
        chosen = next(
            (o for o in rec.options if (o.supplier_id, o.mode) == (rec.supplier_id, rec.mode)),
            None,
        )
        need = ""
        if chosen is not None:
            levels = {round(q.q * 100): q.value for q in chosen.need_quantiles}
            need = (
                "; net need "
                + ", ".join(
                    f"p{level} {levels[level]:.0f}" for level in (55, 92, 99) if level in levels
                )
                + f" at inventory position {chosen.inventory_position:.0f}"
            )
        others = [o for o in rec.options if o is not chosen]
        return (
            f"{rec.recommendation_id}: order {rec.quantity} units by {rec.mode} from"
            f" {rec.supplier_id}, order by {rec.order_by.ToDatetime():%H:%M} UTC (trigger"
            f" {rec.trigger}; reviews seen before: {'; '.join(automatic)}){need};"
            f" reasons: {rec.rationale}"
            + "".join(f" | {o.supplier_id}/{o.mode} {o.quantity}: {o.reason}" for o in others)
        )

    async def purchase_order(self, deadline: float) -> str:
        api = self.stubs.fulfillment
        rec = self.recommended
        approved = await api.ApproveRecommendation(
            fulfillment_pb2.ApproveRecommendationRequest(recommendation_id=rec.recommendation_id)
        )
        po_id = approved.purchase_order_id
        trail = [status_name(approved.purchase_order.status)]
        command = fulfillment_pb2.PurchaseOrderCommand(purchase_order_id=po_id)
        submitted = await api.SubmitPurchaseOrder(command)
        trail.append(status_name(submitted.purchase_order.status))
        confirmed = await api.ConfirmPurchaseOrder(command)
        trail.append(status_name(confirmed.purchase_order.status))
        # Stock before the receipt, for the next step's before/after.
        self.stock_before = await self.stubs.inventory.GetStock(
            inventory_sync_pb2.GetStockRequest(sku=self.sku)
        )
        self.channels_before = channel_quantities(
            await self.stubs.inventory.GetChannelQuantities(
                inventory_sync_pb2.GetChannelQuantitiesRequest(
                    sku=self.sku, min_stream_version=self.stock_before.stream_version
                )
            )
        )
        lines = [
            OrderLine(sku=line.sku, quantity=line.ordered)
            for line in confirmed.purchase_order.lines
        ]
        received = await api.ReceivePurchaseOrder(
            fulfillment_pb2.ReceivePurchaseOrderRequest(
                purchase_order_id=po_id, lines=lines, receipt_id=f"{po_id}-grn"
            )
        )
        po = received.purchase_order
        trail.append(status_name(po.status))
        self.received_units = sum(line.received for line in po.lines)
        if po.status != fulfillment_pb2.PURCHASE_ORDER_STATUS_RECEIVED:
            raise StepFailed(f"purchase order {po_id} is {status_name(po.status)} after receipt")
        if self.received_units != rec.quantity:
            raise StepFailed(f"received {self.received_units} units of {rec.quantity} ordered")
        return (
            f"purchase order {po_id} for {rec.quantity} units from {po.supplier_id} to"
            f" {po.warehouse_id}: {' -> '.join(trail)}; received {self.received_units} units"
        )

    async def stock_and_channels(self, deadline: float) -> str:
        before = self.stock_before
        expected = total_on_hand(before) + self.received_units

        async def stock_probe() -> tuple[inventory_sync_pb2.GetStockResponse | None, str]:
            stock = await self.stubs.inventory.GetStock(
                inventory_sync_pb2.GetStockRequest(sku=self.sku)
            )
            arrived = total_on_hand(stock) == expected
            return (stock if arrived else None), describe_stock(stock)

        after = await until(stock_probe, deadline, f"on hand of {expected} in GetStock")

        async def channel_probe() -> tuple[dict[str, int] | None, str]:
            reply = await self.stubs.inventory.GetChannelQuantities(
                inventory_sync_pb2.GetChannelQuantitiesRequest(
                    sku=self.sku, min_stream_version=after.stream_version
                )
            )
            quantities = channel_quantities(reply)
            grew = any(
                quantity > self.channels_before.get(channel, 0)
                for channel, quantity in quantities.items()
            )
            return (quantities if grew else None), str(quantities)

        channels_after = await until(channel_probe, deadline, "channel quantity increase")
        channels = ", ".join(
            f"{channel} {self.channels_before.get(channel, 0)} -> {quantity}"
            for channel, quantity in sorted(channels_after.items())
        )
        return (
            f"units received {self.received_units}: on hand {total_on_hand(before)} ->"
            f" {total_on_hand(after)}, available {before.available} -> {after.available};"
            f" channel quantities {channels}"
        )


def status_name(status: int) -> str:
    return fulfillment_pb2.PurchaseOrderStatus.Name(status).removeprefix(  # type: ignore[arg-type]
        "PURCHASE_ORDER_STATUS_"
    )


async def run_demo(addresses: Addresses, step_timeout: float, out: TextIO) -> int:
    now = datetime.now(UTC)
    channels: dict[str, grpc.aio.Channel] = {
        service: insecure_channel(address, [GRPC_SERVICES[service]])
        for service, address in addresses.by_service.items()
    }
    try:
        stubs = Stubs(
            ingest=ingest_pb2_grpc.IngestServiceStub(channels["ingest"]),
            signal=signal_pb2_grpc.SignalServiceStub(channels["signal"]),
            forecast=forecast_pb2_grpc.ForecastServiceStub(channels["forecast"]),
            inventory=inventory_sync_pb2_grpc.InventorySyncServiceStub(channels["inventory-sync"]),
            fulfillment=fulfillment_pb2_grpc.FulfillmentServiceStub(channels["fulfillment"]),
        )
        print(
            "services: "
            + ", ".join(f"{name} {address}" for name, address in addresses.by_service.items()),
            file=out,
            flush=True,
        )
        return await Demo(stubs, fresh_sku(now), step_timeout, out, now).run()
    finally:
        for channel in channels.values():
            await channel.close()


def cmd_demo(flags: dict[str, str | None], step_timeout: float) -> int:
    """The `pulsestock demo` command: flags are each service's --<service>-addr (or None)."""
    addresses = Addresses.resolve(flags, dict(os.environ))  # ConfigError: main says it
    return asyncio.run(run_demo(addresses, step_timeout, sys.stdout))
