"""Content samples through the system, against the transport ceiling.

- ingest.pipeline_vs_raw_nats: samples/s from gRPC clients through ingest (validation,
  dedup state, outbox) and JetStream into signal's state (metrics, detector, snapshots),
  against a raw nats-py publish-and-consume loop of the same messages in the same run.
- signal.sample_to_pulse_p99_ms: from sending the sample that should trigger a video's
  pulse to the `signal.pulse_detected` event arriving on NATS (late detection counted as
  late, a missed pulse as a failure), against the same durable hops without our work.

Rounds alternate ours and the baseline; each reports the median per-round ratio with its
min and max.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import nats
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestock.bus import cloudevent_headers
from pulsestock.devstack.servers import free_port
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import ingest_pb2, signal_events_pb2
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub

from tests.bench.bench_inventory import fresh_nats
from tests.bench.report import alternating_rounds, emit
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


PULSE_ROUNDS = 3
PULSE_VIDEOS = 40  # per round and side
HISTORY = 14  # quiet samples before the surge
SURGE = 5  # surge samples; the first is the one that should trigger the pulse
SAMPLE_INTERVAL = timedelta(minutes=5)  # the spacing of the samples' observed_at
WAIT_PER_SAMPLE_S = 2.0  # how long a surge sample is given before the next is sent
LAST_WAIT_S = 10.0  # after the last surge sample, before a pulse counts as never detected


@dataclass
class PulseOutcomes:
    """One side's round: latencies of the pulses seen, and the ones that went wrong."""

    latencies_ms: list[float] = field(default_factory=list)
    samples_late: list[int] = field(default_factory=list)
    undetected: list[str] = field(default_factory=list)
    before_surge: list[str] = field(default_factory=list)

    def censored_ms(self) -> list[float]:
        """Latencies with a never-detected pulse counted as the longest wait it was given
        (a lower bound: it is a failure, not a fast pulse)."""
        never = (SURGE - 1) * WAIT_PER_SAMPLE_S * 1000 + LAST_WAIT_S * 1000
        return self.latencies_ms + [never] * (len(self.undetected) + len(self.before_surge))


def surge_samples(
    video_id: str, after: iev.VideoSampled, start: datetime
) -> list[iev.VideoSampled]:
    views, out = after.views, []
    for step in range(1, SURGE + 1):
        views += 5000 * step
        out.append(
            iev.VideoSampled(
                video_id=video_id,
                observed_at=stamp(start + SAMPLE_INTERVAL * (HISTORY - 1 + step)),
                views=views,
                likes=views // 10,
                shares=views // 50,
                comments=views // 80,
            )
        )
    return out


async def pulse_round_ours(
    stub: IngestServiceStub,
    arrivals: dict[str, tuple[float, datetime]],
    round_number: int,
    now: datetime,
) -> PulseOutcomes:
    """Each video: its quiet history, then the surge one sample at a time until its SKU's
    PulseDetected arrives. The latency runs from sending the first surge sample: a pulse
    detected on the k-th surge sample carries the (k-1) sampling intervals it waited for
    in the samples' own time, plus the wall time from sending that sample to the event."""
    start = now - timedelta(hours=3)
    outcomes = PulseOutcomes()

    async def push(messages: list[iev.VideoSampled]) -> None:
        async def requests() -> AsyncIterator[ingest_pb2.PushVideoSamplesRequest]:
            yield ingest_pb2.PushVideoSamplesRequest(samples=messages)

        reply = await stub.PushVideoSamples(requests(), timeout=30)
        assert reply.rejected == 0, reply.rejections[:3]

    for index in range(PULSE_VIDEOS):
        video = f"p{round_number}-{index}"
        sku = f"SKU-{video}"
        await register(stub, video, now - timedelta(hours=4))
        history = samples_for(video, start, HISTORY)
        await push(history)
        surge = surge_samples(video, history[-1], start)
        sent: list[float] = []
        for sample in surge:
            sent.append(time.perf_counter())
            await push([sample])
            with contextlib.suppress(AssertionError):  # not yet: the next sample goes

                async def arrived(sku: str = sku) -> bool:
                    return sku in arrivals

                await eventually(arrived, within=WAIT_PER_SAMPLE_S, what="a pulse")
            if sku in arrivals:
                break
        if sku not in arrivals:
            with contextlib.suppress(AssertionError):
                await eventually(arrived, within=LAST_WAIT_S, what="a pulse")
        if sku not in arrivals:
            outcomes.undetected.append(video)
            continue
        arrival, detected_at = arrivals[sku]
        observed = [s.observed_at.ToDatetime(tzinfo=UTC) for s in surge]
        if detected_at not in observed:
            outcomes.before_surge.append(video)  # a false alarm on the quiet history
            continue
        late = observed.index(detected_at)
        outcomes.samples_late.append(late)
        outcomes.latencies_ms.append(
            (SAMPLE_INTERVAL * late).total_seconds() * 1000 + (arrival - sent[late]) * 1000
        )
    return outcomes


