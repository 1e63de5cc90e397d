"""The collector as a real service against the TikTok Display fake and real ingest and signal
(PostgreSQL, NATS JetStream): a video taking off becomes a pulse with nobody calling ingest;
a revoked grant stops polling that creator; a killed collector resumes from its checkpoint;
bad requests change nothing. Ticks are shortened (the schedule's minutes are ticks)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from cryptography.fernet import Fernet
from pulsestock.collect.entrypoints.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from pulsestock.devstack.servers import free_port
from pulsestock.fakes.tiktok_display import (
    QUERY_PATH,
    FakeTikTokDisplay,
    ViewScript,
)
from pulsestock.v1 import collect_pb2, signal_pb2
from pulsestock.v1.collect_pb2_grpc import CollectServiceStub
from pulsestock.v1.signal_pb2_grpc import SignalServiceStub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, running_service, serving, start_service_process

TICK_S = 0.3
SKU = "MUG-COLLECT-1"


@pytest.fixture
async def display() -> AsyncIterator[FakeTikTokDisplay]:
    fake = FakeTikTokDisplay()
    await fake.start()
    yield fake
    await fake.stop()


def collector_env(
    fake: FakeTikTokDisplay, seed: Path, ingest_address: str, token_key: str
) -> dict[str, str]:
    return {
        "TIKTOK_DISPLAY_API_URL": fake.url,
        "TIKTOK_CLIENT_KEY": fake.client_key,
        "TIKTOK_CLIENT_SECRET": fake.client_secret,
        "COLLECT_TOKEN_KEY": token_key,
        "COLLECT_CREATORS_FILE": str(seed),
        "COLLECT_TICK_SECONDS": str(TICK_S),
        "COLLECT_LIST_EVERY_TICKS": "3",
        "INGEST_ADDR": ingest_address,
    }


def seed_creator(
    fake: FakeTikTokDisplay, path: Path, open_id: str, followers: int | None = None
) -> Path:
    """A creator's grant as a mounted file; `followers` grants the stats scope too."""
    if followers is None:
        fake.add_creator(open_id)
    else:
        fake.add_creator(open_id, scopes=("user.info.basic", "user.info.stats", "video.list"))
        fake.creators[open_id].follower_count = followers
    path.write_text(
        json.dumps(
            [
                {
                    "tokens": fake.issue_tokens(open_id),
                    "issued_at": time.time(),
                    "default_skus": [SKU],
                }
            ]
        )
    )
    return path


