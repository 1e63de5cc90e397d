"""The console against the real services: signal, forecast, inventory-sync (connected to the
channel fakes) and fulfillment, each in its own schema on this module's own NATS, and the
console serving on a free port, pointed at them. Started once per module (it takes a few
seconds); each test uses SKUs of its own."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus import ensure_stream, service_stream
from pulsestock.config import NatsSettings
from pulsestock.console.adapters.peers import PeerAddresses
from pulsestock.console.bootstrap import ConsoleSettings, serve
from pulsestock.devstack.servers import EmbeddedNats, free_port
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub
from pulsestock.v1.signal_pb2_grpc import SignalServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import running_service

TOKEN = "operator-token-for-tests-0123456789"
CSRF = re.compile(r'name="csrf" (?:value|content)="([^"]+)"')


@dataclass
class Stack:
    url: str
    bus: NATS
    signal: SignalServiceStub
    forecast: ForecastServiceStub
    inventory: InventorySyncServiceStub
    fulfillment: FulfillmentServiceStub
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon]


def console_settings(
    peers: PeerAddresses, nats_url: str | None, **overrides: object
) -> ConsoleSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "peers": peers,
        "nats": NatsSettings(url=nats_url) if nats_url else None,
        "token": TOKEN,
        "session_key": b"s" * 32,
        **overrides,
    }
    return ConsoleSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_console(settings: ConsoleSettings) -> AsyncIterator[str]:
    """The console in this event loop until the block ends; yields its base URL."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))

    async def up() -> bool:
        if task.done():
            task.result()
        try:
            async with (
                aiohttp.ClientSession() as client,
                client.get(f"{settings.url}/healthz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(up, within=10, what="the console serving")
    try:
        yield settings.url
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture(scope="module")
async def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    server = EmbeddedNats(tmp_path_factory.mktemp("console-nats"))
    server.start()
    fakes = (FakeTikTokShop(), FakeShopify(), FakeAmazon())
    for fake in fakes:
        await fake.start()
    bus = await nats.connect(server.url)
    js = bus.jetstream()
    for producer in ("ingest", "signal", "forecast", "inventory-sync", "fulfillment"):
        await ensure_stream(js, service_stream(producer))
    schemas = {name: unique_name(name[:3]) for name in ("signal", "forecast", "inventory")}
    schemas["fulfillment"] = unique_name("ful")
    common = {"PULSESTOCK_PARTITIONS": "4"}
    try:
        async with contextlib.AsyncExitStack() as services:
            signal = await services.enter_async_context(
                running_service("signal", infra.database_url, server.url, schemas["signal"], common)
            )
            forecast = await services.enter_async_context(
                running_service(
                    "forecast", infra.database_url, server.url, schemas["forecast"], common
                )
            )
            inventory = await services.enter_async_context(
                running_service(
                    "inventory-sync",
                    infra.database_url,
                    server.url,
                    schemas["inventory"],
                    {**common, **fake_channel_env(*(fake.url for fake in fakes))},
                )
            )
            fulfillment = await services.enter_async_context(
                running_service(
                    "fulfillment",
                    infra.database_url,
                    server.url,
                    schemas["fulfillment"],
                    {
                        **common,
                        "INVENTORY_SYNC_ADDR": inventory.address,
                        "FORECAST_ADDR": forecast.address,
                    },
                )
            )
            peers = PeerAddresses(
                signal.address, forecast.address, inventory.address, fulfillment.address
            )
            url = await services.enter_async_context(
                running_console(console_settings(peers, server.url))
            )
            yield Stack(
                url,
                bus,
                SignalServiceStub(signal.channel),
                ForecastServiceStub(forecast.channel),
                InventorySyncServiceStub(inventory.channel),
                FulfillmentServiceStub(fulfillment.channel),
                fakes,
            )
    finally:
        await bus.close()
        for fake in fakes:
            await fake.stop()
        for schema in schemas.values():
            await drop_schema(infra.database_url, schema)
        server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A visitor of its own (its own cookies: signed out until it signs in)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        yield client


async def csrf_of(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(url) as response:
        html = await response.text()
    match = CSRF.search(html)
    assert match is not None, f"no CSRF token on {url}"
    return match.group(1)


async def sign_in(client: aiohttp.ClientSession, base: str, token: str = TOKEN) -> int:
    csrf = await csrf_of(client, f"{base}/signin")
    async with client.post(
        f"{base}/signin",
        data={"csrf": csrf, "token": token, "next": "/"},
        allow_redirects=False,
    ) as response:
        return response.status
