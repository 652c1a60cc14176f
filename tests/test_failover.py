"""Failures of highly available deployments under traffic, on the session's local servers.

A primary of the Cluster and the Sentinel master are SIGKILLed while loads and
invalidations run, and slots are resharded under traffic. Callers must never
see an exception (fail-open), and every invalidation reported done must still
hold afterwards: it was acknowledged by a replica (``WAIT``) before it was
reported, so the promoted replica has it. Bounded in time: each scenario
stops once the deployment is healthy again (failover in ~2-4 s with the 1 s
node timeout of tests/servers.py), then restarts what it killed.

These run after the other users of the session's servers (pytest's file
order), and leave the deployments whole for whatever follows.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import HA_SETTINGS, make_settings
from redis.crc import key_slot
from servers import LocalCluster, LocalSentinel

from ctxcache import ContextCache
from ctxcache.core.invalidation import EnsureOutcome

COMPANY = 4242
STEPS_AFTER_RECOVERY = 60
MAX_SECONDS = 25.0


@dataclass
class Traffic:
    """The "database" (a version per client), what the cache reported, and the failures seen."""

    phones: list[str]
    versions: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # phone -> generation reported done
    owed: set[str] = field(default_factory=set)  # invalidations not reported done yet
    exceptions: list[BaseException] = field(default_factory=list)
    failed_calls: int = 0
    first_failure: float | None = None
    last_failure: float | None = None

    def loader(self, phone: str, company_id: int) -> dict[str, Any]:
        return {"phone": phone, "version": self.versions.get(phone, 0)}

    def failed(self) -> None:
        now = time.monotonic()
        self.failed_calls += 1
        self.first_failure = self.first_failure or now
        self.last_failure = now

    def step(self, cache: ContextCache, n: int) -> None:
        """One load and, every third step, a booking: the database changes, then the cache."""
        phone = self.phones[n % len(self.phones)]
        try:
            if cache.load_full_context(phone, COMPANY, self.loader) is None:
                self.failed()
            if n % 3 == 0:
                self.versions[phone] = self.versions.get(phone, 0) + 1
                self.owed.add(phone)
            for owed in sorted(self.owed):  # what the queued task does: retry until done
                generation = cache.apply_invalidation(owed, COMPANY)
                if generation is None:
                    self.failed()
                    break
                self.done[owed] = generation
                self.owed.discard(owed)
        except Exception as exc:  # fail-open broken: recorded, asserted on
            self.exceptions.append(exc)

    def stale(self, cache: ContextCache) -> list[str]:
        """Clients whose cached context is older than the database."""
        found = []
        for phone in self.phones:
            cached = cache.get_cached_full_context(phone, COMPANY)
            if cached is not None and cached["version"] != self.versions.get(phone, 0):
                found.append(phone)
        return found

    def undone(self, cache: ContextCache) -> int:
        """Invalidations reported done that the deployment no longer has (lost in a failover)."""
        lost = 0
        for phone, generation in self.done.items():
            outcome = cache.ensure_invalidated(phone, COMPANY, generation)
            assert outcome is not EnsureOutcome.UNAVAILABLE
            lost += outcome is EnsureOutcome.REAPPLIED
        return lost


def real_time_cache(url: str) -> ContextCache:
    # Real time: the breaker's cool-down must pass while the failover does.
    settings = make_settings(redis_url=url, breaker_cooldown=0.2, lock_wait=0.5, **HA_SETTINGS)
    return ContextCache.from_settings(settings)


def run_until(
    cache: ContextCache, traffic: Traffic, healthy: Callable[[], bool], start: int
) -> int:
    """Traffic until the deployment is healthy and the owed invalidations are done, then more."""
    deadline = time.monotonic() + MAX_SECONDS
    n = start
    while time.monotonic() < deadline and (traffic.owed or not healthy()):
        traffic.step(cache, n)
        n += 1
        time.sleep(0.005)
    for _ in range(STEPS_AFTER_RECOVERY):
        traffic.step(cache, n)
        n += 1
    return n


def _quiet_healthy(check: Callable[[], None]) -> Callable[[], bool]:
    def healthy() -> bool:
        try:
            check()
        except Exception:
            return False
        return True

    return healthy


@pytest.mark.cluster
def test_a_cluster_primary_killed_mid_traffic_loses_no_invalidation(
    local_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="ctxcache")  # hundreds of expected errors
    local_cluster.wait_healthy()
    local_cluster.flush()
    cache = real_time_cache(local_cluster.url)
    traffic = Traffic([f"+7900555{n:04d}" for n in range(24)])
    try:
        for n in range(90):
            traffic.step(cache, n)
        victim_port = cache.client.get_node_from_key(
            f"full_context:{COMPANY}:{traffic.phones[0]}"
        ).port
        victim = local_cluster.node_at(victim_port)
        killed_at = time.monotonic()
        victim.kill()  # SIGKILL: its last writes reach the replica only if WAIT saw them there
        healthy = _quiet_healthy(lambda: local_cluster.wait_healthy(timeout=0.01, replicas=False))
        run_until(cache, traffic, healthy, 90)
        recovered = time.monotonic() - killed_at
        assert traffic.exceptions == []
        assert traffic.owed == set()
        assert traffic.stale(cache) == []
        assert traffic.undone(cache) == 0
        assert traffic.failed_calls > 0  # the failover was felt, and failed open
        degraded = (traffic.last_failure or killed_at) - (traffic.first_failure or killed_at)
        print(
            f"cluster failover: {len(traffic.done)} clients invalidated, 0 stale, 0 lost;"
            f" reads degraded {degraded:.1f} s, healthy again after {recovered:.1f} s"
        )
    finally:
        cache.close()
        for node in local_cluster.nodes:
            if not node.running:
                local_cluster.restart(node)  # rejoins as a replica of its replacement
        local_cluster.wait_healthy()


def _phones_in_slots(low: int, high: int, count: int) -> list[str]:
    found = []
    n = 0
    while len(found) < count:
        phone = f"+7901{n:07d}"
        if low <= key_slot(f"full_context:{COMPANY}:{phone}".encode()) < high:
            found.append(phone)
        n += 1
    return found


@pytest.mark.cluster
def test_resharding_under_traffic_fails_no_call_and_loses_nothing(
    local_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="ctxcache")
    local_cluster.wait_healthy()
    local_cluster.flush()
    cache = real_time_cache(local_cluster.url)
    source, target = cache.client.get_primaries()[:2]
    low = min(start for start, _end in _slot_ranges(cache, source.name))
    traffic = Traffic(_phones_in_slots(low, low + 300, 12))  # in the slots that move
    try:
        for n in range(60):
            traffic.step(cache, n)
        ids = {node.port: cache.client.cluster_myid(node) for node in (source, target)}
        reshard = subprocess.Popen(
            [
                "redis-cli", "--cluster", "reshard", f"127.0.0.1:{source.port}",
                "--cluster-from", ids[source.port], "--cluster-to", ids[target.port],
                "--cluster-slots", "300", "--cluster-yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        n = 60
        while reshard.poll() is None and n < 5000:
            traffic.step(cache, n)
            n += 1
        _, errors = reshard.communicate(timeout=60)
        assert reshard.returncode == 0, errors
        run_until(cache, traffic, lambda: True, n)
        assert traffic.exceptions == []
        assert traffic.stale(cache) == []
        assert traffic.undone(cache) == 0
        moved = [
            p
            for p in traffic.phones
            if cache.client.get_node_from_key(f"full_context:{COMPANY}:{p}").name == target.name
        ]
        assert moved, "the resharding moved none of the traffic's slots"
    finally:
        cache.close()


def _slot_ranges(cache: ContextCache, node_name: str) -> list[tuple[int, int]]:
    ranges = []
    for (start, end), owners in cache.client.cluster_slots().items():
        primary = owners["primary"]
        if f"{primary[0]}:{primary[1]}" == node_name:
            ranges.append((start, end))
    return ranges


@pytest.mark.sentinel
def test_the_sentinel_master_killed_mid_invalidations_loses_none(
    local_sentinel: LocalSentinel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="ctxcache")
    local_sentinel.wait_healthy()
    local_sentinel.flush()
    cache = real_time_cache(local_sentinel.url())
    traffic = Traffic([f"+7900666{n:04d}" for n in range(12)])
    old_master = local_sentinel.master()
    try:
        for n in range(60):
            traffic.step(cache, n)
        killed_at = time.monotonic()
        old_master.kill()
        promoted = threading.Event()

        def healthy() -> bool:
            try:
                if local_sentinel.master() is old_master:
                    return False
            except Exception:
                return False
            promoted.set()
            return True

        run_until(cache, traffic, healthy, 60)
        recovered = time.monotonic() - killed_at
        assert promoted.is_set()
        assert traffic.exceptions == []
        assert traffic.owed == set()
        assert traffic.stale(cache) == []
        assert traffic.undone(cache) == 0
        print(
            f"sentinel failover: {len(traffic.done)} clients invalidated, 0 lost;"
            f" recovered after {recovered:.1f} s"
        )
    finally:
        cache.close()
        if not old_master.running:
            old_master.start()  # the sentinels make it a replica of the new master
        local_sentinel.wait_healthy()