async def ingest_samples(database_url: str, schema: str, video_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(
            await conn.fetch(
                f"SELECT observed_at, views FROM {schema}.video_samples WHERE video_id = $1"
                " ORDER BY observed_at",
                video_id,
            )
        )
    finally:
        await conn.close()


@pytest.mark.slow
async def test_a_video_taking_off_becomes_a_pulse_with_nobody_calling_ingest(
    infra: Infra, nats_url: str, display: FakeTikTokDisplay, tmp_path: Path
) -> None:
    seed = seed_creator(display, tmp_path / "creators.json", "creator-pulse", followers=250_000)
    now = time.time()
    cold = display.add_video(
        "creator-pulse", posted_at=now - 5, script=ViewScript(now, base_per_minute=30_000)
    )
    viral = display.add_video(
        "creator-pulse",
        posted_at=now - 5,
        # Ten ticks or so of a steady rate (the detector's warm-up), then 40x within a second.
        script=ViewScript(
            now, base_per_minute=60_000, surge_after_s=5.0, surge_multiplier=40.0, ramp_s=1.0
        ),
    )
    schemas = {name: unique_name(name[:3]) for name in ("ingest", "signal", "collect")}
    try:
        async with (
            running_service("signal", infra.database_url, nats_url, schemas["signal"]) as sig,
            running_service("ingest", infra.database_url, nats_url, schemas["ingest"]) as ingest,
            running_service(
                "collect",
                infra.database_url,
                nats_url,
                schemas["collect"],
                collector_env(display, seed, ingest.address, Fernet.generate_key().decode()),
            ) as collect,
        ):
            pulses = SignalServiceStub(sig.channel)

            async def pulse_of_viral() -> bool:
                found = await pulses.ListPulses(signal_pb2.ListPulsesRequest(sku=SKU), timeout=5)
                return any(viral.id in p.video_ids for p in found.pulses)

            await eventually(pulse_of_viral, within=45, what="a pulse naming the viral video")
            found = await pulses.ListPulses(signal_pb2.ListPulsesRequest(sku=SKU), timeout=5)
            first = min(
                (p for p in found.pulses if viral.id in p.video_ids),
                key=lambda p: p.detected_at.ToDatetime().timestamp(),
            )
            # Detected on a sample taken after the surge began, not before it.
            assert first.detected_at.ToDatetime(tzinfo=UTC).timestamp() >= now + 5.0 - TICK_S
            samples = await ingest_samples(infra.database_url, schemas["ingest"], viral.id)
            assert len(samples) >= 10
            conn = await asyncpg.connect(infra.database_url)
            try:
                reach = await conn.fetchval(
                    f"SELECT creator_followers FROM {schemas['ingest']}.videos WHERE video_id = $1",
                    viral.id,
                )
            finally:
                await conn.close()
            assert reach == 250_000  # the creator's reach, from /v2/user/info/
            assert [row["views"] for row in samples] == sorted(row["views"] for row in samples)

            listed = await CollectServiceStub(collect.channel).ListVideos(
                collect_pb2.ListVideosRequest(open_id="creator-pulse"), timeout=5
            )
            by_id = {v.video_id: v for v in listed.videos}
            assert set(by_id) == {cold.id, viral.id}
            assert list(by_id[viral.id].skus) == [SKU]
            assert by_id[viral.id].views > 0

            async def pulse_fed_back() -> bool:
                answer = await CollectServiceStub(collect.channel).ListVideos(
                    collect_pb2.ListVideosRequest(open_id="creator-pulse"), timeout=5
                )
                return any(v.video_id == viral.id and v.pulse_active for v in answer.videos)

            # signal's PulseDetected reaches the collector: the video is polled every tick.
            await eventually(pulse_fed_back, within=15, what="the pulse fed back to the schedule")
            # Every call asked at most 20 ids, as documented.
            for request in display.answered(QUERY_PATH, 200):
                assert 1 <= len(json.loads(request.body)["filters"]["video_ids"]) <= 20
    finally:
        for schema in schemas.values():
            await drop_schema(infra.database_url, schema)


async def test_a_revoked_grant_stops_that_creator_and_is_reported(
    infra: Infra, nats_url: str, display: FakeTikTokDisplay, tmp_path: Path
) -> None:
    seed = seed_creator(display, tmp_path / "creators.json", "creator-revoked")
    video = display.add_video("creator-revoked", posted_at=time.time() - 5, view_count=10)
    schemas = {name: unique_name(name[:3]) for name in ("ingest", "collect")}
    try:
        async with (
            running_service("ingest", infra.database_url, nats_url, schemas["ingest"]) as ingest,
            running_service(
                "collect",
                infra.database_url,
                nats_url,
                schemas["collect"],
                collector_env(display, seed, ingest.address, Fernet.generate_key().decode()),
            ) as collect,
        ):
            stub = CollectServiceStub(collect.channel)

            async def sampled() -> bool:
                rows = await ingest_samples(infra.database_url, schemas["ingest"], video.id)
                return len(rows) >= 2

            await eventually(sampled, within=20, what="samples of the creator's video")
            display.revoke("creator-revoked")
            display.expire_access_tokens("creator-revoked")

            async def reported() -> bool:
                answer = await stub.ListVideos(collect_pb2.ListVideosRequest(), timeout=5)
                return any(c.needs_reauthorisation for c in answer.creators)

            await eventually(reported, within=20, what="the creator marked for reauthorisation")
            answer = await stub.ListVideos(collect_pb2.ListVideosRequest(), timeout=5)
            assert answer.creators[0].reason == "invalid_grant"
            calls = len(display.requests)
            before = len(await ingest_samples(infra.database_url, schemas["ingest"], video.id))
            # A few ticks later nothing more was asked of TikTok for that creator.
            deadline = time.monotonic() + 10 * TICK_S

            async def ticks_passed() -> bool:
                return time.monotonic() > deadline

            await eventually(ticks_passed, within=10)
            assert len(display.requests) == calls
            after = len(await ingest_samples(infra.database_url, schemas["ingest"], video.id))
            assert after == before
    finally:
        for schema in schemas.values():
            await drop_schema(infra.database_url, schema)


async def test_bad_requests_get_field_details_and_change_nothing(
    infra: Infra, nats_url: str, display: FakeTikTokDisplay, tmp_path: Path
) -> None:
    schema = unique_name("col")
    env = {
        "TIKTOK_DISPLAY_API_URL": display.url,
        "TIKTOK_CLIENT_KEY": display.client_key,
        "TIKTOK_CLIENT_SECRET": display.client_secret,
        "COLLECT_TOKEN_KEY": Fernet.generate_key().decode(),
        "INGEST_ADDR": f"127.0.0.1:{free_port()}",  # nobody: nothing must reach ingest
    }
    try:
        async with running_service("collect", infra.database_url, nats_url, schema, env) as collect:
            stub = CollectServiceStub(collect.channel)
            with pytest.raises(grpc.aio.AioRpcError) as bad_map:
                await stub.MapVideo(
                    collect_pb2.MapVideoRequest(video_id="bad id!", skus=["ok-1", "no spaces"]),
                    timeout=5,
                )
            assert bad_map.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert set(field_violations(bad_map.value)) == {"video_id", "skus[1]"}
            with pytest.raises(grpc.aio.AioRpcError) as no_skus:
                await stub.MapVideo(collect_pb2.MapVideoRequest(video_id="v1"), timeout=5)
            assert set(field_violations(no_skus.value)) == {"skus"}

            display.add_creator("creator-code")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ConnectCreator(
                    collect_pb2.ConnectCreatorRequest(
                        code="code.not-issued", redirect_uri="https://example.com/cb"
                    ),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "invalid_grant" in (refused.value.details() or "")
            listed = await stub.ListVideos(collect_pb2.ListVideosRequest(), timeout=5)
            assert not listed.creators
            assert not listed.videos

            # A good code connects the creator; a code is good once.
            code = display.authorization_code("creator-code")
            connected = await stub.ConnectCreator(
                collect_pb2.ConnectCreatorRequest(
                    code=code, redirect_uri="https://example.com/cb", default_skus=[SKU]
                ),
                timeout=5,
            )
            assert connected.open_id == "creator-code"
            with pytest.raises(grpc.aio.AioRpcError) as reused:
                await stub.ConnectCreator(
                    collect_pb2.ConnectCreatorRequest(
                        code=code, redirect_uri="https://example.com/cb"
                    ),
                    timeout=5,
                )
            assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            listed = await stub.ListVideos(collect_pb2.ListVideosRequest(), timeout=5)
            assert [(c.open_id, list(c.default_skus)) for c in listed.creators] == [
                ("creator-code", [SKU])
            ]
            mapped = await stub.MapVideo(
                collect_pb2.MapVideoRequest(video_id="v1", skus=["B-1", "A-1"]), timeout=5
            )
            again = await stub.MapVideo(
                collect_pb2.MapVideoRequest(video_id="v1", skus=["A-1", "B-1"]), timeout=5
            )
            assert (mapped.changed, again.changed) == (True, False)
        # The grant is stored sealed: no token appears in the table in clear.
        conn = await asyncpg.connect(infra.database_url)
        try:
            sealed = await conn.fetchval(f"SELECT grant_sealed FROM {schema}.creators")
            events = await conn.fetch(f"SELECT data FROM {schema}.events")
        finally:
            await conn.close()
        assert b"act." not in sealed
        assert b"rft." not in sealed
        assert all(b"act." not in e["data"] and b"rft." not in e["data"] for e in events)
    finally:
        await drop_schema(infra.database_url, schema)


@pytest.mark.slow
async def test_a_killed_collector_resumes_from_its_checkpoint(
    infra: Infra, nats_url: str, display: FakeTikTokDisplay, tmp_path: Path
) -> None:
    seed = seed_creator(display, tmp_path / "creators.json", "creator-restart")
    now = time.time()
    video = display.add_video(
        "creator-restart", posted_at=now - 5, script=ViewScript(now, base_per_minute=6_000)
    )
    schemas = {name: unique_name(name[:3]) for name in ("ingest", "collect")}
    try:
        async with running_service(
            "ingest", infra.database_url, nats_url, schemas["ingest"]
        ) as ingest:
            await migrate(infra.database_url, "collect", schemas["collect"])
            env = collector_env(display, seed, ingest.address, Fernet.generate_key().decode())
            port = free_port()

            def start() -> object:
                return start_service_process(
                    "collect", infra.database_url, nats_url, schemas["collect"], port, env
                )

            async def samples() -> list[asyncpg.Record]:
                return await ingest_samples(infra.database_url, schemas["ingest"], video.id)

            async def at_least(count: int) -> bool:
                return len(await samples()) >= count

            process = start()
            try:
                await eventually(lambda: serving(port), within=30, what="collect SERVING")
                await eventually(lambda: at_least(4), within=20, what="samples before the kill")
            finally:
                os.kill(process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
                process.wait(10)  # type: ignore[attr-defined]
            killed_at = time.time()
            before = await samples()
            lists_before = len(display.answered("/v2/video/list/", 200))
            process = start()
            try:
                await eventually(lambda: at_least(len(before) + 4), within=30, what="resumed")
            finally:
                process.terminate()  # type: ignore[attr-defined]
                process.wait(10)  # type: ignore[attr-defined]
            after = await samples()
            times = [row["observed_at"].timestamp() for row in after]
            views = [row["views"] for row in after]
            assert times == sorted(set(times))  # nothing sent twice
            assert views == sorted(views)
            # No gap beyond the restart itself: the first sample after it came within a few
            # ticks of the process being back (start-up included).
            resumed = [t for t in times if t > killed_at]
            assert resumed
            assert resumed[0] - killed_at < 15
            # On start it read the creator's list again (a read, not a resend).
            assert len(display.answered("/v2/video/list/", 200)) > lists_before
    finally:
        for schema in schemas.values():
            await drop_schema(infra.database_url, schema)


async def test_signed_stats_posts_and_tailed_files_reach_ingest_through_the_service(
    infra: Infra, nats_url: str, tmp_path: Path
) -> None:
    """The wiring: the webhook on collect's HTTP port and the file tailer on COLLECT_FILES."""
    secret = "stats-secret-1"
    export = tmp_path / "tracker.csv"
    export.write_text("video_id,timestamp,views,likes,comments,shares\n")
    schemas = {name: unique_name(name[:3]) for name in ("ingest", "collect")}
    try:
        async with running_service(
            "ingest", infra.database_url, nats_url, schemas["ingest"]
        ) as ingest:
            env = {
                "INGEST_ADDR": ingest.address,
                "COLLECT_WEBHOOK_SECRET": secret,
                "COLLECT_FILES": str(export),
                "COLLECT_FILE_POLL_SECONDS": "0.1",
            }
            async with running_service(
                "collect", infra.database_url, nats_url, schemas["collect"], env
            ) as collect:
                stub = CollectServiceStub(collect.channel)
                for video_id in ("posted-1", "tailed-1"):
                    await stub.MapVideo(
                        collect_pb2.MapVideoRequest(video_id=video_id, skus=[SKU]), timeout=5
                    )
                now = int(time.time())
                body = (
                    "video_id,timestamp,views,likes,comments,shares\n"
                    f"posted-1,{now - 120},100,10,1,1\n"
                    f"posted-1,{now - 60},250,20,2,3\n"
                    "posted-1,not-a-time,300,20,2,3\n"
                ).encode()
                url = f"http://127.0.0.1:{collect.settings.http_port}/v1/stats"
                async with aiohttp.ClientSession() as http:
                    forged = await http.post(
                        url,
                        data=body,
                        headers={
                            "Content-Type": "text/csv",
                            TIMESTAMP_HEADER: str(now),
                            SIGNATURE_HEADER: sign("not-the-secret", now, body),
                        },
                    )
                    assert forged.status == 401
                    signed = await http.post(
                        url,
                        data=body,
                        headers={
                            "Content-Type": "text/csv",
                            TIMESTAMP_HEADER: str(now),
                            SIGNATURE_HEADER: sign(secret, now, body),
                        },
                    )
                    assert signed.status == 200
                    answer = await signed.json()
                assert (answer["accepted"], answer["rejected"]) == (2, 1)
                assert [e["line"] for e in answer["errors"]] == [4]
                rows = await ingest_samples(infra.database_url, schemas["ingest"], "posted-1")
                assert [r["views"] for r in rows] == [100, 250]

                with export.open("a") as file:
                    file.write(f"tailed-1,{now - 30},40,4,0,1\n")

                async def tailed() -> bool:
                    found = await ingest_samples(infra.database_url, schemas["ingest"], "tailed-1")
                    return [r["views"] for r in found] == [40]

                await eventually(tailed, within=15, what="the tailed row in ingest")
    finally:
        for schema in schemas.values():
            await drop_schema(infra.database_url, schema)
