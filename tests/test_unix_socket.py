"""A Redis reachable only on a unix socket serves both the cache and a real Celery worker.

The cache URL is ``unix://``; with no CTXCACHE_BROKER_URL the worker's broker
is derived from it (``redis+socket://``, the same socket, the next database),
and REDIS_PASSWORD reaches both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import COMPANY, PHONE, SpareRedis
from worker_support import LOADS_KEY, REPO, CeleryProcess, wait_until

from ctxcache import ContextCache, VipRegistry
from ctxcache.settings import CacheSettings
from tasks import WARM_ALL_TASK, InvalidationOutcome, booking_created, create_app, runtime

pytestmark = pytest.mark.celery

SECRET = "s3cret-Pa55"
OTHER = "+79007654321"


def test_cache_and_worker_on_a_unix_socket_with_a_password(
    spare_redis_factory: Callable[..., SpareRedis],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server = spare_redis_factory(unix_socket=True, password=SECRET)
    for name in [n for n in os.environ if n.startswith("CTXCACHE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CTXCACHE_REDIS_URL", server.url)
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    settings = CacheSettings.load()
    assert settings.effective_broker_url == (
        f"redis+socket://:{SECRET}@{server.socket_path}?virtual_host=1"
    )
    cache = ContextCache.from_settings(settings)
    runtime.reset()
    runtime.configure(cache=cache)
    app = create_app(broker_url=settings.effective_broker_url)
    worker = CeleryProcess(
        [
            "worker", "-Q", "ctxcache.invalidate,ctxcache.warmup", "-c", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", "unixsocket@%h", "--loglevel", "INFO",
        ],
        {"CTXCACHE_LOADER": "worker_support:load_context"},  # the rest from os.environ
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
        assert cache.get_cached_full_context(PHONE, COMPANY) == {"stale": True}
        worker.start()
        assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
        assert cache.get_cached_full_context(PHONE, COMPANY) is None
        wait_until(lambda: ": in_effect" in worker.log(), 20, "the worker's safety net")
        VipRegistry(cache).add(OTHER, COMPANY)
        app.tasks[WARM_ALL_TASK].delay()
        wait_until(
            lambda: cache.get_cached_full_context(OTHER, COMPANY) is not None, 20, "the warm-up"
        )
    finally:
        worker.stop()
        app.close()
        runtime.reset()
        cache.close()
    admin = server.client()
    assert admin.hgetall(LOADS_KEY) == {f"{COMPANY}:{OTHER}".encode(): b"1"}
    broker_db = server.client(db=1)
    assert broker_db.keys("_kombu.binding.*"), "the broker lives on the next database"
    admin.close()
    broker_db.close()

    # The ctxcache command takes the same URL.
    result = subprocess.run(
        [sys.executable, "-m", "ctxcache.ops.cli", "get", OTHER, str(COMPANY), "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"cached":true' in result.stdout
