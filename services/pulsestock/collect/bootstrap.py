"""Wiring of collect: the Display API poller, the pulse feedback from signal, the stats file
tailer and webhook, the gRPC API, migrations. One replica: two pollers would spend the API
budget twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from pulsestock.bus import DurableConsumer, ensure_consumer, ensure_stream, service_stream
from pulsestock.bus.codec import Envelope
from pulsestock.bus.provision import ConsumerSpec
from pulsestock.clock import utc_now
from pulsestock.collect.adapters.display_api import (
    DEFAULT_BASE_URL,
    CreatorTokens,
    DisplayApiClient,
)
from pulsestock.collect.adapters.ingest_client import IngestClient
from pulsestock.collect.adapters.postgres import CollectRepository
from pulsestock.collect.application.collector import Collector, CollectorSettings
from pulsestock.collect.application.commands import CollectCommands
from pulsestock.collect.application.file_tailer import file_format, run_file_tailer
from pulsestock.collect.application.stats_intake import StatsIntake
from pulsestock.collect.domain.file_source import ColumnMapping
from pulsestock.collect.domain.polling import PollingPolicy
from pulsestock.collect.entrypoints.grpc_api import CollectServicer
from pulsestock.collect.entrypoints.webhooks import serve_webhooks
from pulsestock.config import ConfigError, Env, peer_address
from pulsestock.runtime import ServiceContext, ServiceDefinition
from pulsestock.telemetry import get_logger
from pulsestock.v1 import collect_pb2, collect_pb2_grpc, signal_events_pb2
from pulsestock.v1.common_pb2 import Channel

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
PULSES = ConsumerSpec(
    stream=service_stream("signal").name,
    durable="collect__pulses",
    filter_subjects=["signal.pulse_detected.>", "signal.pulse_ended.>"],
)
log = get_logger(__name__)


@dataclass(frozen=True)
class SeedCreator:
    """A creator whose grant arrives as a mounted secret instead of through ConnectCreator."""

    tokens: CreatorTokens
    issued_at: float
    default_skus: tuple[str, ...]
    seller_id: str


@dataclass(frozen=True)
class CollectSettings:
    api_url: str
    client_key: str | None
    client_secret: str | None = field(repr=False)
    token_key: str | None = field(repr=False)
    ingest_address: str
    collector: CollectorSettings
    seed_file: str | None
    files: tuple[str, ...]
    file_mapping: ColumnMapping
    file_poll_seconds: float
    webhook_secret: str | None = field(repr=False)

    @classmethod
    def from_env(cls, env: Env | None = None) -> CollectSettings:
        env = env or Env()
        return cls(
            api_url=(env.url("TIKTOK_DISPLAY_API_URL", ("http", "https")) or DEFAULT_BASE_URL),
            client_key=env.raw("TIKTOK_CLIENT_KEY"),
            client_secret=env.secret("TIKTOK_CLIENT_SECRET"),
            token_key=env.secret("COLLECT_TOKEN_KEY"),
            ingest_address=peer_address(env, "ingest", 50051),
            collector=CollectorSettings(
                tick_seconds=env.number("COLLECT_TICK_SECONDS", 60.0, minimum=0.05, maximum=3600),
                calls_per_tick=env.integer("COLLECT_CALLS_PER_TICK", 30, minimum=1, maximum=600),
                list_every_ticks=env.integer(
                    "COLLECT_LIST_EVERY_TICKS", 5, minimum=1, maximum=1440
                ),
                policy=PollingPolicy(),
            ),
            seed_file=env.raw("COLLECT_CREATORS_FILE"),
            files=_stats_files(env.raw("COLLECT_FILES")),
            file_mapping=_file_mapping(env.raw("COLLECT_FILE_MAPPING")),
            file_poll_seconds=env.number(
                "COLLECT_FILE_POLL_SECONDS", 5.0, minimum=0.05, maximum=3600
            ),
            webhook_secret=env.secret("COLLECT_WEBHOOK_SECRET"),
        )

    def seeds(self) -> list[SeedCreator]:
        """COLLECT_CREATORS_FILE: a JSON list of {"tokens": <the token endpoint's answer>,
        "issued_at": unix seconds, "default_skus": [...], "seller_id": "..."}."""
        if self.seed_file is None:
            return []
        try:
            entries: list[dict[str, Any]] = json.loads(Path(self.seed_file).read_text())
            return [
                SeedCreator(
                    CreatorTokens.from_token_response(e["tokens"], float(e["issued_at"])),
                    float(e["issued_at"]),
                    tuple(e.get("default_skus", ())),
                    str(e.get("seller_id", "")),
                )
                for e in entries
            ]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"COLLECT_CREATORS_FILE {self.seed_file}: {error!r}") from None


def _stats_files(raw: str | None) -> tuple[str, ...]:
    """COLLECT_FILES: comma-separated paths; the format comes from each extension."""
    paths = tuple(p.strip() for p in (raw or "").split(",") if p.strip())
    for path in paths:
        try:
            file_format(path)
        except ValueError as error:
            raise ConfigError(f"COLLECT_FILES: {error}") from None
    return paths


def _file_mapping(raw: str | None) -> ColumnMapping:
    """COLLECT_FILE_MAPPING: a JSON object of ColumnMapping's fields (source column names)."""
    if not raw:
        return ColumnMapping()
    try:
        fields = json.loads(raw)
        if not isinstance(fields, dict):
            raise TypeError("not a JSON object")
        return ColumnMapping(**fields)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"COLLECT_FILE_MAPPING: {error}") from None


