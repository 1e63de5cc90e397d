"""The console's settings from the environment: address, peers, the token from a mounted
file, the session key, refusals in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulsestock.config import ConfigError, Env
from pulsestock.console.bootstrap import ConsoleSettings


def test_defaults_read_only_on_loopback_with_the_peers_on_their_ports() -> None:
    settings = ConsoleSettings.from_env(Env({}))
    assert settings.url == "http://127.0.0.1:8090"
    assert settings.token is None  # nobody can sign in: read-only
    assert settings.nats is None  # pulses still come through WatchPulses
    assert (settings.peers.signal, settings.peers.fulfillment) == (
        "127.0.0.1:50052",
        "127.0.0.1:50055",
    )
    assert settings.rank_limit == 1000
    assert "token" not in repr(settings)
    assert ConsoleSettings.from_env(Env({})).session_key != settings.session_key  # random


def test_the_token_from_a_mounted_file_peers_and_a_stable_session_key(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("a-token-of-thirty-two-characters\n")
    env = {
        "CONSOLE_HOST": "0.0.0.0",
        "CONSOLE_PORT": "9001",
        "CONSOLE_TOKEN_FILE": str(secret),
        "CONSOLE_SESSION_KEY": "shared by the replicas",
        "SIGNAL_ADDR": "signal:50052",
        "INVENTORY_SYNC_GRPC_PORT": "6000",
        "NATS_URL": "nats://nats:4222",
        "CONSOLE_COOKIE_SECURE": "true",
    }
    settings = ConsoleSettings.from_env(Env(env))
    assert settings.url == "http://0.0.0.0:9001"
    assert settings.token == "a-token-of-thirty-two-characters"
    assert settings.peers.signal == "signal:50052"
    assert settings.peers.inventory_sync == "127.0.0.1:6000"
    assert settings.nats is not None
    assert settings.cookie_secure
    assert ConsoleSettings.from_env(Env(env)).session_key == settings.session_key


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CONSOLE_TOKEN": "short"}, "CONSOLE_TOKEN"),
        ({"CONSOLE_TOKEN_FILE": "/no/such/file"}, "CONSOLE_TOKEN_FILE"),
        ({"CONSOLE_PORT": "http"}, "CONSOLE_PORT"),
        ({"CONSOLE_RANK_LIMIT": "0"}, "CONSOLE_RANK_LIMIT"),
        ({"NATS_URL": "http://nats"}, "NATS_URL"),
    ],
)
def test_bad_settings_are_one_line_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as error:
        ConsoleSettings.from_env(Env(env))
    assert named in str(error.value)
    assert "\n" not in str(error.value)
