"""Webhook secrets and channel tokens from mounted files (NAME_FILE), as Kubernetes mounts a
Secret, as well as from environment variables."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from pulsestock.config import ConfigError, Env
from pulsestock.fakes import FakeShopify
from pulsestock.ingest.bootstrap import ReconcileSettings
from pulsestock.inventory_sync.adapters.channels.config import ChannelConfigs
from pulsestock.inventory_sync.adapters.channels.shopify import ShopifyClient

from tests.helpers.infra import Infra
from tests.security.conftest import environment, service_running

SECRET_NAMES = (
    "SHOPIFY_WEBHOOK_SECRET",
    "AMAZON_WEBHOOK_TOKEN",
    "TIKTOK_SHOP_APP_SECRET",
    "TIKTOK_SHOP_ACCESS_TOKEN",
    "SHOPIFY_ACCESS_TOKEN",
    "AMAZON_CLIENT_SECRET",
    "AMAZON_REFRESH_TOKEN",
)


def mounted(directory: Path, values: dict[str, str]) -> dict[str, str]:
    """Each value in its own file (with the trailing newline `kubectl create secret
    --from-file` keeps), and the NAME_FILE variables naming them."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {}
    for name, value in values.items():
        path = directory / name.lower()
        path.write_text(value + "\n")
        env[f"{name}_FILE"] = str(path)
    return env


def shopify_headers(body: bytes, secret: str) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Event-Id": uuid.uuid4().hex,
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
        "Content-Type": "application/json",
    }


async def test_ingest_verifies_webhooks_with_secrets_given_only_as_files(
    infra: Infra, nats_url: str, tmp_path: Path
) -> None:
    shopify_secret, amazon_token = "shpss_from_a_file_1", "bridge-token-from-a-file-2"
    files = mounted(
        tmp_path / "secrets",
        {"SHOPIFY_WEBHOOK_SECRET": shopify_secret, "AMAZON_WEBHOOK_TOKEN": amazon_token},
    )
    order = {"id": 450789469, "line_items": [{"sku": "MUG-1", "quantity": 2}]}
    body = json.dumps(order).encode()
    # Neither variable itself is set, whatever the environment running the tests holds.
    with environment({}, remove=SECRET_NAMES):
        async with (
            service_running(
                "ingest", infra, nats_url, {**files, "INGEST_RECONCILE_SECONDS": "0"}
            ) as settings,
            aiohttp.ClientSession() as http,
        ):
            base = f"http://127.0.0.1:{settings.http_port}/webhooks"
            async with http.post(
                f"{base}/shopify", data=body, headers=shopify_headers(body, shopify_secret)
            ) as reply:
                assert reply.status == 200, await reply.text()
                assert (await reply.json())["result"] == "changed"
            async with http.post(
                f"{base}/shopify", data=body, headers=shopify_headers(body, "another-secret")
            ) as reply:
                assert reply.status == 401
            # Amazon's bridge token: the right one passes the check (the empty body is then
            # refused as malformed), a wrong one is 401; unset would be 503.
            bearer = {"Authorization": f"Bearer {amazon_token}"}
            async with http.post(f"{base}/amazon", data=b"", headers=bearer) as reply:
                assert reply.status == 400
            wrong = {"Authorization": "Bearer bridge-token-wrong"}
            async with http.post(f"{base}/amazon", data=b"", headers=wrong) as reply:
                assert reply.status == 401


async def test_channel_credentials_from_files_reach_the_channel_clients(tmp_path: Path) -> None:
    secrets = {
        "TIKTOK_SHOP_APP_SECRET": "tts-app-secret-file",
        "TIKTOK_SHOP_ACCESS_TOKEN": "tts-access-token-file",
        "SHOPIFY_ACCESS_TOKEN": "shpat_from_a_file",
        "AMAZON_CLIENT_SECRET": "lwa-secret-file",
        "AMAZON_REFRESH_TOKEN": "Atzr|refresh-file",
    }
    env = Env(
        {
            **mounted(tmp_path / "channel-secrets", secrets),
            "TIKTOK_SHOP_API_URL": "http://127.0.0.1:9",
            "TIKTOK_SHOP_APP_KEY": "app-key",
            "TIKTOK_SHOP_SHOP_CIPHER": "cipher",
            "TIKTOK_SHOP_WAREHOUSE_ID": "7000000000000000001",
            "SHOPIFY_API_URL": "http://127.0.0.1:9",
            "SHOPIFY_LOCATION_ID": "gid://shopify/Location/1",
            "AMAZON_SP_API_URL": "http://127.0.0.1:9",
            "AMAZON_CLIENT_ID": "client",
            "AMAZON_SELLER_ID": "SELLER",
            "AMAZON_MARKETPLACE_ID": "ATVPDKIKX0DER",
        }
    )
    channels = ChannelConfigs.from_env(env)  # inventory-sync's channel sync
    assert channels.tiktok_shop is not None
    assert channels.shopify is not None
    assert channels.amazon is not None
    assert channels.tiktok_shop.app_secret == "tts-app-secret-file"
    assert channels.tiktok_shop.access_token == "tts-access-token-file"
    assert channels.shopify.access_token == "shpat_from_a_file"
    assert channels.amazon.client_secret == "lwa-secret-file"
    assert channels.amazon.refresh_token == "Atzr|refresh-file"
    reconcile = ReconcileSettings.from_env(env)  # ingest's order reconciler
    assert reconcile.tiktok_shop is not None
    assert reconcile.shopify is not None
    assert reconcile.amazon is not None
    assert reconcile.tiktok_shop.access_token == "tts-access-token-file"
    assert reconcile.shopify.access_token == "shpat_from_a_file"
    assert reconcile.amazon.refresh_token == "Atzr|refresh-file"
    # A secrets file that cannot be read is a one-line error naming the file, not a silent
    # "channel not configured".
    missing = Env({"SHOPIFY_API_URL": "http://127.0.0.1:9", "SHOPIFY_ACCESS_TOKEN_FILE": "/no"})
    with pytest.raises(ConfigError) as caught:
        ChannelConfigs.from_env(missing)
    assert str(caught.value) == (
        "SHOPIFY_ACCESS_TOKEN_FILE: cannot read /no: No such file or directory"
    )


async def test_a_token_from_a_file_authenticates_against_the_channel(tmp_path: Path) -> None:
    fake = FakeShopify(access_token="shpat_mounted_token")
    await fake.start()
    try:
        env = Env(
            {
                **mounted(tmp_path / "s", {"SHOPIFY_ACCESS_TOKEN": "shpat_mounted_token"}),
                "SHOPIFY_API_URL": fake.url,
                "SHOPIFY_LOCATION_ID": fake.location_id,
            }
        )
        config = ChannelConfigs.from_env(env).shopify
        assert config is not None
        client = ShopifyClient(config)
        try:
            await client.set_quantity("MUG-1", 7)
        finally:
            await client.close()
        assert fake.quantity_of("MUG-1") == 7
    finally:
        await fake.stop()
