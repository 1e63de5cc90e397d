"""The console in a real browser: headless Chromium (Debian's, driven by Playwright; never a
downloaded browser) against the real stack: ingest, signal, forecast, inventory-sync (with
the channel fakes) and fulfillment on this module's own NATS, each in its own schema, and the
console pointed at them. Started once per module.

Chromium is found through PULSESTOCK_CHROMIUM, else `chromium` on the PATH; without it the
browser tests skip, except in CI (CI=true), where they fail: CI must run them (.ci/run
installs Debian's chromium). Screenshots go to PULSESTOCK_SCREENSHOTS (default
test-artifacts/screenshots/ at the repository's root).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    async_playwright,
)
from pulsestock.bus import ensure_stream, service_stream
from pulsestock.console.adapters.peers import PeerAddresses
from pulsestock.demo import Demo, Stubs
from pulsestock.devstack.servers import EmbeddedNats
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.v1 import fulfillment_events_pb2 as fev
from pulsestock.v1 import signal_pb2 as spb
from pulsestock.v1.forecast_pb2_grpc import ForecastServiceStub
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub
from pulsestock.v1.ingest_pb2_grpc import IngestServiceStub
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub
from pulsestock.v1.signal_pb2_grpc import SignalServiceStub

from tests.console.conftest import TOKEN, Stack, console_settings, running_console
from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import RunningService, running_service

ROOT = Path(__file__).resolve().parents[2]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# A rule whose name is markup: it comes back as the pulse's evidence, on Now and the SKU page.
HOSTILE_RULE = '"><script>alert(3)</script><img src=x onerror=alert(4)>'
STEP_S = 60.0  # the longest one step of the pulse may take (each usually takes seconds)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def chromium_path() -> str | None:
    configured = os.environ.get("PULSESTOCK_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium")


def require_chromium() -> str:
    """Chromium's path; skips without it, except in CI, where that is a failure."""
    path = chromium_path()
    if path is not None:
        return path
    message = (
        "no Chromium: set PULSESTOCK_CHROMIUM to its executable or install Debian's"
        " `chromium` package (.ci/run does)"
    )
    if in_ci():
        pytest.fail(f"CI must run the browser tests, but there is {message}", pytrace=False)
    pytest.skip(message)


def screenshots_dir() -> Path:
    configured = os.environ.get("PULSESTOCK_SCREENSHOTS")
    folder = Path(configured) if configured else ROOT / "test-artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class BrowserStack(Stack):
    ingest: IngestServiceStub


@dataclass
class Rising:
    """A SKU with master data and a little stock whose video takes off when `push` is first
    awaited (the demo's pulse, through ingest's public API: RegisterVideo, PushVideoSamples,
    RecordOrder)."""

    stack: BrowserStack
    sku: str
    demo: Demo
    _pushed: asyncio.Task[str] | None = None
    _recommended: asyncio.Task[fev.ReplenishmentRecommended] | None = None
    lines: list[str] = field(default_factory=list)

    async def push(self) -> str:
        if self._pushed is None:
            self._pushed = asyncio.create_task(self._step(self.demo.push_pulse))
        return await asyncio.shield(self._pushed)

    async def recommendation(self) -> fev.ReplenishmentRecommended:
        """The recommendation fulfillment makes once the forecast includes the pulse (as the
        demo gets it: a review of the settled forecast)."""
        if self._recommended is None:
            self._recommended = asyncio.create_task(self._recommend())
        return await asyncio.shield(self._recommended)

    async def _recommend(self) -> fev.ReplenishmentRecommended:
        await self.push()
        await self._step(self.demo.pulse_detected)
        await self._step(self.demo.forecast)
        await self._step(self.demo.recommendation)
        recommendation: fev.ReplenishmentRecommended = self.demo.recommended
        return recommendation

    async def _step(self, step: object) -> str:
        async with asyncio.timeout(STEP_S):
            line: str = await step(time.monotonic() + STEP_S)  # type: ignore[operator]
        self.lines.append(line)
        return line


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.fixture(scope="module")
async def stack(
    chromium: str, infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BrowserStack]:
    server = EmbeddedNats(tmp_path_factory.mktemp("browser-nats"))
    server.start()
    fakes = (FakeTikTokShop(), FakeShopify(), FakeAmazon())
    for fake in fakes:
        await fake.start()
    bus = await nats.connect(server.url)
    js = bus.jetstream()
    for producer in ("ingest", "signal", "forecast", "inventory-sync", "fulfillment"):
        await ensure_stream(js, service_stream(producer))
    schemas = {name: unique_name(name[:3]) for name in ("ingest", "signal", "forecast")}
    schemas |= {"inventory-sync": unique_name("inv"), "fulfillment": unique_name("ful")}
    common = {"PULSESTOCK_PARTITIONS": "4"}

    def run(
        service: str, extra: dict[str, str] | None = None
    ) -> contextlib.AbstractAsyncContextManager[RunningService]:
        return running_service(
            service, infra.database_url, server.url, schemas[service], {**common, **(extra or {})}
        )

    try:
        async with contextlib.AsyncExitStack() as services:
            # The first four at once (fulfillment needs two of their addresses).
            ingest, signal, forecast, inventory = await asyncio.gather(
                services.enter_async_context(run("ingest")),
                services.enter_async_context(run("signal")),
                services.enter_async_context(run("forecast")),
                services.enter_async_context(
                    run("inventory-sync", fake_channel_env(*(fake.url for fake in fakes)))
                ),
            )
            fulfillment = await services.enter_async_context(
                run(
                    "fulfillment",
                    {"INVENTORY_SYNC_ADDR": inventory.address, "FORECAST_ADDR": forecast.address},
                )
            )
            peers = PeerAddresses(
                signal.address, forecast.address, inventory.address, fulfillment.address
            )
            url = await services.enter_async_context(
                running_console(console_settings(peers, server.url))
            )
            yield BrowserStack(
                url,
                bus,
                SignalServiceStub(signal.channel),
                ForecastServiceStub(forecast.channel),
                InventorySyncServiceStub(inventory.channel),
                FulfillmentServiceStub(fulfillment.channel),
                fakes,
                IngestServiceStub(ingest.channel),
            )
    finally:
        await bus.close()
        for fake in fakes:
            await fake.stop()
        for schema in schemas.values():
            await drop_schema(infra.database_url, schema)
        server.stop()