@asynccontextmanager
async def durable_hops_floor(
    infra: Infra, nats_url: str
) -> AsyncIterator[Callable[[str, iev.VideoSampled], Awaitable[float]]]:
    """The same durable steps as ours without our work: the sender commits the sample to
    PostgreSQL and publishes it to JetStream (ack awaited); a pull consumer (fetch one, then
    what is there, as ours) commits it to PostgreSQL and publishes a pulse to JetStream; a
    core NATS subscriber sees the pulse. Yields `send(video_id, sample)` -> ms to the pulse."""
    schema = unique_name("b_floor")
    token = schema.lower()
    pool = await asyncpg.create_pool(infra.database_url, min_size=2, max_size=2)
    await pool.execute(f"CREATE SCHEMA {schema}")
    await pool.execute(f"CREATE TABLE {schema}.received (video_id text, views bigint)")
    await pool.execute(f"CREATE TABLE {schema}.state (video_id text PRIMARY KEY, views bigint)")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=f"{token}_IN".upper(), subjects=[f"{token}.sample.>"])
    await js.add_stream(name=f"{token}_OUT".upper(), subjects=[f"{token}.pulse.>"])
    await js.add_consumer(f"{token}_IN".upper(), durable_name="floor__consumer")
    subscription = await js.pull_subscribe_bind("floor__consumer", stream=f"{token}_IN".upper())
    seen: dict[str, asyncio.Future[float]] = {}

    async def on_pulse(message: nats.aio.msg.Msg) -> None:
        waiter = seen.get(message.subject.rsplit(".", 1)[1])
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    async def consume() -> None:
        while True:
            try:
                batch = list(await subscription.fetch(1, timeout=1))
            except TimeoutError:
                continue
            with contextlib.suppress(TimeoutError):
                batch += await subscription.fetch(255, timeout=0.005)
            for message in batch:
                sample = iev.VideoSampled.FromString(message.data)
                await pool.execute(
                    f"INSERT INTO {schema}.state VALUES ($1, $2) ON CONFLICT (video_id)"
                    " DO UPDATE SET views = excluded.views",
                    sample.video_id,
                    sample.views,
                )
                await js.publish(f"{token}.pulse.{sample.video_id}", message.data)
                await message.ack()

    async def send(video_id: str, sample: iev.VideoSampled) -> float:
        seen[video_id] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await pool.execute(f"INSERT INTO {schema}.received VALUES ($1, $2)", video_id, sample.views)
        headers = cloudevent_headers(
            event_id=str(uuid.uuid4()),
            event_type="pulsestock.v1.VideoSampled",
            source="/bench",
            subject=video_id,
        )
        await js.publish(f"{token}.sample.{video_id}", sample.SerializeToString(), headers=headers)
        arrived = await asyncio.wait_for(seen[video_id], 30)
        return (arrived - started) * 1000

    await nc.subscribe(f"{token}.pulse.>", cb=on_pulse)
    consumer = asyncio.create_task(consume())
    try:
        yield send
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await nc.close()
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


async def bench_sample_to_pulse(infra: Infra) -> None:
    """Rounds alternate ours (ingest and signal as processes) and the durable-hops floor."""
    now = datetime.now(UTC).replace(microsecond=0)
    ours: list[PulseOutcomes] = []
    floor: list[list[float]] = []
    async with (
        fresh_nats() as nats_url,
        services(infra, nats_url) as (ingest_port, _schema),
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}") as channel,
        durable_hops_floor(infra, nats_url) as floor_send,
    ):
        nc = await nats.connect(nats_url)
        arrivals: dict[str, tuple[float, datetime]] = {}

        async def on_pulse(message: nats.aio.msg.Msg) -> None:
            pulse = signal_events_pb2.PulseDetected.FromString(message.data)
            arrivals.setdefault(
                pulse.sku, (time.perf_counter(), pulse.detected_at.ToDatetime(tzinfo=UTC))
            )

        await nc.subscribe("signal.pulse_detected.>", cb=on_pulse)
        stub = IngestServiceStub(channel)
        for round_number in range(PULSE_ROUNDS):
            ours.append(await pulse_round_ours(stub, arrivals, round_number, now))
            floor.append(
                [
                    await floor_send(
                        f"f{round_number}-{i}",
                        samples_for(f"f{round_number}-{i}", now, HISTORY + 1)[-1],
                    )
                    for i in range(PULSE_VIDEOS)
                ]
            )
        await nc.close()
    all_ours = [ms for o in ours for ms in o.censored_ms()]
    all_floor = [ms for f in floor for ms in f]
    undetected = [v for o in ours for v in o.undetected]
    before_surge = [v for o in ours for v in o.before_surge]
    late = [n for o in ours for n in o.samples_late]
    emit(
        "signal.sample_to_pulse_p99_ms",
        percentile(all_ours, 0.99),
        "ms",
        baseline=percentile(all_floor, 0.99),
        lower_is_better=True,
        baseline_is=(
            "the durable hops alone: PostgreSQL commit + JetStream publish of the sample, a"
            " pull consumer committing it and publishing a pulse to JetStream, a subscriber"
        ),
        **alternating_rounds(
            [percentile(o.censored_ms(), 0.99) for o in ours],
            [percentile(f, 0.99) for f in floor],
            lower_is_better=True,
        ),
        p50_ms=round(statistics.median(all_ours), 2),
        baseline_p50_ms=round(statistics.median(all_floor), 2),
        pulses=len(all_ours),
        detected_on_first_surge_sample=late.count(0),
        detected_late={str(n): late.count(n) for n in sorted(set(late)) if n},
        undetected=undetected,
        detected_before_surge=before_surge,
        measured=(
            "from sending (through ingest's gRPC stream) the first surge sample, the one that"
            " should trigger the pulse, to PulseDetected on NATS; a pulse detected on a later"
            f" sample adds {SAMPLE_INTERVAL.total_seconds() / 60:g} min per sample (their"
            " spacing in observed time); a pulse never detected counts as the whole wait and"
            " fails the run"
        ),
    )
    if undetected or before_surge:
        raise AssertionError(
            f"pulses never detected: {undetected}; detected before their surge: {before_surge}"
        )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(infra: Infra) -> None:
    await bench_pipeline(infra)
    await bench_sample_to_pulse(infra)
