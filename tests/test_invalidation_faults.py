"""Invalidations under faults, with real `celery -A tasks worker` processes on real brokers.

The booking hooks apply an invalidation inline and queue a safety net that
carries the generation they produced. These tests kill and freeze workers,
take Redis away from the hook, and undo inline writes, and check that no
client is left with a stale context.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

import pytest
import redis
import test_celery
from celery import Celery
from conftest import BROKER_KEY_PREFIX, COMPANY, PHONE, TEST_REDIS_URL, SpareRedis, make_settings
from worker_support import DELAY_KEY, CeleryProcess, FreezableProxy, wait_until

from celeryconfig import INVALIDATE_QUEUE, WARMUP_QUEUE
from ctxcache import ContextCache, mask_phone
from tasks import INVALIDATE_TASK, WARM_ONE_TASK, InvalidationOutcome, booking_created, runtime

pytestmark = pytest.mark.celery

# The Celery fixtures (brokers, the publishing app, the hooks' cache, worker
# subprocesses) are test_celery's; bound here so that pytest finds them.
broker = test_celery.broker
app = test_celery.app
cache = test_celery.cache
celery_process = test_celery.celery_process

KEY = f"full_context:{COMPANY}:{PHONE}"
GEN_KEY = "{" + KEY + "}:gen"
CLIENT = f"{mask_phone(PHONE)} / {COMPANY}"
QUEUE_KEY = BROKER_KEY_PREFIX + INVALIDATE_QUEUE  # the Redis broker's list
INVALIDATION_WORKER = ("-Q", INVALIDATE_QUEUE)  # the fast-recovery transport options
FAST = {"CTXCACHE_INVALIDATE_VISIBILITY_TIMEOUT": "3"}  # redelivery of a killed worker's
redis_broker_only = pytest.mark.parametrize("broker", ["redis"], indirect=True)


def snapshot(client: redis.Redis) -> tuple[bytes | None, bytes | None]:
    """The client's generation and cached value, to put back later."""
    return client.get(GEN_KEY), client.get(KEY)


def undo(client: redis.Redis, saved: tuple[bytes | None, bytes | None]) -> None:
    """What a failover to a replica that missed the invalidation does: old generation, old value."""
    generation, value = saved
    if generation is None:
        client.delete(GEN_KEY)
    else:
        client.set(GEN_KEY, generation)
    assert value is not None
    client.set(KEY, value)


@redis_broker_only
def test_a_frozen_worker_killed_with_the_message_leaves_no_stale_context(
    app: Celery,
    cache: ContextCache,
    broker: str,
    celery_process: Callable[..., CeleryProcess],
) -> None:
    # kombu's Redis transport takes a message with BRPOP and records it as unacked in
    # a second round trip: a worker killed between the two loses it (kombu #305, #1836).
    worker = celery_process("worker", *INVALIDATION_WORKER)
    assert worker.process is not None
    queue = redis.Redis.from_url(broker)
    try:
        for _attempt in range(3):
            assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
            # Idle, its BRPOP (1 s long) waiting on the server: unless it is frozen
            # between two of them, the server hands it the message all the same.
            os.killpg(worker.process.pid, signal.SIGSTOP)
            outcome = booking_created(PHONE, COMPANY, app=app)
            assert outcome is InvalidationOutcome.INLINE_AND_QUEUED
            assert not cache.client.exists(KEY)  # fresh when the hook returns
            with contextlib.suppress(AssertionError):
                wait_until(lambda: queue.llen(QUEUE_KEY) == 0, 3, "the frozen BRPOP")
                break
            os.killpg(worker.process.pid, signal.SIGCONT)  # frozen between two: again
            wait_until(lambda: queue.llen(QUEUE_KEY) == 0, 10, "the worker to catch up")
        else:
            pytest.fail("the worker was never frozen inside a BRPOP")
    finally:
        worker.kill()
        queue.close()
    celery_process("worker", *INVALIDATION_WORKER)
    assert not cache.client.exists(KEY)
    assert cache.get_cached_full_context(PHONE, COMPANY) is None


