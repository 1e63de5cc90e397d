"""Wiring of the console: settings from the environment, the gRPC peers, the live feed
(signal's WatchPulses and the services' NATS subjects), the aiohttp server.

`serve(settings, stop)` runs it until `stop` is set (the dev supervisor or a test starts it
that way); `main()` is `pulsestock console` / `python -m pulsestock.console`, until SIGTERM or
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from pulsestock.clock import utc_now
from pulsestock.config import ConfigError, Env, NatsSettings, metrics_port, peer_address
from pulsestock.console.adapters.live_feed import run_event_feed, run_pulse_watch
from pulsestock.console.adapters.peers import PeerAddresses, Peers
from pulsestock.console.application.live import LiveHub
from pulsestock.console.application.pages import ConsolePages
from pulsestock.console.entrypoints.http import HttpSettings, create_app
from pulsestock.metrics import serve_metrics
from pulsestock.telemetry import configure_logging, configure_telemetry, get_logger

log = get_logger(__name__)
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8090
SHUTDOWN_S = 3.0


@dataclass(frozen=True)
class ConsoleSettings:
    host: str
    port: int
    peers: PeerAddresses
    nats: NatsSettings | None  # None: no NATS_URL; pulses still arrive through WatchPulses
    token: str | None = field(repr=False)
    session_key: bytes = field(repr=False)
    cookie_secure: bool = False
    rank_limit: int = 1000
    call_timeout_s: float = 5.0
    log_level: str = "info"
    log_format: str = "auto"
    metrics_port: int | None = None  # Prometheus /metrics (process figures); None: not served

    @classmethod
    def from_env(cls, env: Env | None = None) -> ConsoleSettings:
        """CONSOLE_HOST / CONSOLE_PORT (127.0.0.1:8090); CONSOLE_TOKEN or CONSOLE_TOKEN_FILE
        (unset: read-only for everyone); CONSOLE_SESSION_KEY(_FILE) signs sessions (unset: a
        random key per process, so sessions end with it; set it when running replicas);
        CONSOLE_COOKIE_SECURE (true behind HTTPS); CONSOLE_RANK_LIMIT (SKUs on Now, 1000);
        the peers' <SERVICE>_ADDR; NATS_URL and its credentials for live stock and heat."""
        env = env or Env()
        token = env.secret("CONSOLE_TOKEN")
        if token is not None and len(token) < 16:
            raise ConfigError("CONSOLE_TOKEN must be at least 16 characters")
        key = env.secret("CONSOLE_SESSION_KEY")
        return cls(
            host=env.string("CONSOLE_HOST", DEFAULT_HOST),
            port=env.port("CONSOLE_PORT", DEFAULT_PORT),
            # SIGNAL_ADDR etc. (host:port), else each peer on this host at its
            # <SERVICE>_GRPC_PORT or its default port, as `make run` starts it.
            peers=PeerAddresses(
                signal=peer_address(env, "signal", 50052),
                forecast=peer_address(env, "forecast", 50053),
                inventory_sync=peer_address(env, "inventory-sync", 50054),
                fulfillment=peer_address(env, "fulfillment", 50055),
            ),
            nats=NatsSettings.from_env(env)
            if env.raw("NATS_URL") or env.raw("NATS_URL_FILE")
            else None,
            token=token,
            session_key=hashlib.sha256(key.encode()).digest()
            if key is not None
            else secrets.token_bytes(32),
            cookie_secure=env.choice("CONSOLE_COOKIE_SECURE", "false", ("true", "false")) == "true",
            rank_limit=env.integer("CONSOLE_RANK_LIMIT", 1000, minimum=1, maximum=5000),
            call_timeout_s=env.number(
                "CONSOLE_CALL_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=120
            ),
            log_level=env.choice(
                "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ),
            log_format=env.choice("LOG_FORMAT", "auto", ("auto", "json", "console")),
            metrics_port=metrics_port(env, "CONSOLE"),
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


async def serve(
    settings: ConsoleSettings,
    stop: asyncio.Event,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the console until `stop` is set; `ready` gets its address once it listens."""
    peers = Peers(settings.peers, settings.call_timeout_s)
    hub = LiveHub()
    app = create_app(
        ConsolePages(peers, utc_now, settings.rank_limit),
        hub,
        HttpSettings(
            token=settings.token,
            session_key=settings.session_key,
            cookie_secure=settings.cookie_secure,
        ),
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    feeds: list[asyncio.Task[None]] = []
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        feeds = [
            asyncio.create_task(run_pulse_watch(peers, hub, stop)),
            asyncio.create_task(run_event_feed(settings.nats, hub, stop)),
        ]
        log.info(
            "console serving",
            url=settings.url,
            sign_in="on" if settings.token else "off (read-only)",
            signal=settings.peers.signal,
            forecast=settings.peers.forecast,
            inventory_sync=settings.peers.inventory_sync,
            fulfillment=settings.peers.fulfillment,
        )
        if ready is not None:
            ready(settings.url)
        await stop.wait()
    finally:
        stop.set()
        for task in feeds:
            task.cancel()
        await asyncio.gather(*feeds, return_exceptions=True)
        await runner.cleanup()
        await peers.close()


def main() -> int:
    try:
        settings = ConsoleSettings.from_env()
    except ConfigError as error:
        print(f"console: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("console", settings.log_level, settings.log_format)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        metrics = []
        if settings.metrics_port is not None:  # as every pod of the manifests serves them
            configure_telemetry("console", None, prometheus=True)
            metrics.append(
                asyncio.create_task(serve_metrics(settings.host, settings.metrics_port, stop))
            )
        await serve(settings, stop, ready=lambda url: print(f"console: {url}", flush=True))
        await asyncio.gather(*metrics)

    try:
        asyncio.run(run())
    except OSError as error:  # e.g. the port is taken
        log.error("cannot start", error=str(error))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
