"""Releases unpaid holds whose time is up: finds them in the read model, and lets the
ledger decide (the ledger re-checks each hold against `now`)."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from pulsestock.clock import Clock
from pulsestock.errors import DomainError
from pulsestock.inventory_sync.application.writer import LedgerWriter
from pulsestock.inventory_sync.domain.commands import ExpireHolds
from pulsestock.telemetry import get_logger

log = get_logger(__name__)


async def expire_due_holds(pool: asyncpg.Pool, writer: LedgerWriter, clock: Clock) -> int:
    rows = await pool.fetch(
        "SELECT DISTINCT sku FROM active_reservations WHERE expires_at <= $1", clock()
    )
    skus = [r["sku"] for r in rows if writer.owns(r["sku"])]
    results = await asyncio.gather(
        *(writer.submit(ExpireHolds(sku)) for sku in skus), return_exceptions=True
    )
    for sku, result in zip(skus, results, strict=True):
        if isinstance(result, Exception) and not isinstance(result, DomainError):
            log.warning("expiring holds failed", sku=sku, error=repr(result))
    return len(skus)


async def run_expiry(
    pool: asyncpg.Pool, writer: LedgerWriter, clock: Clock, stop: asyncio.Event, every: float
) -> None:
    while not stop.is_set():
        try:
            await expire_due_holds(pool, writer, clock)
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("expiry sweep failed", error=repr(error))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
