"""Helpers for tests that run real Celery workers and beats as subprocesses.

``load_context`` is the loader the test workers use (``CTXCACHE_LOADER=
worker_support:load_context``). It records every call in the test Redis, so
tests can count loads across processes, and can be slowed down from a test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
LOADS_KEY = "test:loads"  # hash: "<company>:<phone>" -> number of loads
LOADING_KEY = "test:loading"  # list: loads started, for tests to wait on
DELAY_KEY = "test:load_delay"  # seconds each load takes, set by a test


def _redis() -> redis.Redis:
    # A password in the URL wins over REDIS_PASSWORD, as in ctxcache's own client.
    return redis.Redis.from_url(
        os.environ["CTXCACHE_REDIS_URL"], password=os.environ.get("REDIS_PASSWORD") or None
    )


def load_context(phone: str, company_id: int) -> dict[str, Any]:
    client = _redis()
    member = f"{company_id}:{phone}"
    client.rpush(LOADING_KEY, member)
    delay = float(client.get(DELAY_KEY) or 0)
    if delay:
        time.sleep(delay)
    count = client.hincrby(LOADS_KEY, member, 1)
    client.close()
    return {"phone": phone, "companyId": company_id, "load": count}


class SectionedLoader:
    """A sectioned loader for test workers (``worker_support:sectioned_loader``).

    Counts its calls in the test Redis: ``client:<company>:<phone>`` and
    ``company:<company>`` in the hash at LOADS_KEY.
    """

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        client = _redis()
        count = client.hincrby(LOADS_KEY, f"client:{company_id}:{phone}", 1)
        client.close()
        return {"phone": phone, "client": {"load": count}}

    def load_company_sections(self, company_id: int, sections: Any) -> dict[str, Any]:
        client = _redis()
        client.hincrby(LOADS_KEY, f"company:{company_id}", 1)
        delay = float(client.get(DELAY_KEY) or 0)
        client.close()
        if delay:
            time.sleep(delay)
        return {name: {"company": company_id, "section": name} for name in sections}


sectioned_loader = SectionedLoader()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


class CeleryProcess:
    """``celery -A tasks worker|beat`` in its own session, so the whole group can be killed."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_marker: str | None = "ready.", timeout: float = 60) -> None:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", *self.args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if ready_marker:
            wait_until(lambda: self._ready(ready_marker), timeout, f"celery {self.args[0]} ready")

    def _ready(self, marker: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"celery exited early:\n{self.log()}")
        return marker in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the worker and its children at once: nothing gets to clean up."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


class FreezableProxy:
    """A loopback TCP proxy to Redis that can hold every byte: a call through it hangs.

    Used to catch a worker in the middle of an invalidation.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.bytes_held = 0
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if outbound and self.frozen.is_set():
                    self.bytes_held += len(data)
                    while self.frozen.is_set() and not self._closing.is_set():
                        time.sleep(0.01)
                    if self._closing.is_set():
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closing.set()
        self.listener.close()
