"""ACL users (CTXCACHE_REDIS_USERNAME) with the README's rules, on a private redis-server.

The users are created with ACL SETUSER on a server this test starts (never on
the shared one); the cache's contract runs under the worker, reads under the
reader, and doctor under both says what it could not check instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import COMPANY, PHONE
from security_support import private_redis

from ctxcache import CacheSettings, ContextCache, VipRegistry
from ctxcache.ops.acl import reader_rules, worker_rules
from ctxcache.ops.doctor import run_checks
from ctxcache.ops.doctor.persistence import broker_checks
from ctxcache.ops.metrics import cluster_stats

ADMIN = "admin-password-7f3a"
WORKER_PASSWORD = "worker-password-91c2"
READER_PASSWORD = "reader-password-44de"
OTHER = "+79007654321"
CONTEXT: dict[str, Any] = {
    "client": {"name": "Anna"},
    "company": {"name": "Salon"},
    "services": [{"id": 1}],
    "staffSchedules": {"1": ["10:00"]},
}


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory: Path = tmp_path_factory.mktemp("acl")
    args = ["--port", "{port}", "--requirepass", ADMIN]

    def ready(port: int) -> None:
        redis.Redis(port=port, password=ADMIN, socket_timeout=1).ping()

    with private_redis(directory, args, ready) as port:
        admin = redis.Redis(port=port, password=ADMIN)
        admin.execute_command(
            "ACL", "SETUSER", "ctxcache-worker", "on", f">{WORKER_PASSWORD}", *worker_rules()
        )
        admin.execute_command(
            "ACL", "SETUSER", "ctxcache-reader", "on", f">{READER_PASSWORD}", *reader_rules()
        )
        admin.close()
        yield port


def settings_for(port: int, user: str, password: str, **extra: Any) -> CacheSettings:
    return CacheSettings.load(
        redis_url=f"redis://127.0.0.1:{port}/1",
        redis_username=user,
        redis_password=password,
        **extra,
    )


@pytest.fixture
def admin(acl_server: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=acl_server, password=ADMIN, db=1)
    client.flushdb()
    yield client
    client.close()


def test_the_worker_runs_the_cache_contract(acl_server: int, admin: redis.Redis) -> None:
    settings = settings_for(
        acl_server, "ctxcache-worker", WORKER_PASSWORD, stats_flush_interval=0.001
    )
    # The derived broker logs in as the same user (give it a user of its own in production).
    assert settings.effective_broker_url.startswith(f"redis://ctxcache-worker:{WORKER_PASSWORD}@")
    with ContextCache.from_settings(settings) as cache:
        assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
        assert cache.get_cached_full_context(PHONE, COMPANY) == CONTEXT
        assert cache.load_full_context(OTHER, COMPANY, lambda p, c: CONTEXT) == CONTEXT
        admin.script_flush()  # the next scripts go as EVAL with their source
        assert cache.invalidate_cached_context(OTHER, COMPANY)
        assert cache.load_full_context(OTHER, COMPANY, lambda p, c: CONTEXT) == CONTEXT
        generation = cache.current_generation(PHONE, COMPANY)
        assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT, generation=generation)
        assert cache.update_section(PHONE, COMPANY, "client", {"name": "Anna K."})
        assert cache.update_company_section(COMPANY, "services", [{"id": 2}])
        assert cache.apply_booking_invalidation(PHONE, COMPANY) is not None
        assert cache.invalidate_company(COMPANY)
        assert cache.update_dialog_context(PHONE, COMPANY, {"step": 1})
        assert cache.get_dialog_context(PHONE, COMPANY) == {"step": 1}
        assert cache.update_client_preferences(PHONE, COMPANY, {"master": "Olga"})
        assert cache.clear_dialog_context(PHONE, COMPANY)
        registry = VipRegistry(cache)
        assert registry.add(PHONE, COMPANY)
        assert registry.list(COMPANY) == [(PHONE, COMPANY)]
        assert cache.warm_full_context(PHONE, COMPANY, lambda p, c: CONTEXT).value
        assert cache.client.set(cache.keys.warmup_lock, "token", nx=True, px=1000)
        assert cache.flush_stats()
        sizes = cluster_stats(cache)
        assert sizes.cached_contexts >= 1
        assert sizes.cached_bytes > 0
        assert cache.stats().errors == 0
        assert registry.remove(PHONE, COMPANY)


def test_the_reader_reads_and_writes_nothing_but_its_counters(
    acl_server: int, admin: redis.Redis
) -> None:
    worker = settings_for(acl_server, "ctxcache-worker", WORKER_PASSWORD)
    with ContextCache.from_settings(worker) as cache:
        assert cache.update_client_preferences(PHONE, COMPANY, {"master": "Olga"})
        assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
        assert VipRegistry(cache).add(PHONE, COMPANY)
    reader = settings_for(acl_server, "ctxcache-reader", READER_PASSWORD)
    with ContextCache.from_settings(reader) as cache:
        assert cache.get_cached_full_context(PHONE, COMPANY) == CONTEXT
        assert cache.get_client_preferences(PHONE, COMPANY) == {"master": "Olga"}
        assert cache.describe_cached_context(PHONE, COMPANY).context == CONTEXT
        assert VipRegistry(cache).list() == [(PHONE, COMPANY)]
        assert cache.flush_stats()  # its own counters, through the selector
        assert int(admin.hget(cache.keys.stats, "hits") or 0) >= 1
        assert not cache.set_cached_full_context(OTHER, COMPANY, CONTEXT)
        assert not cache.invalidate_cached_context(PHONE, COMPANY)
        assert not cache.update_dialog_context(PHONE, COMPANY, {"x": 1})
        with pytest.raises(redis.exceptions.NoPermissionError):
            VipRegistry(cache).add(OTHER, COMPANY)
        with pytest.raises(redis.ResponseError, match="can't run this command"):
            cache.client.execute_command(
                "EVAL", "return redis.call('DEL', KEYS[1])", 1, "ctxcache:vip"
            )
    assert admin.exists(VipRegistry(ContextCache(admin, reader)).key)
    assert cache.stats().errors >= 3


@pytest.mark.parametrize(
    ("user", "password"),
    [("ctxcache-worker", WORKER_PASSWORD), ("ctxcache-reader", READER_PASSWORD)],
)
def test_doctor_under_a_restricted_user_warns_what_it_could_not_check(
    acl_server: int, admin: redis.Redis, user: str, password: str
) -> None:
    settings = settings_for(acl_server, user, password)
    checks = {c.name: c for c in run_checks(settings, celery=False)}
    assert checks["redis auth"].ok
    assert checks["redis version"].status == "WARN"
    assert "INFO refused" in checks["redis version"].detail
    assert checks["maxmemory"].status == "WARN"
    assert checks["eviction policy"].status == "WARN"
    if user == "ctxcache-worker":
        assert checks["cache round trip"].ok, checks["cache round trip"].detail
    else:
        assert not checks["cache round trip"].ok  # the reader may not write: said, not raised
    # The broker's persistence check needs CONFIG GET: with INFO alone it says so.
    admin.execute_command(
        "ACL", "SETUSER", "info-only", "on", ">info-only-pw", "+@all", "-config", "~*"
    )
    url = f"redis://info-only:info-only-pw@127.0.0.1:{acl_server}/2"
    persistence = broker_checks(settings, url, None, 2.0)[0]
    assert persistence.status == "WARN"
    assert "CONFIG GET refused" in persistence.detail


def test_the_readme_lists_these_rules() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for rules in (worker_rules(), reader_rules()):
        line = " ".join(rules)
        assert re.sub(r"\s+", " ", line) in re.sub(r"\s+", " ", readme)