def test_a_worker_killed_inside_the_task_leaves_it_to_the_next_one(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    proxy = FreezableProxy(int(TEST_REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    db = TEST_REDIS_URL.rsplit("/", 1)[1]
    victim = celery_process(
        "worker",
        *INVALIDATION_WORKER,
        CTXCACHE_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/{db}",
        CTXCACHE_SOCKET_TIMEOUT="30",
        **FAST,
    )
    assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
    saved = snapshot(cache.client)
    proxy.frozen.set()  # the worker's Redis calls now hang mid-way
    assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
    wait_until(lambda: proxy.bytes_held > 0, 20, "the worker to be inside the safety net")
    undo(cache.client, saved)  # the inline write is lost while the task hangs
    victim.kill()
    proxy.close()
    assert cache.client.exists(KEY), "the killed worker must not have applied it"

    worker = celery_process("worker", *INVALIDATION_WORKER, **FAST)
    wait_until(lambda: not cache.client.exists(KEY), 60, "the redelivered safety net")
    wait_until(lambda: f"{CLIENT}: reapplied" in worker.log(), 10, "the task's log line")


@redis_broker_only
def test_redis_down_during_the_hook_leaves_it_to_a_worker(
    app: Celery,
    persistent_redis: SpareRedis,
    celery_process: Callable[..., CeleryProcess],
) -> None:
    outage = ContextCache.from_settings(make_settings(redis_url=persistent_redis.url))
    runtime.reset()
    runtime.configure(cache=outage)
    runtime.get_pending().close()  # this test is about the worker's carrier alone
    try:
        worker = celery_process(
            "worker",
            *INVALIDATION_WORKER,
            CTXCACHE_REDIS_URL=persistent_redis.url,
            CTXCACHE_BREAKER_COOLDOWN="0.5",
        )
        assert outage.set_cached_full_context(PHONE, COMPANY, {"stale": True})
        persistent_redis.stop()  # the context is on disk and comes back with the server
        assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.QUEUED_ONLY
        assert outage.stats().hook_queued_only == 1
        wait_until(lambda: f"{CLIENT}: unavailable" in worker.log(), 20, "a failed attempt")

        assert worker.process is not None
        os.killpg(worker.process.pid, signal.SIGSTOP)  # so that the test sees Redis first
        try:
            persistent_redis.start()
            assert outage.client.exists(KEY), "the stale context is back from the append-only file"
        finally:
            os.killpg(worker.process.pid, signal.SIGCONT)
        wait_until(lambda: not outage.client.exists(KEY), 30, "a retry to apply it")
        wait_until(lambda: f"{CLIENT}: reapplied" in worker.log(), 10, "the task's log line")
    finally:
        runtime.reset()
        outage.close()


def test_the_safety_net_keeps_a_context_reloaded_after_the_hook(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, {"booking": "old"})
    assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
    fresh = cache.load_full_context(PHONE, COMPANY, lambda phone, company: {"booking": "new"})
    assert cache.get_cached_full_context(PHONE, COMPANY) == fresh

    worker = celery_process("worker", *INVALIDATION_WORKER)  # the queued task runs only now
    wait_until(lambda: f"{CLIENT}: in_effect" in worker.log(), 20, "the safety net")
    assert cache.get_cached_full_context(PHONE, COMPANY) == {"booking": "new"}


def test_the_safety_net_reapplies_an_invalidation_that_was_undone(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, {"booking": "old"})
    saved = snapshot(cache.client)
    assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
    undo(cache.client, saved)
    assert cache.get_cached_full_context(PHONE, COMPANY) == {"booking": "old"}

    worker = celery_process("worker", *INVALIDATION_WORKER)
    wait_until(lambda: not cache.client.exists(KEY), 20, "the safety net to re-apply it")
    wait_until(lambda: f"{CLIENT}: reapplied" in worker.log(), 10, "the task's log line")


@redis_broker_only
def test_a_message_from_before_generations_invalidates_outright(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    worker = celery_process("worker", *INVALIDATION_WORKER)
    assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
    app.tasks[INVALIDATE_TASK].apply_async((PHONE, COMPANY))  # the first version's message
    wait_until(lambda: not cache.client.exists(KEY), 20, "the old-shape message")
    wait_until(lambda: f"{CLIENT}: reapplied" in worker.log(), 10, "the task's log line")


@redis_broker_only
def test_invalidation_worker_sweeps_leave_the_warm_ups_alone(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    # One warm-up process busy with a slow load holds the next warm-up prefetched,
    # unacknowledged. An invalidation worker sweeping with a 1 s visibility timeout
    # must not hand that one out again: its unacked keys are its own.
    celery_process("worker", *INVALIDATION_WORKER, CTXCACHE_INVALIDATE_VISIBILITY_TIMEOUT="1")
    warmer = celery_process("worker", "-Q", WARMUP_QUEUE, "-c", "1")
    cache.client.set(DELAY_KEY, "3")
    vips = [("+79001234567", COMPANY), ("+79007654321", COMPANY)]
    for phone, company in vips:
        app.tasks[WARM_ONE_TASK].delay(phone, company)
    wait_until(
        lambda: all(cache.get_cached_full_context(*vip) is not None for vip in vips),
        30,
        "both warm-ups",
    )
    with pytest.raises(AssertionError):  # a redelivered copy would run within this wait
        wait_until(lambda: warmer.log().count("warm-up of") > 2, 4, "a third warm-up")
    assert warmer.log().count("warm-up of") == 2
