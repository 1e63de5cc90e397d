"""The packed sample window: what a snapshot stores is what the fold had, and the migration
from JSON snapshots packs exactly as the service does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import given
from hypothesis import strategies as st
from pulsestock.eventstore.migrations import apply_migrations
from pulsestock.services import definition_of
from pulsestock.signal.application.sample_window import SampleWindow
from pulsestock.signal.domain.metrics import WINDOW, Sample

from tests.helpers.infra import Infra, drop_schema, unique_name

START = datetime(2026, 11, 1, tzinfo=UTC)

gaps = st.lists(st.integers(min_value=1, max_value=3 * 3600 * 10**6), min_size=1, max_size=60)


def samples_after(gaps_us: list[int]) -> list[Sample]:
    at, views, out = START, 0, []
    for gap in gaps_us:
        at += timedelta(microseconds=gap)
        views += gap % 997
        out.append(Sample(at, views, views // 10, views // 50, views // 80))
    return out


@given(gaps)
def test_the_window_keeps_what_is_recent_and_unpacks_to_the_same(gaps_us: list[int]) -> None:
    window = SampleWindow()
    seen: list[Sample] = []
    for sample in samples_after(gaps_us):
        window.add(sample)
        seen.append(sample)
        assert window.samples == [s for s in seen if sample.at - s.at <= WINDOW]
        assert SampleWindow.unpack(window.packed()).samples == window.samples


async def test_the_migration_packs_json_snapshots_as_the_service_does(infra: Infra) -> None:
    schema = unique_name("sig_mig")
    migrations = definition_of("signal").migrations()
    before = [m for m in migrations if not m.name.endswith("packed_sample_window")]
    samples = samples_after([90 * 10**6, 300 * 10**6 + 7, 301 * 10**6])
    conn = await asyncpg.connect(infra.database_url)
    try:
        await apply_migrations(conn, schema, before)
        await conn.execute(
            f"INSERT INTO {schema}.video_state VALUES ('v1', $1, $2::jsonb, '{{}}', 0),"
            f" ('v2', $1, '[]', '{{}}', 0)",
            samples[-1].at,
            json.dumps(
                [[s.at.isoformat(), s.views, s.likes, s.shares, s.comments] for s in samples]
            ),
        )
        await apply_migrations(conn, schema, migrations)
        rows = dict(await conn.fetch(f"SELECT video_id, sample_window FROM {schema}.video_state"))
        assert rows["v1"] == SampleWindow(samples).packed()
        assert SampleWindow.unpack(rows["v2"]).samples == []
    finally:
        await conn.close()
        await drop_schema(infra.database_url, schema)
