"""The booking hooks' two steps (inline, then the queued safety net) and what they report.

A real broker and the real test Redis; no worker: the queued message itself is
read back from the broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import test_celery
from celery import Celery
from conftest import COMPANY, PHONE, free_port, make_settings

from celeryconfig import INVALIDATE_QUEUE, INVALIDATE_TRANSPORT_OPTIONS, broker_transport_options
from ctxcache import CacheSettings, ContextCache, InvalidationFailedError, SectionScopeError
from ctxcache.ops.metrics import StatsCollector
from tasks import (
    INVALIDATE_COMPANY_TASK,
    INVALIDATE_TASK,
    InvalidationOutcome,
    InvalidationRoute,
    booking_cancelled,
    booking_created,
    company_changed,
    create_app,
    invalidate_now_and_queue,
    runtime,
)
from tasks.app import RETRY_SPAN_SECONDS, retry_schedule
from tasks.transport import consumed_queues, is_redis_url, transport_options_for

broker = test_celery.broker  # parametrized: every test here runs on both brokers
app = test_celery.app
cache = test_celery.cache

KEY = f"full_context:{COMPANY}:{PHONE}"
GEN_KEY = "{" + KEY + "}:gen"
COMPANY_GENS = f"{{company_context:{COMPANY}}}:gen"
SECTION = f"{{company_context:{COMPANY}}}:section:"


def queued_messages(celery_app: Celery, queue_name: str = INVALIDATE_QUEUE) -> list[Any]:
    """Take every message off ``queue_name``: (task name, args, kwargs) of each."""
    found = []
    with celery_app.connection_for_read() as connection:
        queue = next(q for q in celery_app.conf.task_queues if q.name == queue_name)
        bound = queue.bind(connection.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            args, kwargs, _embed = message.decode()
            found.append((message.headers["task"], args, kwargs))
    return found


@contextlib.contextmanager
def hooks_using(cache: ContextCache) -> Iterator[ContextCache]:
    """The hooks' process runs with ``cache``; closed at the end."""
    runtime.reset()
    runtime.configure(cache=cache)
    try:
        yield cache
    finally:
        runtime.reset()
        cache.close()


def dead_cache() -> ContextCache:
    return ContextCache.from_settings(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))


@pytest.mark.celery
def test_the_hook_applies_inline_and_queues_the_generation_it_produced(
    app: Celery, cache: ContextCache
) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
    assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
    assert not cache.client.exists(KEY)
    generation = int(cache.client.get(GEN_KEY))
    sections = {k.decode(): int(v) for k, v in cache.client.hgetall(COMPANY_GENS).items()}
    assert set(sections) == {"staffSchedules", "businessStats"}  # the booking's availability
    expected = {"generation": generation, "sections": sections}
    assert queued_messages(app) == [(INVALIDATE_TASK, [PHONE, COMPANY], expected)]
    assert booking_cancelled(PHONE, COMPANY, app=app).applied
    assert cache.stats().hook_inline_and_queued == 2


@pytest.mark.celery
def test_redis_down_queues_the_first_versions_message(app: Celery, real_client: Any) -> None:
    with hooks_using(dead_cache()) as unreachable:
        outcome = booking_created("8 (900) 123-45-67", str(COMPANY), app=app)
        assert outcome is InvalidationOutcome.QUEUED_ONLY is InvalidationRoute.QUEUED
        assert (outcome.applied, outcome.queued) == (False, True)
        # No generations: the worker applies it all outright.
        outright = {"staffSchedules": None, "businessStats": None}
        assert queued_messages(app) == [
            (INVALIDATE_TASK, [PHONE, COMPANY], {"generation": None, "sections": outright})
        ]
        assert unreachable.stats().hook_queued_only == 1


@pytest.mark.celery
def test_neither_redis_nor_the_broker_raises_and_counts_it(real_client: Any) -> None:
    with hooks_using(dead_cache()) as unreachable:
        dead_broker = create_app(broker_url=f"amqp://127.0.0.1:{free_port()}//")
        with pytest.raises(InvalidationFailedError, match=r"\+79\*+67 / 962302"):
            booking_cancelled(PHONE, COMPANY, app=dead_broker)
        assert unreachable.stats().hook_failed == 1


@pytest.mark.celery
def test_the_hook_counters_reach_prometheus(app: Celery, cache: ContextCache) -> None:
    booking_created(PHONE, COMPANY, app=app)
    runtime.count(cache, "safety_net_in_effect")
    samples = {
        (sample.name, sample.labels.get("outcome")): sample.value
        for family in StatsCollector(cache).collect()
        for sample in family.samples
    }
    assert samples[("ctxcache_hook_invalidations_total", "inline_and_queued")] == 1
    assert samples[("ctxcache_hook_invalidations_total", "failed")] == 0
    assert samples[("ctxcache_safety_net_total", "in_effect")] == 1
    assert samples[("ctxcache_safety_net_total", "reapplied")] == 0
    assert samples[("ctxcache_skipped_total", None)] == 0


