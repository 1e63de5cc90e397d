"""Runs the real OutboxRelay in its own process, so a test can SIGKILL it at any moment.

Usage: python -m tests.helpers.relay_process DATABASE_URL SCHEMA NATS_URL BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from pulsestock.eventstore.store import connect_pool
from pulsestock.outbox import OutboxRelay


async def main(database_url: str, schema: str, nats_url: str, batch_size: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pool = await connect_pool(database_url, schema, max_size=3)
    nc = await nats.connect(nats_url)
    relay = OutboxRelay(pool, nc, schema, dsn=database_url, batch_size=batch_size)
    print("ready", flush=True)  # SIGTERM is handled from here on
    try:
        await relay.run(stop)
    finally:
        await nc.close()
        await pool.close()


if __name__ == "__main__":
    url, schema_name, nats_address, batch = sys.argv[1:5]
    asyncio.run(main(url, schema_name, nats_address, int(batch)))
