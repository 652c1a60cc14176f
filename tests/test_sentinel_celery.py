"""Booking hooks through a real worker on a Sentinel broker, with the master SIGKILLed.

The cache and the broker are both on the session's Sentinel deployment
(databases 0 and 1 of the master the sentinels name): the worst case, where
one dead server takes the inline path and the queue away at once. Every
booking's invalidation is either reported failed to the caller
(``InvalidationFailedError``: Redis and the broker both down) and owed by the
hook's process, or queued; all of them must be in effect once the deployment
has failed over: the inline call waited for the replica, and what it could not
do the queued task or the hook's process applies after the failover.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from conftest import HA_SETTINGS, make_settings
from servers import LocalSentinel
from worker_support import CeleryProcess, wait_until

from ctxcache import ContextCache, InvalidationFailedError
from tasks import booking_created, create_app, runtime

pytestmark = [pytest.mark.celery, pytest.mark.sentinel]

COMPANY = 5151
BOOKINGS = 30
KILL_AT = 10


@pytest.fixture
def sentinel_app(local_sentinel: LocalSentinel) -> Iterator[Celery]:
    local_sentinel.wait_healthy()
    local_sentinel.flush()
    app = create_app(broker_url=local_sentinel.broker_url(1))
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "master_name": local_sentinel.master_name,
    }
    yield app
    app.close()


def test_a_sentinel_master_killed_under_booking_hooks_loses_no_invalidation(
    local_sentinel: LocalSentinel,
    sentinel_app: Celery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL)
    cache = ContextCache.from_settings(
        make_settings(redis_url=local_sentinel.url(0), breaker_cooldown=0.2, **HA_SETTINGS)
    )
    runtime.reset()
    runtime.configure(cache=cache)
    worker = CeleryProcess(
        [
            "worker", "-Q", "ctxcache.invalidate", "-c", "2", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-n", "sentinel@%h", "--loglevel", "INFO",
        ],
        {
            "CTXCACHE_REDIS_URL": local_sentinel.url(0),
            "CTXCACHE_BROKER_URL": local_sentinel.broker_url(1),
            "CTXCACHE_BROKER_MASTER_NAME": local_sentinel.master_name,
            "CTXCACHE_INVALIDATE_VISIBILITY_TIMEOUT": "3",
            **{f"CTXCACHE_{name.upper()}": str(value) for name, value in HA_SETTINGS.items()},
        },
        tmp_path / "worker.log",
    )  # fmt: skip
    old_master = local_sentinel.master()
    phones = [f"+7900444{n:04d}" for n in range(BOOKINGS)]
    failed: list[str] = []
    try:
        worker.start()
        for phone in phones:
            assert cache.set_cached_full_context(phone, COMPANY, {"stale": True})
        assert old_master.client().wait(1, 2000) == 1  # the stale values are on the replica too
        killed_at = time.monotonic()
        for n, phone in enumerate(phones):
            if n == KILL_AT:
                old_master.kill()
            try:
                booking_created(phone, COMPANY, app=sentinel_app)
            except InvalidationFailedError:
                failed.append(phone)  # told to the caller: not a silent loss
            time.sleep(0.25)  # the bookings span the failover (~2-4 s) and the time after

        def still_stale() -> list[str]:
            # Those that raised too: this process owes them and applies them once Redis is back.
            return [p for p in phones if cache.get_cached_full_context(p, COMPANY) is not None]

        wait_until(lambda: local_sentinel.master() is not old_master, 30, "a failover")
        recovered = wait_until(lambda: not still_stale(), 60, "every invalidation in effect")
        assert still_stale() == []
        print(
            f"sentinel + worker: {BOOKINGS} bookings, master killed at #{KILL_AT}:"
            f" 0 lost, {len(failed)} raised to the caller (and applied later by its process),"
            f" all in effect {time.monotonic() - killed_at:.1f} s after the kill"
            f" (waited {recovered:.1f} s after the last booking)"
        )
    finally:
        worker.stop()
        runtime.reset()
        cache.close()
        if not old_master.running:
            old_master.start()
        local_sentinel.wait_healthy()
