"""Celery behaviour with real `celery -A tasks worker|beat` processes on real brokers.

Every test that needs a broker runs twice: with Redis and with RabbitMQ as the
broker. The cache is always the real test Redis; the Redis broker lives in the
same database under its own key prefix, RabbitMQ in the tests' own vhost.
Nothing here uses eager mode.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis
from celery import Celery
from conftest import (
    BROKER_KEY_PREFIX,
    COMPANY,
    IN_CI,
    PHONE,
    TEST_REDIS_URL,
    free_port,
    make_settings,
)
from worker_support import (
    DELAY_KEY,
    LOADING_KEY,
    LOADS_KEY,
    CeleryProcess,
    wait_until,
)

from ctxcache import ContextCache, InvalidationFailedError, VipRegistry, mask_phone
from tasks import (
    WARM_ALL_TASK,
    InvalidationOutcome,
    InvalidationRoute,
    booking_cancelled,
    booking_created,
    company_changed,
    create_app,
    runtime,
)

pytestmark = pytest.mark.celery

KEY = f"full_context:{COMPANY}:{PHONE}"
BROKERS = ["redis", "rabbitmq"]
VIPS = [("+79001234567", COMPANY), ("+79007654321", COMPANY), ("+79005550000", 1001)]
_names = itertools.count()


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """The Redis broker (the test database, keys under BROKER_KEY_PREFIX) or RabbitMQ's vhost."""
    url = TEST_REDIS_URL if request.param == "redis" else str(request.getfixturevalue("amqp_url"))
    try:
        with kombu.Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        message = f"broker {request.param} at {url} is not reachable: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: Celery tests must run)")
        pytest.skip(message)
    return url


@pytest.fixture
def app(broker: str) -> Iterator[Celery]:
    """The publishing side, as booking code has it; queues purged before each test."""
    celery_app = create_app(broker_url=broker)
    options = celery_app.conf.broker_transport_options
    celery_app.conf.broker_transport_options = {**options, "global_keyprefix": BROKER_KEY_PREFIX}
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in celery_app.conf.task_queues:
            bound = queue.bind(channel)
            bound.declare()
            bound.purge()
    yield celery_app
    celery_app.close()


@pytest.fixture
def cache(real_client: redis.Redis) -> Iterator[ContextCache]:
    """The booking process's cache (hooks use it for validation and the inline backstop)."""
    cache = ContextCache.from_settings(make_settings())
    runtime.reset()
    runtime.configure(cache=cache)
    yield cache
    runtime.reset()
    cache.close()


@pytest.fixture
def celery_process(broker: str, tmp_path: Path) -> Iterator[Callable[..., CeleryProcess]]:
    """Starts `celery -A tasks worker|beat` subprocesses; stops them all at the end."""
    started: list[CeleryProcess] = []

    def start(kind: str, *args: str, ready: str | None = None, **env: str) -> CeleryProcess:
        base = {
            "CTXCACHE_REDIS_URL": TEST_REDIS_URL,
            "CTXCACHE_BROKER_URL": broker,
            "CTXCACHE_BROKER_KEY_PREFIX": BROKER_KEY_PREFIX,
            "CTXCACHE_LOADER": "worker_support:load_context",
        }
        number = next(_names)
        if kind == "worker":
            argv = [
                "worker", "-Q", "ctxcache.invalidate,ctxcache.warmup", "-c", "2",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", f"test{number}@%h", "--loglevel", "INFO", *args,
            ]  # fmt: skip
            marker = ready or "ready."
        else:
            argv = ["beat", "-s", str(tmp_path / f"beat{number}"), "--loglevel", "INFO", *args]
            marker = ready or "beat: Starting"
        process = CeleryProcess(argv, {**base, **env}, tmp_path / f"{kind}{number}.log")
        started.append(process)
        process.start(marker)
        return process

    yield start
    for process in started:
        process.stop()


def loads(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(LOADS_KEY).items()}


