"""How real ``celery -A tasks worker|beat`` processes start: refused, reduced, or warming at once.

The cache is the test Redis; each test's broker is a private redis-server, so
queue lengths are this test's alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from cli_support import run
from conftest import COMPANY, PHONE, TEST_REDIS_URL, SpareRedis
from worker_support import LOADS_KEY, REPO, CeleryProcess, wait_until

from ctxcache import ContextCache, VipRegistry
from ctxcache.settings import CacheSettings
from tasks import WARM_ALL_TASK, InvalidationOutcome, booking_created, create_app, runtime

pytestmark = pytest.mark.celery

OTHER = "+79007654321"
VIPS = [(PHONE, COMPANY), (OTHER, COMPANY)]
WORKER_ARGS = ["--without-gossip", "--without-mingle", "--without-heartbeat", "-c", "1"]


@pytest.mark.parametrize(
    ("kind", "variable", "value"),
    [
        ("worker", "CTXCACHE_REDIS_URL", "redis://127.0.0.1:99999/0"),
        ("worker", "CTXCACHE_REDIS_URL", "redis://127.0.0.1:6379/abc"),
        ("worker", "CTXCACHE_REDIS_URL", "http://127.0.0.1:6379/0"),
        ("worker", "CTXCACHE_REDIS_URL", "redis://[::1:6379/4"),
        ("worker", "CTXCACHE_BROKER_URL", "redis://127.0.0.1:6379/0?socket_timeout=5"),
        ("beat", "CTXCACHE_REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=abc"),
        ("beat", "CTXCACHE_SOCKET_TIMEOUT", "-1"),
    ],
)
def test_a_bad_setting_stops_worker_and_beat_with_one_line(
    kind: str, variable: str, value: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXCACHE_")}
    env.update(
        CTXCACHE_REDIS_URL=TEST_REDIS_URL,
        CTXCACHE_LOADER="worker_support:load_context",
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
    )
    env[variable] = value
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", kind, "-s", str(tmp_path / "schedule")]
        if kind == "beat"
        else [sys.executable, "-m", "celery", "-A", "tasks", kind],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert output.startswith(f"ctxcache: cannot start: invalid ctxcache setting: {variable}: ")
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output


@pytest.fixture
def cache(real_client: redis.Redis) -> Iterator[ContextCache]:
    cache = ContextCache.from_settings(CacheSettings.load(redis_url=TEST_REDIS_URL))
    runtime.reset()
    runtime.configure(cache=cache)
    yield cache
    runtime.reset()
    cache.close()


@pytest.fixture
def broker(spare_redis: SpareRedis) -> str:
    return spare_redis.url


@pytest.fixture
def start(broker: str, tmp_path: Path) -> Iterator[Callable[..., CeleryProcess]]:
    """Starts `celery -A tasks worker|beat` on the private broker; stops them at the end."""
    started: list[CeleryProcess] = []

    def launch(kind: str, *args: str, ready: str | None = "ready.", **env: str) -> CeleryProcess:
        base = {
            "CTXCACHE_REDIS_URL": TEST_REDIS_URL,
            "CTXCACHE_BROKER_URL": broker,
            "CTXCACHE_LOADER": "worker_support:load_context",
        }
        base.update(env)
        argv = (
            ["worker", *WORKER_ARGS, "-n", f"start{len(started)}@%h", "--loglevel", "INFO"]
            if kind == "worker"
            else ["beat", "-s", str(tmp_path / f"beat{len(started)}"), "--loglevel", "INFO"]
        )
        process = CeleryProcess([*argv, *args], base, tmp_path / f"{kind}{len(started)}.log")
        started.append(process)
        process.start(ready)
        return process

    yield launch
    for process in started:
        process.stop()


def test_a_worker_without_a_loader_invalidates_and_leaves_warm_ups_queued(
    cache: ContextCache, broker: str, start: Callable[..., CeleryProcess]
) -> None:
    worker = start("worker", "-Q", "ctxcache.invalidate,ctxcache.warmup", CTXCACHE_LOADER="")
    log = worker.log()
    assert log.count("CTXCACHE_LOADER is not set: warm-up is disabled on this worker") == 1
    assert "which consumes ctxcache.invalidate only" in log
    app = create_app(broker_url=broker)
    try:
        VipRegistry(cache).add(PHONE, COMPANY)
        app.tasks[WARM_ALL_TASK].delay()
        assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
        assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
        assert cache.get_cached_full_context(PHONE, COMPANY) is None
        wait_until(lambda: ": in_effect" in worker.log(), 20, "the worker's safety net")
    finally:
        app.close()
    queued = redis.Redis.from_url(broker)
    assert queued.llen("ctxcache.warmup") == 1  # left for a worker that has a loader
    queued.close()
    assert "Traceback" not in worker.log()
    assert cache.client.hgetall(LOADS_KEY) == {}


def test_a_warm_up_only_worker_without_a_loader_refuses_to_start(
    start: Callable[..., CeleryProcess],
) -> None:
    worker = start("worker", "-Q", "ctxcache.warmup", ready=None, CTXCACHE_LOADER="")
    assert worker.process is not None
    code = worker.process.wait(timeout=60)
    worker.process = None
    assert code != 0
    assert "CTXCACHE_LOADER is not set, and this worker consumes only ctxcache.warmup" in (
        worker.log()
    )
    assert "ready." not in worker.log()


def test_beat_warms_the_vips_as_it_starts(
    cache: ContextCache, start: Callable[..., CeleryProcess]
) -> None:
    registry = VipRegistry(cache)
    for phone, company in VIPS:
        registry.add(phone, company)
    hour = {"CTXCACHE_WARMUP_INTERVAL": "3600"}  # the schedule's first tick is an hour away
    start("worker", **hour)
    beat = start("beat", ready="beat: Starting", **hour)
    wait_until(
        lambda: all(cache.get_cached_full_context(*vip) is not None for vip in VIPS),
        30,
        "the VIPs warmed by beat's start",
    )
    assert "first warm-up queued; then one every 3600 s" in beat.log()
    assert sorted(int(v) for v in cache.client.hgetall(LOADS_KEY).values()) == [1, 1]


def test_warm_queue_passes_the_refresh_threshold_to_the_worker(
    cache: ContextCache, broker: str, start: Callable[..., CeleryProcess]
) -> None:
    VipRegistry(cache).add(PHONE, COMPANY)
    assert cache.set_cached_full_context(PHONE, COMPANY, {"fresh": True})  # 12 h to live
    worker = start("worker")
    env = {"CTXCACHE_BROKER_URL": broker}

    assert run("warm", "--queue", **env).returncode == 0
    wait_until(lambda: "fresh" in worker.log(), 20, "the default threshold's verdict")
    assert cache.get_cached_full_context(PHONE, COMPANY) == {"fresh": True}

    cache.client.delete(cache.keys.warmup_lock)  # let the next run in at once
    assert run("warm", "--queue", "--refresh-threshold", "86400", **env).returncode == 0
    wait_until(lambda: "written" in worker.log(), 20, "the reload a day's threshold asks for")
    assert cache.get_cached_full_context(PHONE, COMPANY) == {
        "phone": PHONE,
        "companyId": COMPANY,
        "load": 1,
    }