@pytest.mark.celery
def test_other_targets_plug_into_the_same_two_steps(app: Celery, cache: ContextCache) -> None:
    class Everyone:
        """A stand-in for a company-wide target: its own receipt, its own message."""

        def apply(self, cache: ContextCache) -> dict[str, int] | None:
            return {"sections": 7}

        def safety_net(self, receipt: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
            return INVALIDATE_TASK, (PHONE, COMPANY), {"generation": receipt["sections"]}

        def describe(self) -> str:
            return "company 962302"

    assert invalidate_now_and_queue(Everyone(), "price change", app) is (
        InvalidationOutcome.INLINE_AND_QUEUED
    )
    assert queued_messages(app) == [(INVALIDATE_TASK, [PHONE, COMPANY], {"generation": 7})]


@pytest.mark.celery
def test_company_changed_applies_inline_and_queues_its_safety_net(
    app: Celery, cache: ContextCache
) -> None:
    context = {"client": 1, "services": [1], "staff": [2], "company": {"id": COMPANY}}
    assert cache.set_cached_full_context(PHONE, COMPANY, context)
    outcome = company_changed(COMPANY, ["services", "staff"], app=app)
    assert outcome is InvalidationOutcome.INLINE_AND_QUEUED
    assert not cache.client.exists(SECTION + "services")
    assert not cache.client.exists(SECTION + "staff")
    assert cache.client.exists(SECTION + "company")
    assert cache.client.exists(KEY)  # clients' own parts are left alone
    gens = {k.decode(): int(v) for k, v in cache.client.hgetall(COMPANY_GENS).items()}
    assert queued_messages(app) == [(INVALIDATE_COMPANY_TASK, [COMPANY, gens], {})]
    with pytest.raises(SectionScopeError):
        company_changed(COMPANY, ["client"], app=app)  # refused before anything is done
    with pytest.raises(ValueError):
        company_changed("nope", app=app)
    assert queued_messages(app) == []


# -- no broker needed ---------------------------------------------------------------------


def test_only_a_worker_of_the_invalidation_queue_alone_gets_the_fast_options() -> None:
    declared = [INVALIDATE_QUEUE, "ctxcache.warmup"]
    alone = consumed_queues(declared, [INVALIDATE_QUEUE], None)
    fast = transport_options_for(alone, broker_transport_options)
    assert fast == {**broker_transport_options, **INVALIDATE_TRANSPORT_OPTIONS}
    for include, exclude in [(None, None), (declared, None), (None, [INVALIDATE_QUEUE])]:
        queues = consumed_queues(declared, include, exclude)
        assert transport_options_for(queues, broker_transport_options) is broker_transport_options
    assert consumed_queues(declared, None, ["ctxcache.warmup"]) == {INVALIDATE_QUEUE}
    slow = broker_transport_options
    assert fast["visibility_timeout"] < slow["visibility_timeout"]
    assert fast["unacked_restore_interval"] < fast["visibility_timeout"]
    assert fast["unacked_restore_throttle"] == 1
    assert fast["unacked_index_key"] != slow.get("unacked_index_key", "unacked_index")
    assert is_redis_url("rediss://h:6380/1")
    assert not is_redis_url("amqp://h//")


@pytest.mark.parametrize(("invalidate", "other"), [(30, 3600), (3, 3600), (600, 120)])
def test_retry_delays_stay_under_every_visibility_timeout(invalidate: int, other: int) -> None:
    settings = CacheSettings.load(
        invalidate_visibility_timeout=invalidate, visibility_timeout=other
    )
    cap, retries = retry_schedule(settings)
    assert 1 <= cap <= max(1, min(invalidate, other) / 3)
    assert retries * cap / 2 >= RETRY_SPAN_SECONDS  # about a day of retries


@pytest.mark.celery
def test_an_invalidation_no_replica_acknowledged_is_queued_not_reported_done(
    app: Celery, real_client: Any
) -> None:
    # WAIT 1 on a server without replicas: applied on the primary, but not safe from a
    # failover, so the hook reports it queued (the worker retries until acknowledged).
    with hooks_using(
        ContextCache.from_settings(
            make_settings(invalidation_replicas="1", invalidation_wait_timeout=0.02)
        )
    ) as unsafe:
        outcome = booking_created(PHONE, COMPANY, app=app)
        assert outcome is InvalidationOutcome.QUEUED_ONLY
        outright = {"staffSchedules": None, "businessStats": None}
        assert queued_messages(app) == [
            (INVALIDATE_TASK, [PHONE, COMPANY], {"generation": None, "sections": outright})
        ]
        assert unsafe.stats().unacknowledged == 1
