"""`pulsestock dev up`: embedded PostgreSQL and NATS (unless DATABASE_URL / NATS_URL point
elsewhere), migrations, then every installed service (found through its entry point) as its
own process; Ctrl-C or SIGTERM stops all."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pulsestock.config import Env, ServiceSettings, redact, service_schema
from pulsestock.devstack.servers import EmbeddedNats, EmbeddedPostgres
from pulsestock.fakes import fake_channel_env
from pulsestock.runtime import ServiceDefinition
from pulsestock.services import Companion, all_definitions, companions


@dataclass
class ChildService:
    settings: ServiceSettings
    process: subprocess.Popen[bytes]

    @property
    def name(self) -> str:
        return self.settings.service


def migrate_all(database_url: str, definitions: list[ServiceDefinition]) -> None:
    from pulsestock.eventstore.migrations import apply_migrations

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            for definition in definitions:
                schema = service_schema(definition.name)
                await apply_migrations(conn, schema, definition.migrations())
        finally:
            await conn.close()

    asyncio.run(run())


def health_status(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


# Loopback checks go straight to the address, whatever HTTP_PROXY says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ready(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, ValueError, http.client.HTTPException):
        return False


class DevStack:
    def __init__(self, data_dir: Path, services: list[ServiceDefinition]) -> None:
        self.data_dir = data_dir
        self.services = services
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.children: list[ChildService] = []
        self.fakes: subprocess.Popen[str] | None = None
        self.companions: list[tuple[Companion, subprocess.Popen[bytes]]] = []
        self.child_env: dict[str, str] = {}
        self.stopping = False

    def say(self, line: str) -> None:
        print(f"pulsestock: {line}", flush=True)

    def start(self) -> None:
        env = Env()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database_url = env.url("DATABASE_URL", ("postgres", "postgresql"))
        if database_url is None:
            self.postgres = EmbeddedPostgres(self.data_dir)
            self.postgres.start()
            database_url = self.postgres.url
            self.say(f"embedded PostgreSQL  {database_url}  (data {self.postgres.pgdata})")
        else:
            self.say(f"external PostgreSQL  {redact(database_url)}")
        nats_url = env.url("NATS_URL", ("nats", "tls"))
        if nats_url is None:
            self.nats = EmbeddedNats(self.data_dir)
            self.nats.start()
            nats_url = self.nats.url
            self.say(f"embedded NATS        {nats_url}  (JetStream in {self.data_dir / 'nats'})")
        else:
            self.say(f"external NATS        {redact(nats_url)}")
        migrate_all(database_url, self.services)
        child_env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url}
        # Whichever services talk to the sales channels get the fakes (unless real channels
        # are configured); the supervisor does not know which ones do.
        if self._wants_fake_channels(env):
            child_env = with_fake_channels(child_env, self._start_fake_channels())
        child_env = {**self._console_env(env), **child_env}
        self.child_env = child_env
        for definition in self.services:
            # The child resolves its settings from the same environment: the same ports.
            settings = definition.settings_from_env(child_env)
            process = subprocess.Popen(
                [sys.executable, "-m", "pulsestock.cli", "serve", definition.name],
                env=child_env,
            )
            self.children.append(ChildService(settings, process))

    @staticmethod
    def _wants_fake_channels(env: Env) -> bool:
        configured = any(
            env.raw(name)
            for name in ("TIKTOK_SHOP_API_URL", "SHOPIFY_API_URL", "AMAZON_SP_API_URL")
        )
        return not configured and env.raw("PULSESTOCK_FAKE_CHANNELS") != "0"

    def _start_fake_channels(self) -> dict[str, str]:
        """The channels' fakes as a child process; inventory-sync syncs to them."""
        self.fakes = subprocess.Popen(
            [sys.executable, "-m", "pulsestock.fakes"], stdout=subprocess.PIPE, text=True
        )
        assert self.fakes.stdout is not None
        urls = json.loads(self.fakes.stdout.readline())
        self.say(
            f"fake channels       tiktok_shop {urls['tiktok_shop']}  shopify {urls['shopify']}"
            f"  amazon {urls['amazon']}"
        )
        self.say(
            f"fake TikTok Display {urls['tiktok_display']}  (creator"
            f" {urls['display_creator']['tokens']['open_id']}: one video takes off in ~12 min)"
        )
        return {
            **fake_channel_env(urls["tiktok_shop"], urls["shopify"], urls["amazon"]),
            **self._collector_env(urls),
        }

    def _collector_env(self, urls: dict[str, Any]) -> dict[str, str]:
        """The collector polls the Display fake's demo creator: its grant as a seed file, a
        token key kept in the data directory (grants are stored sealed)."""
        seed = self.data_dir / "collect-creators.json"
        seed.write_text(json.dumps([{**urls["display_creator"], "default_skus": ["DEMO-MUG"]}]))
        seed.chmod(0o600)
        key = self.data_dir / "collect-token.key"
        if not key.exists():
            key.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
            key.chmod(0o600)
        return {
            "TIKTOK_DISPLAY_API_URL": urls["tiktok_display"],
            "TIKTOK_CLIENT_KEY": urls["display_client"]["key"],
            "TIKTOK_CLIENT_SECRET": urls["display_client"]["secret"],
            "COLLECT_CREATORS_FILE": str(seed),
            "COLLECT_TOKEN_KEY_FILE": str(key),
        }

    def _console_env(self, env: Env) -> dict[str, str]:
        """A sign-in token for the console (kept in the data directory), unless one is
        configured: without it the console is read-only."""
        if env.raw("CONSOLE_TOKEN") or env.raw("CONSOLE_TOKEN_FILE"):
            return {}
        token = self.data_dir / "console-token"
        if not token.exists():  # created readable by its owner only, never briefly by others
            with os.fdopen(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(base64.urlsafe_b64encode(os.urandom(24)).decode())
        self.say(f"console sign-in token in {token}")
        return {"CONSOLE_TOKEN_FILE": str(token)}

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and time.monotonic() < deadline and not self.stopping:
            for child in list(pending):
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
                if health_status(child.settings.grpc_port):
                    pending.remove(child)
            if pending:
                time.sleep(0.1)
        if pending and not self.stopping:
            raise TimeoutError(f"not SERVING after {timeout:.0f}s: {[c.name for c in pending]}")
        for child in self.children:
            settings = child.settings
            http = "" if settings.http_port is None else f"  http 127.0.0.1:{settings.http_port}"
            self.say(f"{child.name:<15} grpc 127.0.0.1:{settings.grpc_port}{http}  SERVING")
        self.start_companions(max(deadline, time.monotonic() + 30))
        self.say("all services up; Ctrl-C stops everything")

    def start_companions(self, deadline: float) -> None:
        """The processes beside the services (the console), once the services serve."""
        for companion in companions(self.child_env):
            process = subprocess.Popen([sys.executable, "-m", companion.module], env=self.child_env)
            self.companions.append((companion, process))
        for companion, process in self.companions:
            while not self.stopping and not http_ready(companion.health_url):
                if process.poll() is not None:
                    raise RuntimeError(f"{companion.name} exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{companion.name} not ready at {companion.health_url}")
                time.sleep(0.1)
            self.say(f"{companion.name:<15} {companion.url}  (open it in a browser)")

    def watch(self) -> int:
        """Block until a stop signal (returns 0) or a service dies (returns 1)."""
        while not self.stopping:
            for child in self.children:
                if child.process.poll() is not None:
                    self.say(f"{child.name} exited with {child.process.returncode}")
                    return 1
            for companion, process in self.companions:
                if process.poll() is not None:
                    self.say(f"{companion.name} exited with {process.returncode}")
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        self.stopping = True
        for _, process in self.companions:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in self.companions:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.fakes is not None and self.fakes.poll() is None:
            self.fakes.terminate()
            self.fakes.wait(10)
        if self.nats:
            self.nats.stop()
        if self.postgres:
            self.postgres.stop()
        self.say("stopped")


def dev_up(data_dir: Path, services: list[str] | None = None) -> int:
    stack = DevStack(data_dir, all_definitions(services))

    def on_signal(_signum: int, _frame: object) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        stack.wait_serving()
        return stack.watch()
    except (RuntimeError, TimeoutError, OSError) as error:
        stack.say(f"error: {error}")
        return 1
    finally:
        stack.stop()


def with_fake_channels(environ: dict[str, str], fakes: dict[str, str]) -> dict[str, str]:
    """The fakes' settings apply only where the user set nothing: a webhook secret the user
    configured stays, so deliveries signed with it are still accepted."""
    return {**fakes, **{name: value for name, value in environ.items() if value}}
