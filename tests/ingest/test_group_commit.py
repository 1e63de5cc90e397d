"""ingest's sample writer when concurrent streams share a transaction (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pulsestock.ingest.application.ingestion import Ingestion
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

from tests.helpers.infra import Infra
from tests.helpers.service import service_store

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
async def ingestion(infra: Infra) -> AsyncIterator[Ingestion]:
    async with service_store(infra.database_url, "ingest") as store:
        ingestion = Ingestion(store, lambda: NOW, 16)
        registered = ev.VideoRegistered(
            video_id="v1", skus=["S1"], creator_id="c", channel=Channel.CHANNEL_TIKTOK_SHOP
        )
        registered.published_at.FromDatetime(NOW - timedelta(days=1))
        await ingestion.register_video(registered)
        yield ingestion


def sample(minutes_ago: int, views: int) -> ev.VideoSampled:
    result = ev.VideoSampled(video_id="v1", views=views, likes=views // 10)
    result.observed_at.FromDatetime(NOW - timedelta(minutes=minutes_ago))
    return result


async def stream(*messages: Sequence[ev.VideoSampled]) -> AsyncIterator[Sequence[ev.VideoSampled]]:
    for message in messages:
        yield message


async def outbox_rows(ingestion: Ingestion) -> list[asyncpg.Record]:
    return list(
        await ingestion.store.pool.fetch(
            "SELECT event_id FROM outbox WHERE type = 'pulsestock.v1.VideoSampled'"
        )
    )


async def test_the_same_samples_from_two_streams_in_one_batch_go_out_once(
    ingestion: Ingestion,
) -> None:
    """Both streams' first messages are queued before the writer runs, so they share one
    transaction: the second copy of a sample accepted earlier in that batch is a duplicate
    (even when it is older than the newest one), not a rejection and not a second event."""
    samples = [sample(30, 100), sample(20, 200), sample(10, 300)]
    first, second = await asyncio.gather(
        ingestion.push_video_samples(stream(samples)),
        ingestion.push_video_samples(stream(samples)),
    )
    assert (first.accepted, first.rejected) == (3, 0)
    assert (second.accepted, second.rejected, second.rejections) == (3, 0, [])
    assert len(await outbox_rows(ingestion)) == 3


async def test_rules_hold_across_streams_sharing_a_batch(ingestion: Ingestion) -> None:
    ahead, behind = await asyncio.gather(
        ingestion.push_video_samples(stream([sample(10, 500)])),
        ingestion.push_video_samples(stream([sample(5, 400), sample(20, 100)])),
    )
    assert (ahead.accepted, ahead.rejected) == (1, 0)
    assert behind.accepted == 0
    assert [reason for _, reason in behind.rejections] == [
        "cumulative views went backwards (500 -> 400)",
        "older than the last accepted sample of this video",
    ]
    assert len(await outbox_rows(ingestion)) == 1