def test_booking_hooks_invalidate_inline_and_a_worker_checks(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    worker = celery_process("worker")
    for number, hook in enumerate((booking_created, booking_cancelled), start=1):
        assert cache.set_cached_full_context(PHONE, COMPANY, {"bookings": []})
        outcome = hook("8 (900) 123-45-67", str(COMPANY), app=app)
        assert outcome is InvalidationOutcome.INLINE_AND_QUEUED
        assert not cache.client.exists(KEY)  # gone when the hook returns
        wait_until(
            lambda n=number: worker.log().count(f"{mask_phone(PHONE)} / {COMPANY}: in_effect") == n,
            10,
            "the safety net to find the invalidation in effect",
        )


def test_a_booking_makes_other_clients_miss_the_taken_slots(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    """Freshness for other clients, end to end: the hook, then a real worker's safety net."""
    worker = celery_process("worker")
    other = "+79007654321"
    context = {"client": {}, "staffSchedules": [{"slot": "10:00"}], "services": [1]}
    for phone in (PHONE, other):
        assert cache.set_cached_full_context(phone, COMPANY, context)
    assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
    # The other client's context no longer offers the old slots, at once.
    assert cache.get_cached_full_context(other, COMPANY) is None
    sections = f"{{company_context:{COMPANY}}}:section:"
    assert not cache.client.exists(sections + "staffSchedules")
    assert cache.client.exists(sections + "services")  # the catalogue stays
    fresh = {**context, "staffSchedules": []}
    token = cache.current_generation(other, COMPANY)
    assert cache.set_cached_full_context(other, COMPANY, fresh, generation=token)
    wait_until(
        lambda: f"{mask_phone(PHONE)} / {COMPANY}: in_effect" in worker.log(),
        10,
        "the safety net to find the booking's invalidation in effect",
    )
    assert cache.get_cached_full_context(other, COMPANY) == fresh  # reloaded data kept


def test_the_safety_net_reapplies_undone_company_sections(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    context = {"client": {}, "staffSchedules": [{"slot": "10:00"}], "services": [1]}
    assert cache.set_cached_full_context(PHONE, COMPANY, context)
    gens = f"{{company_context:{COMPANY}}}:gen"
    section = f"{{company_context:{COMPANY}}}:section:staffSchedules"
    before, value = cache.client.hgetall(gens), cache.client.get(section)
    assert company_changed(COMPANY, ["staffSchedules"], app=app).applied  # no worker yet
    cache.client.delete(gens)  # a failover lost the inline write: old generations, old slots
    if before:
        cache.client.hset(gens, mapping=before)
    cache.client.set(section, value)
    worker = celery_process("worker")
    wait_until(lambda: not cache.client.exists(section), 15, "the worker to re-apply it")
    # The task logs after its write lands: give the log line its own bounded wait.
    wait_until(lambda: "company 962302: reapplied" in worker.log(), 15, "the task's log line")


def test_bad_input_is_refused_before_publishing(app: Celery, cache: ContextCache) -> None:
    with pytest.raises(ValueError):
        booking_created("not a phone", COMPANY, app=app)
    with pytest.raises(ValueError):
        booking_created(PHONE, 0, app=app)


def test_beat_tick_warms_every_vip(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    registry = VipRegistry(cache)
    for phone, company in VIPS:
        registry.add(phone, company)
    interval = {"CTXCACHE_WARMUP_INTERVAL": "2"}
    celery_process("worker", **interval)
    celery_process("beat", **interval)
    wait_until(
        lambda: all(cache.client.exists(cache.client_keys(*vip).full_context) for vip in VIPS),
        30,
        "three warmed contexts",
    )
    for phone, company in VIPS:
        assert cache.get_cached_full_context(phone, company) is not None
    assert sorted(loads(cache.client).values()) == [1, 1, 1]


def test_a_warm_up_tick_loads_each_companys_sections_once(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    vips = [(f"+7900123{i:04d}", 962302 + i % 2) for i in range(8)]  # two companies
    registry = VipRegistry(cache)
    for phone, company in vips:
        registry.add(phone, company)
    cache.client.set(DELAY_KEY, 0.2)  # company loads take a while: clients' warm-ups overlap
    celery_process("worker", CTXCACHE_LOADER="worker_support:sectioned_loader")
    app.tasks[WARM_ALL_TASK].delay()
    wait_until(
        lambda: all(cache.get_cached_full_context(*vip) is not None for vip in vips),
        30,
        "eight warmed contexts",
    )
    counts = loads(cache.client)
    assert counts == {
        "company:962302": 1,  # each company's sections once, not once per VIP
        "company:962303": 1,
        **{f"client:{company}:{phone}": 1 for phone, company in vips},
    }


def test_overlapping_warm_up_exits_without_loading(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    registry = VipRegistry(cache)
    for phone, company in VIPS:
        registry.add(phone, company)
    worker = celery_process("worker")
    cache.client.set(cache.keys.warmup_lock, "another-run", px=60_000)
    app.tasks[WARM_ALL_TASK].delay()
    wait_until(lambda: "another run holds this interval" in worker.log(), 20, "the skip")
    assert loads(cache.client) == {}
    assert cache.get_cached_full_context(*VIPS[0]) is None

    cache.client.delete(cache.keys.warmup_lock)  # that run is over
    app.tasks[WARM_ALL_TASK].delay()
    wait_until(lambda: len(loads(cache.client)) == 3, 20, "the next run's loads")


def test_warm_up_skips_fresh_contexts_and_refreshes_old_ones(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    fresh, old, absent = VIPS
    registry = VipRegistry(cache)
    for phone, company in VIPS:
        registry.add(phone, company)
    cache.set_cached_full_context(*fresh, {"fresh": True})  # 12 h left
    cache.set_cached_full_context(*old, {"old": True}, 60)  # under the 1 h threshold
    worker = celery_process("worker")
    app.tasks[WARM_ALL_TASK].delay()
    wait_until(lambda: worker.log().count("warm-up of") == 3, 20, "three warm-up tasks")
    assert loads(cache.client) == {f"{old[1]}:{old[0]}": 1, f"{absent[1]}:{absent[0]}": 1}
    assert cache.get_cached_full_context(*fresh) == {"fresh": True}
    assert cache.get_cached_full_context(*old) == {"phone": old[0], "companyId": old[1], "load": 1}


def test_invalidation_during_a_warm_up_wins(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    VipRegistry(cache).add(PHONE, COMPANY)
    cache.client.set(DELAY_KEY, "1.0")
    worker = celery_process("worker")
    app.tasks[WARM_ALL_TASK].delay()
    wait_until(lambda: cache.client.llen(LOADING_KEY) == 1, 20, "the warm-up's load to start")
    assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
    wait_until(lambda: "superseded" in worker.log(), 20, "the warm-up to finish")
    assert loads(cache.client) == {f"{COMPANY}:{PHONE}": 1}
    assert not cache.client.exists(KEY)


def test_two_beats_load_each_vip_once_per_interval(
    app: Celery, cache: ContextCache, celery_process: Callable[..., CeleryProcess]
) -> None:
    registry = VipRegistry(cache)
    for phone, company in VIPS:
        registry.add(phone, company)
    env = {
        "CTXCACHE_WARMUP_INTERVAL": "3",
        # Above the 12 h TTL: every run would reload every VIP, so only the
        # warm-up lock can keep the second beat from loading them again.
        "CTXCACHE_WARMUP_REFRESH_THRESHOLD": "86400",
    }
    worker = celery_process("worker", **env)
    celery_process("beat", **env)
    celery_process("beat", **env)
    wait_until(lambda: sum(loads(cache.client).values()) >= 3, 30, "the first interval's loads")
    wait_until(
        lambda: worker.log().count("another run holds this interval") >= 1,
        10,
        "the second beat's run to be turned away",
    )
    assert sorted(loads(cache.client).values()) == [1, 1, 1]


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_hook_invalidates_inline_when_the_broker_is_down(
    cache: ContextCache, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://127.0.0.1:{port}//"
    dead = create_app(broker_url=url)
    assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
    outcome = booking_created(PHONE, COMPANY, app=dead)
    assert outcome is InvalidationOutcome.INLINE_ONLY
    assert outcome is InvalidationRoute.INLINE  # the first version's names still work
    assert not cache.client.exists(KEY)
    assert "could not queue the safety net" in caplog.text
    assert "9001234567" not in caplog.text


def test_hook_raises_when_broker_and_redis_are_both_down(real_client: Any) -> None:
    dead_cache = ContextCache.from_settings(
        make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    )
    runtime.reset()
    runtime.configure(cache=dead_cache)
    try:
        dead = create_app(broker_url=f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(InvalidationFailedError):
            booking_cancelled(PHONE, COMPANY, app=dead)
    finally:
        runtime.reset()


@pytest.mark.parametrize(
    ("variable", "path"),
    [
        ("CTXCACHE_LOADER", "no_such_module:load"),
        ("CTXCACHE_VIP_SOURCE", "worker_support:no_such_function"),
    ],
)
def test_worker_with_a_wrong_dotted_path_stops_at_start(
    broker: str, tmp_path: Path, variable: str, path: str
) -> None:
    env = {
        "CTXCACHE_REDIS_URL": TEST_REDIS_URL,
        "CTXCACHE_BROKER_URL": broker,
        "CTXCACHE_BROKER_KEY_PREFIX": BROKER_KEY_PREFIX,
        "CTXCACHE_LOADER": "worker_support:load_context",
        variable: path,
    }
    worker = CeleryProcess(["worker", "--loglevel", "INFO"], env, tmp_path / "bad.log")
    worker.start(ready_marker=None)
    assert worker.process is not None
    code = worker.process.wait(timeout=60)
    worker.process = None
    assert code != 0
    assert variable in worker.log()
    assert "ready." not in worker.log()


def test_pools_that_do_not_fork_keep_the_configured_cache(
    cache: ContextCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime._after_fork()  # solo and thread pools send worker_process_init in-process
    assert runtime.get_cache() is cache
    monkeypatch.setitem(runtime._owner, "pid", -1)  # a forked child: the parent's pool goes
    runtime._after_fork()
    assert runtime.get_cache() is not cache
