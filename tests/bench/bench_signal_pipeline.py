"""Content samples through the system, against the transport ceiling.

- ingest.pipeline_vs_raw_nats: samples/s from gRPC clients through ingest (validation,
  dedup state, outbox) and JetStream into signal's state (metrics, detector, snapshots),
  against a raw nats-py publish-and-consume loop of the same messages in the same run.
- signal.sample_to_pulse_p99_ms: from sending the sample that makes a video's pulse
  detectable to the `signal.pulse_detected` event arriving on NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import nats
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.bus import cloudevent_headers
from pulsestock.devstack.servers import free_port
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import ingest_pb2
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub

from tests.bench.bench_inventory import fresh_nats
from tests.bench.report import emit
from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, serving, start_service_process

VIDEOS = 200
ROUNDS = 40  # samples per video
STREAMS = 20
BENCH_ROUNDS = 5


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


@asynccontextmanager
async def services(infra: Infra, nats_url: str) -> AsyncIterator[tuple[int, str]]:
    ingest_schema, signal_schema = unique_name("b_ing"), unique_name("b_sig")
    ports = {"ingest": free_port(), "signal": free_port()}
    processes = []
    try:
        for name, schema in (("ingest", ingest_schema), ("signal", signal_schema)):
            await migrate(infra.database_url, name, schema)
            processes.append(
                start_service_process(
                    name, infra.database_url, nats_url, schema, ports[name], {"LOG_LEVEL": "error"}
                )
            )
        for port in ports.values():

            async def up(port: int = port) -> bool:
                return await serving(port)

            await eventually(up, within=30, what="service up")
        yield ports["ingest"], signal_schema
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
        for schema in (ingest_schema, signal_schema):
            await drop_schema(infra.database_url, schema)


async def register(stub: IngestServiceStub, video_id: str, published: datetime) -> None:
    await stub.RegisterVideo(
        ingest_pb2.RegisterVideoRequest(
            video_id=video_id,
            skus=[f"SKU-{video_id}"],
            creator_id="c",
            creator_followers=10_000,
            published_at=stamp(published),
            channel=Channel.CHANNEL_TIKTOK_SHOP,
        ),
        timeout=30,
    )


def samples_for(video_id: str, start: datetime, rounds: int) -> list[iev.VideoSampled]:
    views, out = 1000, []
    for r in range(rounds):
        views += 100 + (r * 7) % 13
        out.append(
            iev.VideoSampled(
                video_id=video_id,
                observed_at=stamp(start + timedelta(minutes=5 * r)),
                views=views,
                likes=views // 10,
                shares=views // 50,
                comments=views // 80,
            )
        )
    return out


async def bench_pipeline(infra: Infra) -> None:
    """Rounds alternate with the raw loop (the machine's load drifts); each round streams a
    fresh set of videos through the same running services."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=4)
    total = VIDEOS * ROUNDS
    ours: list[float] = []
    raw: list[float] = []
    async with (
        fresh_nats() as nats_url,
        services(infra, nats_url) as (ingest_port, signal_schema),
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}") as channel,
    ):
        stub = IngestServiceStub(channel)
        pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
        for round_number in range(BENCH_ROUNDS):
            per_video = {
                f"r{round_number}v{i}": samples_for(f"r{round_number}v{i}", start, ROUNDS)
                for i in range(VIDEOS)
            }
            await asyncio.gather(*(register(stub, v, now - timedelta(hours=5)) for v in per_video))
            ours.append(await pipeline_round(stub, pool, signal_schema, per_video, start))
            raw.append(await raw_nats_loop([s for v in per_video.values() for s in v]))
        await pool.close()
    emit(
        "ingest.pipeline_vs_raw_nats",
        statistics.median(ours),
        "samples/s",
        baseline=statistics.median(raw),
        baseline_is=(
            "nats-py publish_async of the same VideoSampled messages (CloudEvents headers) and"
            " a pull consumer that decodes and acks each, same run"
        ),
        samples_per_round=total,
        client_streams=STREAMS,
        rounds_ours=[round(x) for x in ours],
        rounds_raw=[round(x) for x in raw],
        round_ratios=[round(o / r, 3) for o, r in zip(ours, raw, strict=True)],
        measured="median of alternating rounds",
    )