class Collect:
    def __init__(self, settings: CollectSettings) -> None:
        self.settings = settings
        self.reload = asyncio.Event()

    async def prepare(self, context: ServiceContext) -> None:
        settings = self.settings
        self.repository = CollectRepository(context.store, settings.token_key)
        self.ingest = IngestClient(settings.ingest_address)
        self.http = aiohttp.ClientSession()
        self.api: DisplayApiClient | None = None
        if settings.client_key and settings.client_secret:
            self.api = DisplayApiClient(
                self.http,
                settings.client_key,
                settings.client_secret,
                self.repository,
                base_url=settings.api_url,
            )
        self.collector = Collector(
            self.repository,
            self.api or _NoDisplayApi(),
            self.ingest,
            settings.collector,
            utc_now,
        )
        self.commands = CollectCommands(
            self.repository,
            self.collector,
            self.api.exchange_code if self.api else None,
            self.reload,
            utc_now,
        )
        self.intake = StatsIntake(self.ingest, self.repository, self.repository)
        stored = {c.open_id: c for c in await self.repository.creators()}
        for seed in settings.seeds():
            known = stored.get(seed.tokens.open_id)
            # A stored grant newer than the file's wins: refreshes rotate the tokens.
            if known is None or known.updated_at.timestamp() < seed.issued_at:
                await self.repository.connect_creator(
                    seed.tokens,
                    seed.default_skus,
                    seed.seller_id,
                    Channel.CHANNEL_TIKTOK_SHOP,
                    utc_now(),
                )
        js = context.nc.jetstream()
        await ensure_stream(js, service_stream("signal"))
        await ensure_consumer(js, PULSES)

    def register(self, server: grpc.aio.Server, context: ServiceContext) -> Sequence[str]:
        collect_pb2_grpc.add_CollectServiceServicer_to_server(
            CollectServicer(self.commands), server
        )
        return [collect_pb2.DESCRIPTOR.services_by_name["CollectService"].full_name]

    async def run_polling(self, context: ServiceContext, stop: asyncio.Event) -> None:
        try:
            if self.api is None:
                log.info("display api off: TIKTOK_CLIENT_KEY / TIKTOK_CLIENT_SECRET not set")
                await stop.wait()
                return
            await self.collector.run(stop, self.reload)
        finally:
            await self.http.close()
            await self.ingest.close()

    async def run_pulses(self, context: ServiceContext, stop: asyncio.Event) -> None:
        """Videos in an active pulse are polled every tick (signal's PulseDetected names them)."""

        async def handle(envelope: Envelope) -> None:
            message = envelope.decode()
            if isinstance(message, signal_events_pb2.PulseDetected):
                self.collector.pulse_started(message.pulse_id, list(message.video_ids))
            elif isinstance(message, signal_events_pb2.PulseEnded):
                self.collector.pulse_ended(message.pulse_id)

        await DurableConsumer(context.nc, PULSES, handle).run(stop)

    async def run_files(self, context: ServiceContext, stop: asyncio.Event) -> None:
        """Stats files (a tracker's export, a LIVE dashboard's) tailed into ingest."""
        if not self.settings.files:
            log.info("file source off: COLLECT_FILES not set")
            await stop.wait()
            return
        await run_file_tailer(
            self.intake,
            self.repository,
            self.settings.files,
            self.settings.file_mapping,
            self.settings.file_poll_seconds,
            stop,
        )

    async def run_webhooks(self, context: ServiceContext, stop: asyncio.Event) -> None:
        """Signed stats posts (`POST /v1/stats`) on the HTTP port."""
        port = context.settings.http_port
        if port is None:  # collect declares one; only a broken definition lacks it
            raise ConfigError("collect needs an HTTP port for its stats webhook")
        await serve_webhooks(
            self.intake,
            self.settings.webhook_secret,
            self.settings.file_mapping,
            context.settings.grpc_host,
            port,
            stop,
        )


class _NoDisplayApi:
    async def list_videos(self, open_id: str) -> list[Any]:
        return []

    async def query_stats(self, open_id: str, video_ids: Sequence[str]) -> list[Any]:
        return []

    async def follower_count(self, open_id: str) -> int | None:
        return None


def build() -> ServiceDefinition:
    service = Collect(CollectSettings.from_env())
    return ServiceDefinition(
        name="collect",
        register=service.register,
        grpc_port=50056,
        http_port=8081,
        migrations_dir=MIGRATIONS,
        prepare=service.prepare,
        roles=[service.run_polling, service.run_pulses, service.run_files, service.run_webhooks],
    )
