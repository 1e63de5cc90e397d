"""The file / webhook stats source (issue 16, item 3) against a real ingest service and a real
collect schema: a tailed file gives each sample to ingest exactly once, across partial lines,
restarts and truncation; bad rows are reported with their line number and skipped while the
rows around them are applied; the signed webhook refuses what it cannot trust."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from grpc.aio import AioRpcError, Metadata
from pulsestock.collect.adapters.ingest_client import IngestClient, PushReport
from pulsestock.collect.adapters.postgres import CollectRepository, FileOffset
from pulsestock.collect.application.file_tailer import FileTailer, file_format, run_file_tailer
from pulsestock.collect.application.stats_intake import DEFAULT_CREATOR_ID, StatsIntake
from pulsestock.collect.domain.file_source import ColumnMapping
from pulsestock.collect.entrypoints import webhooks
from pulsestock.collect.entrypoints.webhooks import serve_webhooks, sign
from pulsestock.devstack.servers import free_port
from pulsestock.v1 import ingest_events_pb2 as ev
from pulsestock.v1 import ingest_pb2
from structlog.testing import capture_logs

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import RunningService, running_service, service_store

SKU = "MUG-STATS-1"
HEADER = "video_id,timestamp,views,likes,comments,shares\n"
SECRET = "whsec-test-0123456789"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def at(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def row(video: str, minute: int, views: int) -> str:
    """A CSV row ingest accepts: in the past, counts growing with views."""
    return f"{video},{at(minute).isoformat()},{views},{views // 10},{views // 100},{views // 50}\n"


class RecordingIngest:
    """The real ingest client, recording what was sent (to catch resending)."""

    def __init__(self, client: IngestClient) -> None:
        self.client = client
        self.registered: list[ingest_pb2.RegisterVideoRequest] = []
        self.video_pushes: list[tuple[str, int]] = []  # (video_id, views)
        self.live_pushes: list[tuple[str, int]] = []  # (live_id, viewers)

    async def register_video(self, request: ingest_pb2.RegisterVideoRequest) -> bool:
        self.registered.append(request)
        return await self.client.register_video(request)

    async def push_video_samples(self, samples: Sequence[ev.VideoSampled]) -> PushReport:
        self.video_pushes += [(s.video_id, s.views) for s in samples]
        return await self.client.push_video_samples(samples)

    async def push_live_samples(self, samples: Sequence[ev.LiveSampled]) -> PushReport:
        self.live_pushes += [(s.live_id, s.concurrent_viewers) for s in samples]
        return await self.client.push_live_samples(samples)


@pytest.fixture
async def ingest(infra: Infra, nats_url: str) -> AsyncIterator[RunningService]:
    schema = unique_name("ing")
    env = {"INGEST_RECONCILE_SECONDS": "0"}
    async with running_service("ingest", infra.database_url, nats_url, schema, env) as service:
        yield service
    await drop_schema(infra.database_url, schema)


@pytest.fixture
async def client(ingest: RunningService) -> AsyncIterator[RecordingIngest]:
    real = IngestClient(ingest.address)
    yield RecordingIngest(real)
    await real.close()


@pytest.fixture
async def repository(infra: Infra) -> AsyncIterator[CollectRepository]:
    async with service_store(infra.database_url, "collect") as store:
        yield CollectRepository(store, token_key=None)


async def mapped(repository: CollectRepository, *videos: str) -> None:
    for video in videos:
        await repository.map_video(video, [SKU], datetime.now(UTC))


async def ingested(infra: Infra, ingest: RunningService, video: str) -> list[int]:
    """The views of every sample ingest holds for `video`, in time order."""
    conn = await asyncpg.connect(infra.database_url)
    try:
        rows = await conn.fetch(
            f"SELECT views FROM {ingest.settings.schema}.video_samples WHERE video_id = $1"
            " ORDER BY observed_at",
            video,
        )
        return [r["views"] for r in rows]
    finally:
        await conn.close()


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(text)


# --- the file tailer ------------------------------------------------------------------------


async def test_appended_lines_reach_ingest_once_and_a_restart_resumes_from_the_offset(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    tmp_path: Path,
) -> None:
    await mapped(repository, "vid-a")
    path = tmp_path / "stats.csv"
    partial = row("vid-a", 3, 3000)
    path.write_text(HEADER + row("vid-a", 1, 1000) + row("vid-a", 2, 2000) + partial[:12])
    tailer = FileTailer(StatsIntake(client, repository), repository)

    first = await tailer.poll(str(path))
    assert (first.accepted, first.errors) == (2, [])
    stored = await repository.file_offset(str(path))
    assert stored == FileOffset(
        byte_offset=path.stat().st_size - 12,  # the line being written is left for later
        next_line=4,
        header=("video_id", "timestamp", "views", "likes", "comments", "shares"),
    )

    append(path, partial[12:] + row("vid-a", 4, 4000))
    second = await tailer.poll(str(path))
    assert (second.accepted, second.errors) == (2, [])
    assert client.video_pushes == [("vid-a", v) for v in (1000, 2000, 3000, 4000)]
    assert (await tailer.poll(str(path))).accepted == 0  # nothing new: nothing sent
    assert len(client.video_pushes) == 4

    # A restart: a new intake and tailer over the same stored offsets.
    restarted = RecordingIngest(client.client)
    tailer = FileTailer(StatsIntake(restarted, repository), repository)
    assert (await tailer.poll(str(path))).accepted == 0
    append(path, row("vid-a", 5, 5000))
    assert (await tailer.poll(str(path))).accepted == 1
    assert restarted.video_pushes == [("vid-a", 5000)]
    assert await ingested(infra, ingest, "vid-a") == [1000, 2000, 3000, 4000, 5000]
    stored = await repository.file_offset(str(path))
    assert stored is not None
    assert (stored.byte_offset, stored.next_line) == (path.stat().st_size, 7)
    # Registered once per process, published at the earliest sample it had seen.
    assert [r.published_at.ToDatetime(tzinfo=UTC) for r in client.registered] == [at(1)]
    assert client.registered[0].creator_id == DEFAULT_CREATOR_ID
    assert list(client.registered[0].skus) == [SKU]


async def test_bad_rows_are_reported_with_their_line_and_the_rows_around_them_applied(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    tmp_path: Path,
) -> None:
    await mapped(repository, "vid-b")
    path = tmp_path / "export.csv"
    path.write_text(
        HEADER
        + row("vid-b", 1, 1000)  # line 2
        + "vid-b,not-a-time,1,1,1,1\n"  # line 3: the parser's
        + row("vid-b", 2, 2000)  # line 4
        + row("vid-b", 3, 1500)  # line 5: ingest's (views went backwards)
        + row("vid-unmapped", 3, 10)  # line 6: nobody mapped it
        + row("vid-b", 4, 4000)  # line 7
    )
    with capture_logs() as logs:
        report = await FileTailer(StatsIntake(client, repository), repository).poll(str(path))

    assert report.accepted == 3
    assert [e.line_number for e in report.errors] == [3, 5, 6]
    assert "unparsable timestamp" in report.errors[0].reason
    assert "views went backwards" in report.errors[1].reason
    assert report.errors[2].reason == "video vid-unmapped has no SKUs: map it with MapVideo"
    assert await ingested(infra, ingest, "vid-b") == [1000, 2000, 4000]
    assert await ingested(infra, ingest, "vid-unmapped") == []
    assert [r.video_id for r in client.registered] == ["vid-b"]
    skipped = [(e["path"], e["line"]) for e in logs if e["event"] == "stats row skipped"]
    assert skipped == [(str(path), 3), (str(path), 5), (str(path), 6)]


async def test_an_unmapped_video_is_taken_once_an_operator_maps_it(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    tmp_path: Path,
) -> None:
    path = tmp_path / "stats.jsonl"
    line = {"video_id": "vid-c", "timestamp": at(1).isoformat(), "views": 10}
    counts = {"likes": 1, "comments": 0, "shares": 0}
    path.write_text(json.dumps({**line, **counts}) + "\n")
    tailer = FileTailer(StatsIntake(client, repository), repository)

    first = await tailer.poll(str(path))
    assert first.accepted == 0
    assert [(e.line_number, e.reason) for e in first.errors] == [
        (1, "video vid-c has no SKUs: map it with MapVideo")
    ]
    assert client.registered == []
    assert client.video_pushes == []

    await mapped(repository, "vid-c")
    later = {"video_id": "vid-c", "timestamp": int(at(2).timestamp()), "views": 20}
    append(path, json.dumps({**later, **counts}) + "\n")
    second = await tailer.poll(str(path))
    assert (second.accepted, second.errors) == (1, [])
    assert await ingested(infra, ingest, "vid-c") == [20]  # the skipped row stays skipped


async def test_live_rows_and_bad_json_lines_in_a_jsonl_file(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    tmp_path: Path,
) -> None:
    await mapped(repository, "vid-d")
    mapping = ColumnMapping(
        video_id="video", live_id="live", live_viewers="viewers", skus="skus", orders="orders"
    )
    path = tmp_path / "dashboard.ndjson"
    lines = [
        {"live": "live-1", "skus": [SKU], "timestamp": at(1).isoformat(), "viewers": 50,
         "likes": 5, "comments": 1, "shares": 0, "orders": 1},
        "{not json",
        {"video": "vid-d", "timestamp": at(1).isoformat(), "views": 7, "likes": 1,
         "comments": 0, "shares": 0},
        {"live": "live-1", "skus": SKU, "timestamp": at(2).isoformat(), "viewers": 80,
         "likes": 9, "comments": 2, "shares": 1, "orders": 0},  # orders went backwards
    ]  # fmt: skip
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))

    report = await FileTailer(StatsIntake(client, repository), repository, mapping).poll(str(path))
    assert report.accepted == 2
    assert [e.line_number for e in report.errors] == [2, 4]
    assert "not valid JSON" in report.errors[0].reason
    assert "orders_so_far went backwards" in report.errors[1].reason
    assert client.live_pushes == [("live-1", 50), ("live-1", 80)]
    assert await ingested(infra, ingest, "vid-d") == [7]
    conn = await asyncpg.connect(infra.database_url)
    try:
        live = await conn.fetch(
            f"SELECT viewers, interactions FROM {ingest.settings.schema}.live_samples"
            " WHERE live_id = 'live-1'"
        )
    finally:
        await conn.close()
    assert [(r["viewers"], r["interactions"]) for r in live] == [(50, 6)]


async def test_a_truncated_or_replaced_file_is_read_again_from_its_start(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    tmp_path: Path,
) -> None:
    await mapped(repository, "vid-e", "vid-f", "vid-g")
    path = tmp_path / "rotating.csv"
    path.write_text(HEADER + "".join(row("vid-e", m, m * 1000) for m in range(1, 5)))
    tailer = FileTailer(StatsIntake(client, repository), repository)
    assert (await tailer.poll(str(path))).accepted == 4

    path.write_text(HEADER + row("vid-f", 1, 100))  # truncated in place, shorter
    truncated = await tailer.poll(str(path))
    assert (truncated.restarted, truncated.accepted, truncated.errors) == (True, 1, [])

    replacement = tmp_path / "rotating.csv.new"
    replacement.write_text(HEADER + "".join(row("vid-g", m, m * 10) for m in range(1, 9)))
    os.replace(replacement, path)  # a new file under the name, larger than the offset
    replaced = await tailer.poll(str(path))
    assert (replaced.restarted, replaced.accepted) == (True, 8)

    assert await ingested(infra, ingest, "vid-f") == [100]
    assert await ingested(infra, ingest, "vid-g") == [m * 10 for m in range(1, 9)]
    stored = await repository.file_offset(str(path))
    assert stored is not None
    assert stored.byte_offset == path.stat().st_size


async def test_small_batches_and_a_line_longer_than_a_batch(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    tmp_path: Path,
) -> None:
    await mapped(repository, "vid-k")
    path = tmp_path / "batches.csv"
    overlong = "vid-k," + "9" * 300 + "\n"
    rows = [row("vid-k", m, m * 100) for m in range(1, 4)]
    path.write_text(HEADER + rows[0] + overlong + rows[1] + rows[2])
    tailer = FileTailer(StatsIntake(client, repository), repository, read_bytes=80)

    report = await tailer.poll(str(path))
    assert report.accepted == 3
    assert [(e.line_number, e.reason) for e in report.errors] == [(3, "line longer than 80 bytes")]
    assert await ingested(infra, ingest, "vid-k") == [100, 200, 300]
    stored = await repository.file_offset(str(path))
    assert stored is not None
    assert (stored.byte_offset, stored.next_line) == (path.stat().st_size, 6)


async def test_the_tailer_loop_follows_its_files_until_stopped(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    tmp_path: Path,
) -> None:
    await mapped(repository, "vid-h")
    path = tmp_path / "live.csv"
    absent = tmp_path / "not-yet.jsonl"
    path.write_text(HEADER + row("vid-h", 1, 10))
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_file_tailer(
            StatsIntake(client, repository),
            repository,
            [str(absent), str(path)],
            ColumnMapping(),
            0.05,
            stop,
        )
    )

    async def has(views: list[int]) -> bool:
        return await ingested(infra, ingest, "vid-h") == views

    await eventually(lambda: has([10]), what="the first row")
    append(path, row("vid-h", 2, 20))
    await eventually(lambda: has([10, 20]), what="the appended row")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert client.video_pushes == [("vid-h", 10), ("vid-h", 20)]


def test_the_format_comes_from_the_extension() -> None:
    assert file_format("/data/a.CSV").value == "csv"
    assert file_format("b.jsonl").value == file_format("c.ndjson").value == "jsonl"
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl or \.ndjson"):
        file_format("d.json")


# --- the webhook ----------------------------------------------------------------------------


async def start_webhook(
    intake: StatsIntake, secret: str | None
) -> tuple[str, asyncio.Event, asyncio.Task[None]]:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_webhooks(intake, secret, ColumnMapping(), "127.0.0.1", port, stop)
    )
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await eventually(up, what="the webhook listening")
    return url, stop, task


@pytest.fixture
async def webhook(client: RecordingIngest, repository: CollectRepository) -> AsyncIterator[str]:
    url, stop, task = await start_webhook(StatsIntake(client, repository), SECRET)
    yield url
    stop.set()
    await asyncio.wait_for(task, 5)


async def post(
    url: str,
    body: bytes,
    *,
    content_type: str = "text/csv",
    timestamp: int | None = None,
    secret: str = SECRET,
    signature: str | None = None,
) -> tuple[int, dict[str, object]]:
    sent_at = int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp
    headers = {
        "Content-Type": content_type,
        "X-Pulsestock-Timestamp": str(sent_at),
        "X-Pulsestock-Signature": signature or sign(secret, sent_at, body),
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/stats", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_a_signed_post_is_applied_row_by_row(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    webhook: str,
) -> None:
    await mapped(repository, "vid-w")
    body = HEADER + row("vid-w", 1, 100) + "vid-w,1,2,3\n" + row("vid-w", 2, 200).rstrip("\n")
    status, answer = await post(webhook, body.encode())

    assert status == 200
    assert answer == {
        "accepted": 2,  # the last line counts without its newline
        "rejected": 1,
        "errors": [{"line": 3, "reason": "row has 4 fields, the header has 6"}],
    }
    assert await ingested(infra, ingest, "vid-w") == [100, 200]

    jsonl = json.dumps(
        {"video_id": "vid-w", "timestamp": at(3).isoformat(), "views": 300, "likes": 30,
         "comments": 3, "shares": 6}
    ).encode()  # fmt: skip
    status, answer = await post(webhook, jsonl, content_type="application/x-ndjson")
    assert (status, answer) == (200, {"accepted": 1, "rejected": 0, "errors": []})
    assert await ingested(infra, ingest, "vid-w") == [100, 200, 300]


async def test_unsigned_stale_or_future_posts_are_refused_and_change_nothing(
    infra: Infra,
    ingest: RunningService,
    client: RecordingIngest,
    repository: CollectRepository,
    webhook: str,
) -> None:
    await mapped(repository, "vid-x")
    body = (HEADER + row("vid-x", 1, 100)).encode()
    now = int(datetime.now(UTC).timestamp())
    refusals = [
        await post(webhook, body, secret="another-secret"),
        await post(webhook, body, signature="v1=" + "0" * 64),
        await post(webhook, body, signature=sign(SECRET, now, body + b"x")),  # body changed
        await post(webhook, body, timestamp=now - 400),  # well signed, too old
        await post(webhook, body, timestamp=now + 400),  # well signed, from the future
    ]
    assert [status for status, _ in refusals] == [401] * 5
    assert client.registered == []
    assert client.video_pushes == []
    assert await ingested(infra, ingest, "vid-x") == []

    status, answer = await post(webhook, body, content_type="application/json")
    assert (status, answer["error"]) == (415, webhooks.UNSUPPORTED_TYPE)
    assert await ingested(infra, ingest, "vid-x") == []


async def test_a_body_over_the_limit_is_refused(webhook: str, client: RecordingIngest) -> None:
    body = HEADER.encode() + b"x" * webhooks.MAX_BODY_BYTES
    status, _ = await post(webhook, body)
    assert status == 413
    assert client.video_pushes == []


async def test_without_a_secret_the_webhook_answers_503(
    client: RecordingIngest, repository: CollectRepository
) -> None:
    url, stop, task = await start_webhook(StatsIntake(client, repository), None)
    try:
        status, answer = await post(url, (HEADER + row("vid-y", 1, 1)).encode())
        assert status == 503
        assert "COLLECT_WEBHOOK_SECRET" in str(answer["error"])
        assert client.video_pushes == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


class FailingMappings:
    async def mappings(self, video_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        raise RuntimeError("password=hunter2 at /internal/path")


class UnreachableIngest:
    async def register_video(self, request: ingest_pb2.RegisterVideoRequest) -> bool:
        raise AioRpcError(grpc.StatusCode.UNAVAILABLE, Metadata(), Metadata(), "connect failed")

    async def push_video_samples(self, samples: Sequence[ev.VideoSampled]) -> PushReport:
        raise AssertionError("nothing is pushed before the video is registered")

    async def push_live_samples(self, samples: Sequence[ev.LiveSampled]) -> PushReport:
        raise AssertionError("no live rows here")


async def test_failures_answer_without_a_traceback() -> None:
    class Mapped:
        async def mappings(self, video_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
            return {"vid-z": [SKU]}

    body = (HEADER + row("vid-z", 1, 1)).encode()
    broken = StatsIntake(UnreachableIngest(), FailingMappings())
    url, stop, task = await start_webhook(broken, SECRET)
    try:
        with capture_logs() as logs:
            status, answer = await post(url, body)
        assert (status, answer) == (500, {"error": "internal error"})
        assert any(e["event"] == "stats webhook failed" for e in logs)  # logged, not sent
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)

    url, stop, task = await start_webhook(StatsIntake(UnreachableIngest(), Mapped()), SECRET)
    try:
        status, answer = await post(url, body)
        assert (status, answer) == (503, {"error": "ingest is unavailable: send again"})
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
