"""Redis unreachable or slow: reads miss, writes return False, loads still load, nothing hangs.

A "slow" Redis is a loopback listener that accepts connections and never
answers; an unreachable one is a closed port. Both count the connections they
see, which shows when the circuit breaker keeps requests away.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import COMPANY, PHONE, FakeClock, SpareRedis, make_settings

from ctxcache import ContextCache, WarmOutcome
from ctxcache.core.breaker import BreakerState


class SilentServer:
    """Accepts TCP connections on loopback and never replies."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loader(phone: str, company_id: int) -> dict[str, Any]:
    return {"from": "database"}


def exercise(cache: ContextCache) -> list[float]:
    """Every API call once; returns how long each took."""
    durations = []
    checks = [
        (lambda: cache.get_cached_full_context(PHONE, COMPANY), None),
        (lambda: cache.set_cached_full_context(PHONE, COMPANY, {"a": 1}), False),
        (lambda: cache.invalidate_cached_context(PHONE, COMPANY), False),
        (lambda: cache.load_full_context(PHONE, COMPANY, loader), {"from": "database"}),
        (lambda: cache.warm_full_context(PHONE, COMPANY, loader), WarmOutcome.UNAVAILABLE),
        (lambda: cache.update_dialog_context(PHONE, COMPANY, {"a": 1}), False),
        (lambda: cache.get_dialog_context(PHONE, COMPANY), None),
    ]
    for call, expected in checks:
        started = time.monotonic()
        assert call() == expected
        durations.append(time.monotonic() - started)
    return durations


def test_unreachable_redis_degrades_without_raising() -> None:
    cache = ContextCache.from_settings(
        make_settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0", breaker_threshold=100)
    )
    durations = exercise(cache)
    assert max(durations) < 1.0
    stats = cache.stats()
    assert stats.errors >= 7
    assert stats.loads == 1


def test_silent_redis_costs_at_most_the_socket_timeout_per_call(
    silent_server: SilentServer,
) -> None:
    cache = ContextCache.from_settings(
        make_settings(
            redis_url=f"redis://127.0.0.1:{silent_server.port}/0",
            socket_timeout=0.2,
            breaker_threshold=100,  # keep the breaker out of this test
        )
    )
    durations = exercise(cache)
    # One timeout per call at most: no retries, and a load skips the lease once
    # its GET failed. The margin is for a busy machine, not for a second wait.
    assert all(d < 0.2 + 0.15 for d in durations), durations
    assert min(durations) >= 0.15  # each really waited on the silent server


def test_breaker_skips_redis_after_repeated_failures(
    silent_server: SilentServer, clock: FakeClock
) -> None:
    cache = ContextCache.from_settings(
        make_settings(
            redis_url=f"redis://127.0.0.1:{silent_server.port}/0",
            socket_timeout=0.1,
            breaker_threshold=3,
            breaker_cooldown=5.0,
        ),
        clock=clock,
        sleep=clock.sleep,
    )
    for _ in range(3):
        assert cache.get_cached_full_context(PHONE, COMPANY) is None
    assert cache.breaker.state is BreakerState.OPEN
    seen = silent_server.accepted

    started = time.monotonic()
    for _ in range(50):
        assert cache.get_cached_full_context(PHONE, COMPANY) is None
        assert cache.load_full_context(PHONE, COMPANY, loader) == {"from": "database"}
    assert time.monotonic() - started < 0.5  # nobody paid the timeout
    time.sleep(0.05)  # let the accept loop see any connection (there must be none)
    assert silent_server.accepted == seen

    clock.advance(5.0)  # cool-down over: one trial call reaches the server
    assert cache.get_cached_full_context(PHONE, COMPANY) is None
    deadline = time.monotonic() + 2
    while silent_server.accepted == seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert silent_server.accepted == seen + 1
    assert cache.breaker.state is BreakerState.OPEN


def test_breaker_closes_when_redis_comes_back(spare_redis: SpareRedis, clock: FakeClock) -> None:
    settings = make_settings(redis_url=spare_redis.url, breaker_threshold=1)
    cache = ContextCache.from_settings(settings, clock=clock, sleep=clock.sleep)
    assert cache.set_cached_full_context(PHONE, COMPANY, {"before": True})
    spare_redis.stop()
    assert cache.get_cached_full_context(PHONE, COMPANY) is None
    assert cache.breaker.state is BreakerState.OPEN
    spare_redis.start()  # empty again: it keeps nothing on disk
    assert cache.set_cached_full_context(PHONE, COMPANY, {"back": True}) is False  # cooling down
    clock.advance(settings.breaker_cooldown)
    assert cache.set_cached_full_context(PHONE, COMPANY, {"back": True})
    assert cache.breaker.state is BreakerState.CLOSED
    assert cache.get_cached_full_context(PHONE, COMPANY) == {"back": True}


def test_an_interrupted_trial_call_does_not_wedge_the_breaker(
    real_cache: ContextCache, clock: FakeClock
) -> None:
    real_cache.breaker.threshold = 1
    real_cache.breaker.record_failure()
    clock.advance(real_cache.breaker.cooldown)  # half-open: the next call is the trial

    def interrupted() -> None:
        raise KeyboardInterrupt  # e.g. Celery's soft time limit, mid-command

    with pytest.raises(KeyboardInterrupt):
        real_cache.run_guarded("GET", "trial", interrupted)
    assert real_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})  # a new trial went
    assert real_cache.breaker.state is BreakerState.CLOSED
