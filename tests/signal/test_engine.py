"""signal's engine against a real PostgreSQL: HeatUpdated's rate bound (at most one per SKU
per minute of content and per second of wall time; a burst's latest heat still goes out once
its second is up), and a batch whose transaction fails leaving no trace in memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pulsestock.bus import Envelope
from pulsestock.signal.application.engine import SignalEngine
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import signal_events_pb2 as sev
from pulsestock.v1.common_pb2 import Channel

from tests.helpers.infra import Infra
from tests.helpers.service import service_store

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def envelope(message: iev.VideoRegistered | iev.VideoSampled) -> Envelope:
    return Envelope(
        str(uuid.uuid4()),
        message.DESCRIPTOR.full_name,
        "/t",
        "",
        "",
        message.SerializeToString(),
        {},
    )


def sample(minute: int) -> Envelope:
    message = iev.VideoSampled(video_id="v1", views=1000 + 40 * minute, likes=10 * minute)
    message.observed_at.FromDatetime(START + timedelta(minutes=minute))
    return envelope(message)


@pytest.fixture
async def engine(infra: Infra) -> AsyncIterator[tuple[SignalEngine, Clock]]:
    async with service_store(infra.database_url, "signal") as store:
        clock = Clock()
        engine = SignalEngine(store, 16, monotonic=clock)
        registered = iev.VideoRegistered(
            video_id="v1",
            skus=["SKU-1"],
            creator_followers=5000,
            channel=Channel.CHANNEL_TIKTOK_SHOP,
        )
        registered.published_at.FromDatetime(START - timedelta(hours=1))
        await engine.handle_batch([envelope(registered)])
        yield engine, clock


async def heat_sent(engine: SignalEngine) -> list[datetime]:
    rows = await engine.store.pool.fetch(
        "SELECT data FROM outbox WHERE type = 'pulsestock.v1.HeatUpdated' ORDER BY id"
    )
    return [sev.HeatUpdated.FromString(r["data"]).as_of.ToDatetime(tzinfo=UTC) for r in rows]


async def test_a_burst_sends_its_first_heat_at_once_and_its_latest_after_the_second(
    engine: tuple[SignalEngine, Clock],
) -> None:
    signal, clock = engine
    await signal.handle_batch([sample(m) for m in range(0, 50, 5)])  # ten, five minutes apart
    first_with_heat = START + timedelta(minutes=5)  # metrics need two samples
    assert await heat_sent(signal) == [first_with_heat]
    assert await signal.flush_heat() == 0  # the second is not up yet
    clock.now += 1.0
    assert await signal.flush_heat() == 1
    assert await heat_sent(signal) == [first_with_heat, START + timedelta(minutes=45)]
    assert await signal.flush_heat() == 0  # nothing new since


async def test_in_real_time_every_content_minute_is_published(
    engine: tuple[SignalEngine, Clock],
) -> None:
    signal, clock = engine
    for minute in range(0, 6):  # a sample a minute, arriving a minute apart
        await signal.handle_batch([sample(minute)])
        clock.now += 60
    assert await heat_sent(signal) == [START + timedelta(minutes=m) for m in range(1, 6)]
    assert await signal.flush_heat() == 0


async def test_heat_folded_but_not_sent_before_a_restart_is_sent_after_it(
    engine: tuple[SignalEngine, Clock],
) -> None:
    signal, clock = engine
    await signal.handle_batch([sample(m) for m in range(0, 20, 5)])
    restarted = SignalEngine(signal.store, 16, monotonic=clock)
    assert await restarted.flush_heat() == 0  # it knows nothing pending yet
    await restarted.recover_pending_heat()
    assert await restarted.flush_heat() == 1
    assert (await heat_sent(restarted))[-1] == START + timedelta(minutes=15)


async def test_a_failed_batch_is_folded_again_in_full_when_redelivered(
    engine: tuple[SignalEngine, Clock],
) -> None:
    """The batch's commit fails (a table is briefly missing): nothing was stored, so memory
    must not remember the batch either, or its redelivery would look like duplicates."""
    signal, clock = engine
    await signal.handle_batch([sample(0), sample(5)])
    batch = [sample(10), sample(15)]
    pool = signal.store.pool
    await pool.execute("ALTER TABLE sku_heat RENAME TO sku_heat_away")
    with pytest.raises(asyncpg.UndefinedTableError):
        await signal.handle_batch(batch)
    await pool.execute("ALTER TABLE sku_heat_away RENAME TO sku_heat")
    await signal.handle_batch(batch)  # the redelivery
    folded = await pool.fetchrow("SELECT last_observed_at, detector FROM video_state")
    assert folded["last_observed_at"] == START + timedelta(minutes=15)
    assert folded["detector"]["seen"] == 3  # velocities at 5, 10 and 15: none twice
    clock.now += 1
    assert await signal.flush_heat() == 1
    # Reloaded, the SKU's wall-clock gate starts open (it is not persisted): 10 goes at once.
    assert await heat_sent(signal) == [START + timedelta(minutes=m) for m in (5, 10, 15)]
