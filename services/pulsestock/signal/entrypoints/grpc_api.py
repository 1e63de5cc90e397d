"""The SignalService gRPC servicer: heat, pulses, rules, and a live stream of new pulses."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import asyncpg
import grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pulsestock.errors import NotFound, Validator
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.signal.application.engine import SignalEngine, rules_scope
from pulsestock.signal.application.ranking import DEFAULT_LIMIT, MAX_LIMIT, rank_heat
from pulsestock.signal.domain.metrics import METRICS, OPERATORS
from pulsestock.v1 import signal_events_pb2 as ev
from pulsestock.v1 import signal_pb2 as pb
from pulsestock.v1 import signal_pb2_grpc


class SignalServiceServicer(signal_pb2_grpc.SignalServiceServicer):
    def __init__(self, pool: asyncpg.Pool, nc: NATS, engine: SignalEngine) -> None:
        self.pool = pool
        self.nc = nc
        self.engine = engine

    async def GetHeat(
        self, request: pb.GetHeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHeatResponse:
        v = Validator()
        v.check(bool(request.sku), "sku", "is required")
        v.raise_if_invalid()
        row = await self.pool.fetchrow("SELECT * FROM sku_heat WHERE sku = $1", request.sku)
        if row is None:
            raise NotFound(f"no heat known for SKU {request.sku}")
        heat = ev.HeatUpdated(
            sku=request.sku,
            heat=row["heat"],
            view_velocity=row["view_velocity"],
            like_rate=row["like_rate"],
            share_rate=row["share_rate"],
        )
        heat.as_of.FromDatetime(row["as_of"])
        return pb.GetHeatResponse(heat=heat)

    async def ListPulses(
        self, request: pb.ListPulsesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPulsesResponse:
        since = request.since.ToDatetime() if request.HasField("since") else None
        rows = await self.pool.fetch(
            "SELECT * FROM pulses WHERE ($1 = '' OR sku = $1) AND (NOT $2 OR phase <> 'ended')"
            " AND ($3::timestamptz IS NULL OR detected_at >= $3)"
            " ORDER BY detected_at DESC LIMIT 500",
            request.sku,
            request.active_only,
            since,
        )
        pulses = []
        for row in rows:
            pulse = ev.PulseDetected(
                pulse_id=row["pulse_id"],
                sku=row["sku"],
                video_ids=list(row["video_ids"]),
                hot_channel=row["hot_channel"],
                evidence=[
                    ev.PulseEvidence(
                        source=e["source"], description=e["description"], metrics=e["metrics"]
                    )
                    for e in row["evidence"]
                ],
            )
            pulse.detected_at.FromDatetime(row["detected_at"])
            pulses.append(pulse)
        return pb.ListPulsesResponse(pulses=pulses)

    async def SetRules(
        self, request: pb.SetRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetRulesResponse:
        v = Validator()
        v.check(
            bool(request.sku) != bool(request.seller_id),
            "sku" if request.sku else "seller_id",
            "set exactly one of seller_id (a seller's rules) and sku (one SKU's rules)",
        )
        for name in ("sku", "seller_id"):
            value = getattr(request, name)
            v.check(not value or valid_id(value), name, ID_RULE)
        names = [rule.name for rule in request.rules]
        for index, rule in enumerate(request.rules):
            v.check(bool(rule.name), f"rules[{index}].name", "is required")
            v.check(names.count(rule.name) == 1, f"rules[{index}].name", "is not unique")
            v.check(
                rule.metric in METRICS,
                f"rules[{index}].metric",
                f"must be one of {', '.join(METRICS)}",
            )
            v.check(rule.op in OPERATORS, f"rules[{index}].op", "must be >, >=, < or <=")
            v.check(math.isfinite(rule.threshold), f"rules[{index}].threshold", "must be finite")
            v.check(rule.min_views >= 0, f"rules[{index}].min_views", "must not be negative")
        v.raise_if_invalid()
        rules = [
            {
                "name": r.name,
                "metric": r.metric,
                "op": r.op,
                "threshold": r.threshold,
                "min_views": r.min_views,
            }
            for r in request.rules
        ]
        scope = rules_scope(sku=request.sku, seller_id=request.seller_id)
        assert scope is not None  # validated above
        await self.pool.execute(
            "INSERT INTO rules VALUES ($1, $2)"
            " ON CONFLICT (scope) DO UPDATE SET rules = excluded.rules",
            scope,
            rules,
        )
        self.engine.forget_rules(scope)
        return pb.SetRulesResponse()

    async def RankHeat(
        self, request: pb.RankHeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankHeatResponse:
        v = Validator()
        v.check(
            0 <= request.limit <= MAX_LIMIT,
            "limit",
            f"must be between 0 (default {DEFAULT_LIMIT}) and {MAX_LIMIT}",
        )
        v.check(len(request.skus) <= MAX_LIMIT, "skus", f"at most {MAX_LIMIT}")
        for index, sku in enumerate(request.skus):
            v.check(valid_id(sku), f"skus[{index}]", ID_RULE)
        v.raise_if_invalid()
        ranked, total = await rank_heat(
            self.pool, request.limit or DEFAULT_LIMIT, list(request.skus)
        )
        response = pb.RankHeatResponse(total=total)
        for item in ranked:
            entry = response.skus.add()
            entry.heat.MergeFrom(
                ev.HeatUpdated(
                    sku=item.sku,
                    heat=item.heat,
                    view_velocity=item.view_velocity,
                    like_rate=item.like_rate,
                    share_rate=item.share_rate,
                )
            )
            entry.heat.as_of.FromDatetime(item.as_of)
            pulse = item.pulse
            if pulse is not None:
                entry.phase, entry.peak_heat = pulse.phase, pulse.peak_heat
                entry.pulse.MergeFrom(
                    ev.PulseDetected(
                        pulse_id=pulse.pulse_id,
                        sku=item.sku,
                        video_ids=pulse.video_ids,
                        hot_channel=pulse.hot_channel,
                        evidence=[
                            ev.PulseEvidence(
                                source=e["source"],
                                description=e["description"],
                                metrics=e["metrics"],
                            )
                            for e in pulse.evidence
                        ],
                    )
                )
                entry.pulse.detected_at.FromDatetime(pulse.detected_at)
        return response

    async def WatchPulses(
        self, request: pb.WatchPulsesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ev.PulseDetected]:
        queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=1000)

        async def deliver(message: Msg) -> None:
            if not queue.full():  # a slow watcher misses pulses rather than growing memory
                queue.put_nowait(message)

        wanted = set(request.skus)
        subscription = await self.nc.subscribe("signal.pulse_detected.>", cb=deliver)
        try:
            while True:
                message = await queue.get()
                pulse = ev.PulseDetected.FromString(message.data)
                if not wanted or pulse.sku in wanted:
                    yield pulse
        finally:
            await subscription.unsubscribe()