async def new_rising(stack: BrowserStack, sku: str, *, hostile_rule: bool = False) -> Rising:
    """A SKU with the demo's master data and its stock (and, if asked, a rule whose name is
    markup, which fires with the detector); not pushed yet."""
    stubs = Stubs(stack.ingest, stack.signal, stack.forecast, stack.inventory, stack.fulfillment)
    demo = Demo(stubs, sku, STEP_S, io.StringIO(), datetime.now(UTC))
    await demo.master_data(time.monotonic() + STEP_S)
    await demo.initial_stock(time.monotonic() + STEP_S)
    if not hostile_rule:
        return Rising(stack, sku, demo)
    await stack.signal.SetRules(
        spb.SetRulesRequest(
            sku=sku,
            rules=[
                spb.Rule(
                    name=HOSTILE_RULE,
                    metric="view_velocity",
                    op=">",
                    threshold=10_000,  # views an hour: the surge's first minute, never before
                    min_views=1000,
                )
            ],
        ),
        timeout=10,
    )
    return Rising(stack, sku, demo)


@pytest.fixture(scope="module")
async def rising(stack: BrowserStack) -> Rising:
    """The module's pulsing SKU (its page is the README's screenshot)."""
    return await new_rising(stack, "GLOW-LAMP-7")


@pytest.fixture(scope="module")
async def held(stack: BrowserStack) -> Rising:
    """A second pulsing SKU, whose recommendation nobody approves (the signed-out visitor's)
    and whose pulse's evidence includes the hostile rule."""
    return await new_rising(stack, "DESK-FAN-2", hostile_rule=True)


@pytest.fixture(scope="module")
async def playwright(chromium: str) -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
async def browser(playwright: Playwright, chromium: str) -> AsyncIterator[Browser]:
    launched = await playwright.chromium.launch(
        executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
    )
    try:
        yield launched
    finally:
        await launched.close()


@dataclass
class Watched:
    """A page with what it said: dialogs that opened (each dismissed), console errors and
    warnings, uncaught exceptions, and Content-Security-Policy violations (recorded by a
    listener installed before any of the page's scripts)."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def csp_violations(self) -> list[str]:
        found: list[str] = await self.page.evaluate("() => window.__cspViolations || []")
        return found

    async def assert_quiet(self) -> None:
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.errors == [], f"uncaught errors: {self.errors}"
        assert self.console == [], f"console errors: {self.console}"
        assert await self.csp_violations() == []


CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


async def watch(context: BrowserContext) -> Watched:
    await context.add_init_script(CSP_LISTENER)
    page = await context.new_page()
    watched = Watched(page)

    async def on_dialog(dialog: Dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            where = message.location.get("url", "")
            watched.console.append(f"{message.type}: {message.text} ({where})")

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    return watched


@pytest.fixture
async def visitor(browser: Browser) -> AsyncIterator[Watched]:
    """A signed-out visitor of its own (its own cookies) at 1280 px."""
    context = await browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    try:
        yield await watch(context)
    finally:
        await context.close()


async def sign_in(page: Page, base: str, token: str = TOKEN) -> None:
    """Through the sign-in form, as a person would."""
    await page.goto(f"{base}/signin")
    await page.get_by_test_id("sign-in-token").fill(token)
    await page.get_by_test_id("sign-in-submit").click()
    await page.get_by_test_id("sign-out").wait_for()
