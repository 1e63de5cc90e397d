"""No secret reaches a log line, an HTTP answer or a gRPC status: the services run as real
processes (LOG_LEVEL=debug, JSON logs, everything they write captured) with known secret
values (channel tokens, webhook secrets, the DATABASE_URL and NATS_URL passwords), and are
driven into failures: bad webhook signatures, channel calls answered 401, a failed order
lookup, invalid gRPC requests, configuration errors and refused connections."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
import nats
import pytest
from pulsestock.bus.provision import DEAD_LETTER_STREAM
from pulsestock.collect.bootstrap import CollectSettings
from pulsestock.config import Env, ServiceSettings
from pulsestock.devstack.servers import free_port
from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop, fake_channel_env
from pulsestock.ingest.bootstrap import IngestSettings
from pulsestock.inventory_sync.adapters.channels.config import ChannelConfigs
from pulsestock.v1 import ingest_pb2, ingest_pb2_grpc
from pulsestock.v1 import inventory_sync_pb2 as inv_pb
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.inventory_sync_pb2_grpc import InventorySyncServiceStub

from tests.helpers.infra import Infra, drop_schema, eventually, unique_name
from tests.helpers.service import migrate, service_env, serving
from tests.security.conftest import environment
from tests.security.nats_server import ConfiguredNats
from tests.security.pki import Pki

WEBHOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
CHANNEL_SECRETS = (
    "TIKTOK_SHOP_APP_SECRET",
    "TIKTOK_SHOP_ACCESS_TOKEN",
    "SHOPIFY_ACCESS_TOKEN",
    "AMAZON_CLIENT_SECRET",
    "AMAZON_REFRESH_TOKEN",
    "SHOPIFY_WEBHOOK_SECRET",
    "AMAZON_WEBHOOK_TOKEN",
)
NATS_USER = "svc"


def secret_value() -> str:
    """Random, so that finding it anywhere can only mean it leaked."""
    return f"sEcReT{secrets.token_hex(10)}"


@pytest.fixture
def secret_values() -> dict[str, str]:
    return {name: secret_value() for name in (*CHANNEL_SECRETS, "DB_PASSWORD", "NATS_PASSWORD")}


@pytest.fixture
def nats_with_password(tmp_path: Path, secret_values: dict[str, str]) -> Iterator[str]:
    password = secret_values["NATS_PASSWORD"]
    server = ConfiguredNats(
        tmp_path / "nats",
        f'authorization {{ users: [ {{ user: {NATS_USER}, password: "{password}" }} ] }}',
    )
    server.start()
    yield f"nats://{NATS_USER}:{password}@127.0.0.1:{server.port}"
    server.stop()


def with_password(database_url: str, secret_values: dict[str, str]) -> str:
    """The test database's URL with a password in it (the embedded server trusts local
    connections and ignores it); an external URL that has one keeps its own."""
    parts = urlsplit(database_url)
    if parts.password is not None:
        secret_values["DB_PASSWORD"] = parts.password
        return database_url
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo or 'postgres'}:{secret_values['DB_PASSWORD']}@{host}"
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTikTokShop, FakeShopify, FakeAmazon]]:
    """The channels, expecting their own default credentials: ours are refused."""
    servers = (FakeTikTokShop(), FakeShopify(), FakeAmazon())
    for server in servers:
        await server.start()
    yield servers
    for server in servers:
        await server.stop()


class ServiceProcess:
    """`python -m pulsestock.<service>` with everything it writes in one file."""

    def __init__(self, service: str, env: dict[str, str], log_path: Path) -> None:
        self.service = service
        self.log_path = log_path
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"pulsestock.{service.replace('-', '_')}"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_serving(self, port: int) -> None:
        async def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.service} exited: {self.output()[-3000:]}")
            return await serving(port)

        await eventually(up, within=30, what=f"{self.service} SERVING")

    async def wait_logged(self, *fragments: str, within: float = 30) -> None:
        async def logged() -> bool:
            text = self.output()
            return all(fragment in text for fragment in fragments)

        await eventually(logged, within=within, what=f"{self.service} to log {fragments}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def assert_no_secret(where: str, text: str, secret_values: dict[str, str]) -> None:
    for name, value in secret_values.items():
        assert value not in text, f"{name} leaked into {where}"
        assert value[6:] not in text, f"part of {name} leaked into {where}"


def rpc_failure_text(error: grpc.aio.AioRpcError) -> str:
    """Everything a caller receives with a failed call: code, message and rich details."""
    trailers = error.trailing_metadata() or ()
    return " ".join(
        [error.code().name, error.details() or "", repr(error.debug_error_string())]
        + [repr(value) for _, value in trailers]
    )


def service_settings_env(
    service: str,
    infra: Infra,
    nats_url: str,
    schema: str,
    port: int,
    secret_values: dict[str, str],
    extra: dict[str, str],
) -> dict[str, str]:
    database_url = with_password(infra.database_url, secret_values)
    env = service_env(service, database_url, nats_url, schema, port, extra)
    return {**env, "LOG_LEVEL": "debug", "LOG_FORMAT": "json"}


def channel_env(
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon], secret_values: dict[str, str]
) -> dict[str, str]:
    env = fake_channel_env(*(fake.url for fake in fakes))
    env.update({name: secret_values[name] for name in CHANNEL_SECRETS})
    return env


def tiktok_order_notification(app_key: str, app_secret: str) -> tuple[bytes, dict[str, str]]:
    notification: dict[str, Any] = json.loads(
        (WEBHOOKS / "tiktok_order_status_change.json").read_text()
    )
    now = int(time.time())
    notification["timestamp"] = now
    notification["data"] = {**notification["data"], "update_time": now}
    notification["tts_notification_id"] = uuid.uuid4().hex
    body = json.dumps(notification).encode()
    signature = hmac.new(app_secret.encode(), app_key.encode() + body, hashlib.sha256).hexdigest()
    return body, {"Authorization": signature, "Content-Type": "application/json"}


async def test_ingest_keeps_its_secrets_out_of_logs_answers_and_statuses(
    infra: Infra,
    nats_with_password: str,
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
    secret_values: dict[str, str],
    tmp_path: Path,
) -> None:
    schema, port = unique_name("ing"), free_port()
    env = service_settings_env(
        "ingest",
        infra,
        nats_with_password,
        schema,
        port,
        secret_values,
        {**channel_env(fakes, secret_values), "INGEST_RECONCILE_SECONDS": "0.3"},
    )
    await migrate(infra.database_url, "ingest", schema)
    process = ServiceProcess("ingest", env, tmp_path / "ingest.log")
    answers: list[str] = []
    try:
        await process.wait_serving(port)
        base = f"http://127.0.0.1:{env['INGEST_HTTP_PORT']}/webhooks"
        body = json.dumps({"id": 1, "line_items": []}).encode()
        tiktok_body, tiktok_headers = tiktok_order_notification(
            env["TIKTOK_SHOP_APP_KEY"], secret_values["TIKTOK_SHOP_APP_SECRET"]
        )
        attempts = [
            ("shopify", body, {"X-Shopify-Hmac-Sha256": "bm90IGl0", "X-Shopify-Topic": "x"}),
            ("amazon", body, {"Authorization": "Bearer not-the-token"}),
            ("tiktok-shop", body, {"Authorization": "0" * 64}),
            # Signed right, but the order lookup it needs is refused (our token is not the
            # channel's): 503 with the reason.
            ("tiktok-shop", tiktok_body, tiktok_headers),
        ]
        async with aiohttp.ClientSession() as http:
            for path, data, headers in attempts:
                async with http.post(f"{base}/{path}", data=data, headers=headers) as reply:
                    answers.append(f"{path} {reply.status} {await reply.text()}")
        assert [answer.split()[1] for answer in answers] == ["401", "401", "401", "503"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RecordOrder(ingest_pb2.RecordOrderRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            answers.append(rpc_failure_text(caught.value))
        # The reconciler's calls to all three channels fail on our credentials.
        await process.wait_logged(
            "webhook refused",
            '"reconcile round failed"',
            '"source": "tiktok_shop"',
            '"source": "shopify"',
            '"source": "amazon"',
        )
    finally:
        code = process.stop()
        await drop_schema(infra.database_url, schema)
    output = process.output()
    assert code == 0, output[-3000:]
    assert "HTTP 401" in output  # the channels' refusals were logged, without the tokens
    assert_no_secret("ingest's output", output, secret_values)
    for answer in answers:
        assert_no_secret(f"an answer ({answer[:40]})", answer, secret_values)


async def test_inventory_sync_keeps_channel_tokens_out_of_logs_and_sync_state(
    infra: Infra,
    nats_with_password: str,
    fakes: tuple[FakeTikTokShop, FakeShopify, FakeAmazon],
    secret_values: dict[str, str],
    tmp_path: Path,
) -> None:
    schema, port = unique_name("inv"), free_port()
    env = service_settings_env(
        "inventory-sync",
        infra,
        nats_with_password,
        schema,
        port,
        secret_values,
        {
            **channel_env(fakes, secret_values),
            "CHANNEL_SYNC_BASE_BACKOFF_SECONDS": "0.05",
            "CHANNEL_SYNC_MAX_BACKOFF_SECONDS": "0.2",
            "CHANNEL_SYNC_MAX_FAILURES": "3",  # and dead-letter, with the reason in a header
            "CHANNEL_SYNC_RECONCILE_SECONDS": "0.2",
        },
    )
    await migrate(infra.database_url, "inventory-sync", schema)
    process = ServiceProcess("inventory-sync", env, tmp_path / "inventory-sync.log")
    answers: list[str] = []
    try:
        await process.wait_serving(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = InventorySyncServiceStub(channel)
            await stub.Receive(
                inv_pb.ReceiveRequest(sku="LEAK-1", warehouse_id="W1", quantity=10), timeout=10
            )
            await process.wait_logged('"channel sync dead-lettered"', "HTTP 401")
            for value in Channel.values():
                if value == Channel.CHANNEL_UNSPECIFIED:
                    continue
                state = await stub.GetSyncState(
                    inv_pb.GetSyncStateRequest(channel=value, sku="LEAK-1"), timeout=10
                )
                answers.append(str(state))
            assert any("HTTP 401" in answer for answer in answers)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetStock(inv_pb.GetStockRequest(sku="not a sku!"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            answers.append(rpc_failure_text(caught.value))
        dead_letters = await dead_letters_of(nats_with_password)
        assert any("HTTP" in letter for letter in dead_letters)
        answers.extend(dead_letters)
    finally:
        code = process.stop()
        await drop_schema(infra.database_url, schema)
    output = process.output()
    assert code == 0, output[-3000:]
    assert_no_secret("inventory-sync's output", output, secret_values)
    for answer in answers:
        assert_no_secret(f"an answer ({answer[:40]})", answer, secret_values)


async def dead_letters_of(nats_url: str) -> list[str]:
    """Every dead letter's headers and payload, as text (their reason is the error's)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        count = (await js.stream_info(DEAD_LETTER_STREAM)).state.messages
        subscription = await js.subscribe("dead_letters.>", ordered_consumer=True)
        letters = []
        for _ in range(count):
            message = await subscription.next_msg(timeout=5)
            letters.append(f"{message.headers} {message.data!r}")
        await subscription.unsubscribe()
        return letters
    finally:
        await nc.close()


