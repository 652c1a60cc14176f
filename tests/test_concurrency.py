"""Stampede and lock behaviour against the real Redis, with real threads on separate pools."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from conftest import COMPANY, PHONE, FakeClock
from test_wire import load_fixture

from ctxcache import ContextCache

KEY = f"full_context:{COMPANY}:{PHONE}"
LOCK = "{" + KEY + "}:lock"
CALLERS = 50


def test_fifty_concurrent_misses_cause_one_load(
    cache_factory: Callable[..., ContextCache],
) -> None:
    context = load_fixture()
    calls = 0
    calls_lock = threading.Lock()
    start = threading.Barrier(CALLERS)

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.3)  # the database takes a while; everyone else misses meanwhile
        return context

    # One cache (one connection pool) per caller, as separate workers would have.
    caches = [cache_factory() for _ in range(CALLERS)]

    def call(cache: ContextCache) -> dict[str, Any]:
        start.wait(timeout=10)
        return cache.load_full_context(PHONE, COMPANY, loader)

    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(call, caches, timeout=30))

    assert calls == 1
    assert all(result == context for result in results)
    assert sum(cache.stats().loads for cache in caches) == 1
    assert sum(cache.stats().coalesced for cache in caches) >= 1
    assert caches[0].client.get(LOCK) is None


def test_waiters_load_themselves_when_the_loader_died(
    real_client: redis.Redis, cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    # A worker took the lock and died: the lock stays until it expires.
    real_client.set(LOCK, "dead-worker-token", px=60_000)
    cache = cache_factory(clock=clock, lock_wait=2.0)
    loaded: list[str] = []

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        loaded.append(phone)
        return {"fresh": True}

    assert cache.load_full_context(PHONE, COMPANY, loader) == {"fresh": True}
    assert loaded == [PHONE]
    waited = sum(clock.sleeps)
    assert 2.0 <= waited <= 2.0 + 0.05  # bounded by lock_wait, measured on the fake clock
    # The waiter's write went through the generation guard; the dead lock is not ours.
    assert real_client.exists(KEY)
    assert real_client.get(LOCK) == b"dead-worker-token"


def test_waiter_picks_up_the_value_once_the_lock_holder_writes(
    real_client: redis.Redis, cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    holder = cache_factory()
    waiter = cache_factory(clock=clock, lock_wait=5.0)
    real_client.set(LOCK, "holder-token", px=60_000)
    polls = 0
    original_sleep = clock.sleep

    def sleep_then_holder_finishes(seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 3:  # the holder finishes its load while we wait
            holder.set_cached_full_context(PHONE, COMPANY, {"from": "holder"})
            real_client.delete(LOCK)
        original_sleep(seconds)

    clock.sleep = sleep_then_holder_finishes  # type: ignore[method-assign]
    waiter._sleep = sleep_then_holder_finishes

    def must_not_load(phone: str, company_id: int) -> dict[str, Any]:
        raise AssertionError("the waiter should have read the holder's value")

    assert waiter.load_full_context(PHONE, COMPANY, must_not_load) == {"from": "holder"}
    assert waiter.stats().coalesced == 1
    assert sum(clock.sleeps) < 5.0


def test_lock_always_has_an_expiry(
    real_client: redis.Redis, cache_factory: Callable[..., ContextCache]
) -> None:
    cache = cache_factory(lock_ttl=7.5)
    seen: list[int] = []

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        seen.append(real_client.pttl(LOCK))
        return {"a": 1}

    cache.load_full_context(PHONE, COMPANY, loader)
    assert len(seen) == 1
    assert 0 < seen[0] <= 7500


def test_lock_is_released_only_by_its_owner(
    real_client: redis.Redis, cache_factory: Callable[..., ContextCache]
) -> None:
    cache = cache_factory()

    def slow_loader(phone: str, company_id: int) -> dict[str, Any]:
        # Our lock expired and another worker took it while we were loading.
        real_client.set(LOCK, "someone-else", px=60_000)
        return {"a": 1}

    cache.load_full_context(PHONE, COMPANY, slow_loader)
    assert real_client.get(LOCK) == b"someone-else"

    def failing_loader(phone: str, company_id: int) -> dict[str, Any]:
        real_client.set(LOCK, "someone-else-again", px=60_000)
        raise RuntimeError("boom")

    real_client.delete(KEY)
    real_client.delete(LOCK)
    with contextlib.suppress(RuntimeError):
        cache.load_full_context(PHONE, COMPANY, failing_loader)
    assert real_client.get(LOCK) == b"someone-else-again"


def test_invalidations_racing_loads_never_leave_a_stale_value(
    cache_factory: Callable[..., ContextCache],
) -> None:
    """Bookings commit while workers are loading. Each round lands an invalidation
    inside a running load; once that load is over, the cache holds nothing older
    than the last committed version."""
    version = 0
    version_lock = threading.Lock()
    loading = threading.Event()

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        with version_lock:
            seen = version
        loading.set()
        time.sleep(0.01)  # the database read; the invalidation lands inside it
        return {"version": seen}

    readers = [cache_factory() for _ in range(4)]
    booker = cache_factory()
    stop = threading.Event()

    def read(cache: ContextCache) -> None:
        while not stop.is_set():
            cache.load_full_context(PHONE, COMPANY, loader)

    threads = [threading.Thread(target=read, args=(cache,)) for cache in readers]
    for thread in threads:
        thread.start()
    stale = []
    try:
        for _ in range(20):
            loading.clear()
            assert booker.invalidate_cached_context(PHONE, COMPANY)  # readers miss...
            assert loading.wait(timeout=5)  # ...and one of them is loading now
            with version_lock:
                version += 1  # the booking commits...
            assert booker.invalidate_cached_context(PHONE, COMPANY)  # ...then invalidates
            time.sleep(0.05)  # the load that was running has finished
            cached = booker.get_cached_full_context(PHONE, COMPANY)
            if cached is not None and cached["version"] != version:
                stale.append((cached["version"], version))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert stale == []
    assert sum(cache.stats().superseded for cache in readers) >= 20
