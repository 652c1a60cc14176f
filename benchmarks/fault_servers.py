"""Servers and workers that the fault suite starts, kills and restarts itself, on loopback only.

Nothing here touches a server it did not start: each redis-server runs on a
free port with its own directory, and the RabbitMQ vhost is created for the
run and deleted after it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

__all__ = ["CeleryWorker", "RedisServer", "free_port", "rabbitmq_vhost"]

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server on a free loopback port, append-only file fsynced on every write."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        self.argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--dir", str(directory), "--logfile", "",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> float:
        """Seconds until the server answers PING (it may be replaying its append-only file)."""
        started = time.monotonic()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            while True:
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return time.monotonic() - started
                if time.monotonic() - started > START_TIMEOUT:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.01)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: a crash. ``start()`` later comes back with the same port and files."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


class CeleryWorker:
    """``celery -A tasks worker -Q ctxcache.invalidate`` in its own process group."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 2) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.log = log
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker"]
        argv += ["-Q", "ctxcache.invalidate", "-c", str(self.concurrency)]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        argv += ["-n", f"faults{os.getpid()}-{self.kills}@%h", "--loglevel", "INFO"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log.read_bytes():
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready in {timeout} s: {self.tail()}")
            time.sleep(0.05)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:]

    def kill_restart(self) -> None:
        """SIGKILL the whole group (main process and pool), then start a fresh worker."""
        self.kill()
        self.kills += 1
        self.start()

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL whatever is left of the group."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def rabbitmq_vhost(base: str = "amqp://guest:guest@127.0.0.1:5672") -> Iterator[str]:
    """A vhost made for this run with ``rabbitmqctl`` (guest may use it), deleted after."""
    vhost = f"ctxcache_faults_{os.getpid()}_{secrets.token_hex(3)}"

    def ctl(*argv: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *argv], capture_output=True, timeout=60, check=True)

    ctl("add_vhost", vhost)
    try:
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{base}/{vhost}"
    finally:
        ctl("delete_vhost", vhost)