def test_configuration_and_connection_errors_name_no_secret(
    infra: Infra,
    nats_with_password: str,
    secret_values: dict[str, str],
    pki: Pki,
    tmp_path: Path,
) -> None:
    database_url = with_password(infra.database_url, secret_values)
    password = secret_values["DB_PASSWORD"]
    nats_password = secret_values["NATS_PASSWORD"]
    wrong_nats = nats_with_password.replace(nats_password, secret_values["AMAZON_WEBHOOK_TOKEN"])
    unreadable = tmp_path / "unreadable"
    unreadable.write_text(secret_values["SHOPIFY_WEBHOOK_SECRET"])
    unreadable.chmod(0)
    cases: list[tuple[dict[str, str], int, str]] = [
        # A malformed URL: the error quotes it, redacted.
        (
            {"DATABASE_URL": f"postgresql://postgres:{password}@127.0.0.1:notaport/db"},
            2,
            "has a malformed port",
        ),
        # NATS refuses a wrong password at start: one line, the URL redacted.
        ({"NATS_URL": wrong_nats}, 1, "authorization violation"),
        # PostgreSQL is not there.
        (
            {"DATABASE_URL": f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/db"},
            1,
            "cannot start",
        ),
        # A key that is not the certificate's.
        (
            {
                "PULSESTOCK_TLS_CERT_FILE": str(pki.server_cert),
                "PULSESTOCK_TLS_KEY_FILE": str(pki.client_key),
            },
            2,
            "is not the key of the certificate",
        ),
    ]
    if os.geteuid() != 0:  # root reads a file whatever its mode
        cases.append(({"SHOPIFY_WEBHOOK_SECRET_FILE": str(unreadable)}, 2, "Permission denied"))
    key_text = pki.client_key.read_text().splitlines()[1]
    for overrides, expected_code, expected in cases:
        env = {
            **os.environ,
            **service_env("ingest", database_url, nats_with_password, "ing_x", free_port(), {}),
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "json",
            **overrides,
        }
        done = subprocess.run(
            [sys.executable, "-m", "pulsestock.ingest"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == expected_code, output
        assert expected in output, output
        assert "Traceback" not in output, output
        assert_no_secret(f"the start-up error ({expected})", output, secret_values)
        assert key_text not in output


def test_settings_objects_do_not_show_secrets_in_their_repr(
    secret_values: dict[str, str], pki: Pki
) -> None:
    """A settings object that reaches a log line or an error (`settings=...`, a repr in a
    message) must not carry its secrets with it."""
    env = {
        **fake_channel_env("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9"),
        **{name: secret_values[name] for name in CHANNEL_SECRETS},
        "DATABASE_URL": f"postgresql://u:{secret_values['DB_PASSWORD']}@db:5432/x",
        "NATS_URL": f"nats://svc:{secret_values['NATS_PASSWORD']}@nats:4222",
        "PULSESTOCK_TLS_CERT_FILE": str(pki.server_cert),
        "PULSESTOCK_TLS_KEY_FILE": str(pki.server_key),
        "PULSESTOCK_TLS_CA_FILE": str(pki.ca),
        "PULSESTOCK_TLS_CLIENT_CERT_FILE": str(pki.client_cert),
        "PULSESTOCK_TLS_CLIENT_KEY_FILE": str(pki.client_key),
        "TIKTOK_CLIENT_KEY": "client-key",
        "TIKTOK_CLIENT_SECRET": secret_values["AMAZON_CLIENT_SECRET"],
        "COLLECT_WEBHOOK_SECRET": secret_values["SHOPIFY_WEBHOOK_SECRET"],
    }
    key_line = pki.server_key.read_text().splitlines()[1]
    with environment(env):
        ingest = IngestSettings.from_env()
    service = ServiceSettings.from_env("ingest", env, default_grpc_port=50051)
    assert service.server_tls is not None  # the key is loaded, yet not shown
    shown = {
        "ServiceSettings": repr(service),
        "IngestSettings": repr(ingest),
        "ChannelConfigs": repr(ChannelConfigs.from_env(Env(env))),
        "CollectSettings": repr(CollectSettings.from_env(Env(env))),
    }
    assert ingest.secrets.shopify_secret == secret_values["SHOPIFY_WEBHOOK_SECRET"]
    for what, text in shown.items():
        assert_no_secret(f"repr of {what}", text, secret_values)
        assert key_line not in text
