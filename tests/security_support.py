"""Private redis-servers for the security tests: TLS and ACL users, on loopback ports 7200-7299.

Each server runs in its own process group and is killed with it by the
fixture that started it; nothing here touches the shared server's users.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

PORTS = range(7200, 7300)


def free_port_in_range() -> int:
    """A loopback port of this suite's range that nothing listens on."""
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 7200-7299")


def stored(client: redis.Redis) -> Iterator[tuple[bytes, list[bytes]]]:
    """Every key of the database with what it holds: a string's value, a hash's field names
    and values, a sorted set's members (other types: their DUMP)."""
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        else:
            values = [client.dump(key) or b""]
        yield key, values


@contextlib.contextmanager
def private_redis(directory: Path, args: Sequence[str], ready: Any) -> Iterator[int]:
    """Run ``redis-server <args>`` on a port of the range; ``ready(port)`` must pass once."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    port = free_port_in_range()
    argv = [binary, *[a.replace("{port}", str(port)) for a in args]]
    argv += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)]
    log = directory / f"redis-{port}.log"
    argv += ["--logfile", str(log)]
    process = subprocess.Popen(argv, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ready(port)
                break
            except (redis.RedisError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text() if log.exists() else ""
                    pytest.fail(f"redis-server on {port} did not start: {text[-2000:]}")
                time.sleep(0.02)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
