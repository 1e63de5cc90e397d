"""Which SKU partitions this replica writes: advisory-lock leases on one dedicated connection.

A lease vanishes with its connection, so when a replica dies its partitions are free at
once. Replicas count each other by the application_name of their lease connections and
each aims at an equal share: a new replica takes partitions as others release extras.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import asyncpg
from pulsestock.bus.codec import partition_for
from pulsestock.telemetry import get_logger

log = get_logger(__name__)


class PartitionLeases:
    def __init__(
        self, dsn: str, schema: str, partitions: int, *, rebalance_interval: float = 2.0
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.partitions = partitions
        self.rebalance_interval = rebalance_interval
        self.owned: set[int] = set()
        self.application_name = f"pulsestock-lease-{schema}"
        self._conn: asyncpg.Connection | None = None

    def owns_sku(self, sku: str) -> bool:
        return partition_for(sku, self.partitions) in self.owned

    async def start(self) -> None:
        self._conn = await asyncpg.connect(
            self.dsn, server_settings={"application_name": self.application_name}
        )
        await self.rebalance()

    async def rebalance(self) -> None:
        if self._conn is None:
            await self._reconnect()
            if self._conn is None:
                return
        replicas = await self._conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            self.application_name,
        )
        fair_share = math.ceil(self.partitions / max(1, replicas))
        for partition in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - fair_share)]:
            await self._conn.execute(
                "SELECT pg_advisory_unlock(hashtext($1), $2)", self._key, partition
            )
            self.owned.discard(partition)
        for partition in range(self.partitions):
            if len(self.owned) >= fair_share:
                break
            if partition in self.owned:
                continue
            if await self._conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1), $2)", self._key, partition
            ):
                self.owned.add(partition)

    @property
    def _key(self) -> str:
        return f"lease:{self.schema}"

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.rebalance_interval)
                if stop.is_set():
                    break
                try:
                    await self.rebalance()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    log.warning(
                        "lease connection lost; owning nothing until it is back", error=repr(error)
                    )
                    self.owned.clear()
                    await self._reconnect()
        finally:
            await self.close()

    async def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            if self._conn is not None:
                await self._conn.close()
        try:
            self._conn = await asyncpg.connect(
                self.dsn, server_settings={"application_name": self.application_name}
            )
        except (OSError, asyncpg.PostgresError):
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        self.owned.clear()
