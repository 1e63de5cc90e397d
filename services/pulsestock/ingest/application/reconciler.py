"""Webhooks are best effort: on a schedule, pull the orders each channel's API says were
updated recently and join them into the same order lifecycle the webhooks feed
(ChannelOrders.observe), so the ledger ends right even when notifications are lost.

Each pulled order is a snapshot of the order as the channel holds it; its delivery id is
`<order id>@<update time>#<digest of its facts>` under the source `reconcile:<channel>`, so
the same snapshot pulled twice (the windows overlap) is a duplicate and changes nothing. Per
channel a watermark (the latest update time pulled) is kept; each round asks from the
watermark minus an overlap (for orders the channel indexes late), or from a lookback on the
first round. The watermark moves only once every page of a round is joined, so a round cut
short is asked again in full. A failing channel is logged and asked again next round; the
others go on, each channel on its own schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
from pulsestock.clock import Clock
from pulsestock.ingest.adapters.order_sources import OrderSource
from pulsestock.ingest.application.channel_orders import ChannelOrders, Delivery
from pulsestock.telemetry import get_logger

log = get_logger(__name__)


@dataclass
class SourceRound:
    """What one round did with one channel."""

    since: datetime | None = None
    pages: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # observe's outcome -> count
    malformed: int = 0
    error: str | None = None
    watermark: datetime | None = None

    @property
    def pulled(self) -> int:
        return sum(self.outcomes.values())


class Reconciler:
    def __init__(
        self,
        channel_orders: ChannelOrders,
        pool: asyncpg.Pool,
        sources: Sequence[OrderSource],
        clock: Clock,
        *,
        overlap: timedelta = timedelta(minutes=10),
        lookback: timedelta = timedelta(days=3),
    ) -> None:
        self.orders = channel_orders
        self.pool = pool
        self.sources = list(sources)
        self.clock = clock
        self.overlap = overlap
        self.lookback = lookback

    async def watermark(self, source: OrderSource) -> datetime | None:
        value: datetime | None = await self.pool.fetchval(
            "SELECT updated_through FROM reconcile_watermarks WHERE source = $1", source.name
        )
        return value

    async def round(self) -> dict[str, SourceRound]:
        """One pull of every channel, concurrently; never raises for a channel's failure."""
        results = await asyncio.gather(*(self._reconcile(source) for source in self.sources))
        return {source.name: result for source, result in zip(self.sources, results, strict=True)}

    async def _reconcile(self, source: OrderSource) -> SourceRound:
        result = SourceRound()
        try:
            previous = await self.watermark(source)
            now = self.clock()
            since = now - self.lookback if previous is None else previous - self.overlap
            result.since = since
            latest = previous
            async for page in source.updated_since(since):
                result.pages += 1
                result.malformed += page.malformed
                for order in page.orders:
                    outcome = await self.orders.observe(
                        source.channel,
                        order.order_id,
                        order.facts,
                        Delivery(f"reconcile:{source.name}", order.snapshot_id),
                    )
                    result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
                    # A channel clock ahead of ours must not push the window past now.
                    seen = min(order.updated_at, now)
                    latest = seen if latest is None else max(latest, seen)
            if latest is not None and latest != previous:
                await self.pool.execute(
                    "INSERT INTO reconcile_watermarks (source, updated_through) VALUES ($1, $2)"
                    " ON CONFLICT (source) DO UPDATE SET updated_through ="
                    " GREATEST(reconcile_watermarks.updated_through, EXCLUDED.updated_through),"
                    " pulled_at = clock_timestamp()",
                    source.name,
                    latest,
                )
            result.watermark = latest
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a channel's failure waits for the next round
            result.error = repr(error)
            log.warning(
                "reconcile round failed",
                source=source.name,
                error=result.error,
                pulled=result.pulled,
            )
        else:
            log.info(
                "reconciled",
                source=source.name,
                since=since.isoformat(),
                pages=result.pages,
                outcomes=result.outcomes,
                malformed=result.malformed,
            )
        return result

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Each channel on its own schedule (Amazon's getOrders plan allows about one call a
        minute, which must not hold up the others): a round every `interval` seconds, the
        first an interval after the start (the watermark makes it cover any downtime)."""
        await asyncio.gather(*(self._run(source, interval, stop) for source in self.sources))

    async def _run(self, source: OrderSource, interval: float, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), timeout=interval)
                if stop.is_set():
                    return
                # A round waiting out a channel's backoff must not hold up a shutdown: what it
                # joined is committed, the rest is asked again after the restart.
                pulling = asyncio.create_task(self._reconcile(source))
                await asyncio.wait({pulling, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not pulling.done():
                    pulling.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pulling
                    return
        finally:
            stopping.cancel()

    async def close(self) -> None:
        for source in self.sources:
            await source.close()
