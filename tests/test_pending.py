"""Invalidations a hook's process owes Redis, applied again from that process once it answers."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from conftest import COMPANY, PHONE, SpareRedis, free_port, make_settings
from worker_support import wait_until

from ctxcache import ContextCache, InvalidationFailedError
from tasks import booking_created, create_app, runtime
from tasks.pending import PendingInvalidations


class Switch:
    """A target whose Redis is up or down at the test's word; records what was applied."""

    def __init__(self, name: str, applied: list[str], up: list[bool]) -> None:
        self.name, self.applied, self.up = name, applied, up

    def apply(self, cache: ContextCache) -> int | None:
        if not self.up[0]:
            return None
        self.applied.append(self.name)
        return 1

    def safety_net(self, receipt: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        raise AssertionError("not queued here")

    def describe(self) -> str:
        return self.name


def test_owed_invalidations_are_applied_in_order_once_redis_answers() -> None:
    applied: list[str] = []
    up = [False]
    counted: list[int] = []
    pending = PendingInvalidations(
        ContextCache(fakeredis.FakeRedis(), make_settings()),
        on_applied=lambda: counted.append(1),
    )
    for name in ("a", "b", "c"):
        pending.add(Switch(name, applied, up), background=False)
    assert pending.retry() == 0
    assert len(pending) == 3
    up[0] = True
    pending.add(Switch("d", applied, up), background=False)
    assert pending.retry() == 4
    assert applied == ["a", "b", "c", "d"]
    assert len(pending) == 0
    assert len(counted) == 4


def test_the_oldest_is_given_up_past_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    applied: list[str] = []
    pending = PendingInvalidations(ContextCache(fakeredis.FakeRedis(), make_settings()), limit=2)
    for name in ("a", "b", "c"):
        pending.add(Switch(name, applied, [True]), background=False)
    assert pending.retry() == 2
    assert applied == ["b", "c"]
    assert "gave up on a" in caplog.text


def test_a_hook_that_raised_is_applied_once_redis_is_back(persistent_redis: SpareRedis) -> None:
    cache = ContextCache.from_settings(
        make_settings(redis_url=persistent_redis.url, breaker_cooldown=0.2)
    )
    runtime.reset()
    runtime.configure(cache=cache)
    dead_broker = create_app(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
        persistent_redis.stop()  # the default layout: cache and broker down together
        with pytest.raises(InvalidationFailedError, match="applies it if Redis answers"):
            booking_created(PHONE, COMPANY, app=dead_broker)
        assert len(runtime.get_pending()) == 1

        persistent_redis.start()  # the stale context is back from the append-only file
        key = cache.client_keys(PHONE, COMPANY).full_context
        wait_until(lambda: not cache.client.exists(key), 10, "the owed invalidation")
        wait_until(lambda: cache.stats().hook_applied_later == 1, 5, "its count")
        assert len(runtime.get_pending()) == 0
        assert cache.stats().hook_failed == 1
    finally:
        runtime.reset()
        cache.close()