async def pipeline_round(
    stub: IngestServiceStub,
    pool: asyncpg.Pool,
    signal_schema: str,
    per_video: dict[str, list[iev.VideoSampled]],
    start: datetime,
) -> float:
    """Samples/s from the first sent to the last folded into signal's state."""
    last = start + timedelta(minutes=5 * (ROUNDS - 1))

    async def stream(videos: list[str]) -> None:
        async def requests() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
            for r in range(ROUNDS):  # one message per round: a sample of each video
                yield ingest_pb2.PushVideoSamplesRequest(samples=[per_video[v][r] for v in videos])

        reply = await stub.PushVideoSamples(requests(), timeout=300)
        assert reply.rejected == 0, reply.rejections[:3]

    groups = [list(per_video)[i::STREAMS] for i in range(STREAMS)]
    started = time.perf_counter()
    await asyncio.gather(*(stream(g) for g in groups))

    async def all_folded() -> bool:
        done = await pool.fetchval(
            f"SELECT count(*) FROM {signal_schema}.video_state"
            " WHERE last_observed_at = $1 AND video_id = ANY($2::text[])",
            last,
            list(per_video),
        )
        return bool(done == len(per_video))

    await eventually(all_folded, within=300, what="signal to fold every sample")
    return sum(len(v) for v in per_video.values()) / (time.perf_counter() - started)


async def raw_nats_loop(messages: list[iev.VideoSampled]) -> float:
    async with fresh_nats() as nats_url:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name="RAW", subjects=["raw.>"])
        await js.add_consumer("RAW", durable_name="raw__consumer")
        subscription = await js.pull_subscribe_bind("raw__consumer", stream="RAW")
        payloads = [
            (
                f"raw.video_sampled.{i % 16}",
                m.SerializeToString(),
                cloudevent_headers(
                    event_id=str(uuid.uuid4()),
                    event_type="pulsestock.v1.VideoSampled",
                    source="/bench",
                    subject=m.video_id,
                ),
            )
            for i, m in enumerate(messages)
        ]
        started = time.perf_counter()

        async def produce() -> None:
            for at in range(0, len(payloads), 500):
                futures = [
                    await js.publish_async(s, d, headers=h) for s, d, h in payloads[at : at + 500]
                ]
                await asyncio.gather(*futures)

        async def consume() -> None:
            seen = 0
            while seen < len(payloads):
                try:
                    batch = await subscription.fetch(1, timeout=5)
                except TimeoutError:
                    continue
                with contextlib.suppress(TimeoutError):
                    batch += await subscription.fetch(255, timeout=0.005)
                for message in batch:
                    iev.VideoSampled.FromString(message.data)
                    await message.ack()
                seen += len(batch)

        await asyncio.gather(produce(), consume())
        rate = len(payloads) / (time.perf_counter() - started)
        await nc.close()
    return rate


async def bench_sample_to_pulse(infra: Infra) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=3)
    latencies: list[float] = []
    async with fresh_nats() as nats_url, services(infra, nats_url) as (ingest_port, _schema):
        nc = await nats.connect(nats_url)
        arrivals: dict[str, float] = {}

        async def on_pulse(message: nats.aio.msg.Msg) -> None:
            from pulsestock.v1 import signal_events_pb2

            arrivals.setdefault(
                signal_events_pb2.PulseDetected.FromString(message.data).sku, time.perf_counter()
            )

        await nc.subscribe("signal.pulse_detected.>", cb=on_pulse)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}") as channel:
            stub = IngestServiceStub(channel)
            for index in range(30):
                video = f"p{index}"
                await register(stub, video, now - timedelta(hours=4))
                history = samples_for(video, start, 14)

                async def one(messages: list[iev.VideoSampled]) -> None:
                    async def requests() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
                        yield ingest_pb2.PushVideoSamplesRequest(samples=messages)

                    await stub.PushVideoSamples(requests(), timeout=30)

                await one(history)
                views = history[-1].views
                for step in range(1, 6):  # the surge, one sample at a time
                    views += 5000 * step
                    sample = iev.VideoSampled(
                        video_id=video,
                        observed_at=stamp(start + timedelta(minutes=5 * (13 + step))),
                        views=views,
                        likes=views // 10,
                        shares=views // 50,
                        comments=views // 80,
                    )
                    sent = time.perf_counter()
                    await one([sample])
                    with contextlib.suppress(AssertionError):  # this sample may not be the one

                        async def arrived(sku: str = f"SKU-{video}") -> bool:
                            return sku in arrivals

                        await eventually(arrived, within=2.0, what="a pulse")
                    if f"SKU-{video}" in arrivals:
                        latencies.append((arrivals[f"SKU-{video}"] - sent) * 1000)
                        break
        await nc.close()
    latencies.sort()
    emit(
        "signal.sample_to_pulse_p99_ms",
        latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "ms",
        p50_ms=round(statistics.median(latencies), 2),
        pulses=len(latencies),
        measured=(
            "from sending the sample that makes the pulse detectable (through ingest) to"
            " PulseDetected on NATS"
        ),
    )


async def run(infra: Infra) -> None:
    await bench_pipeline(infra)
    await bench_sample_to_pulse(infra)
