"""doctor's broker checks: persistence, a server shared with the cache, recovery time."""

from __future__ import annotations

import redis
from conftest import TEST_REDIS_URL, SpareRedis, free_port, make_settings

from ctxcache.ops.doctor import run_checks
from ctxcache.ops.doctor.persistence import (
    BROKER_CHECK_NAMES,
    broker_checks,
    persistence_check,
    recovery_check,
)


def by_name(url: str, cache_run_id: str | None, **settings: object) -> dict[str, tuple[str, str]]:
    checks = broker_checks(make_settings(**settings), url, cache_run_id, 1.0)
    return {check.name: (check.status, check.detail) for check in checks}


def test_persistence_is_judged_from_info() -> None:
    always = persistence_check({"aof_enabled": 1, "appendfsync": "always"})
    assert always.status == "PASS"
    everysec = persistence_check({"aof_enabled": 1, "appendfsync": "everysec"})
    assert everysec.status == "WARN"
    assert "last second" in everysec.detail
    snapshots = persistence_check({"aof_enabled": 0, "save": "3600 1 300 100"})
    assert snapshots.status == "WARN"
    assert "since the last" in snapshots.detail
    nothing = persistence_check({"aof_enabled": 0, "save": ""})
    assert nothing.status == "WARN"
    assert "vanish" in nothing.detail
    assert "appendfsync always" in (nothing.fix or "")


def test_a_broker_without_persistence_on_its_own_server(spare_redis: SpareRedis) -> None:
    checks = by_name(spare_redis.url, cache_run_id="the cache's")
    assert checks["broker persistence"][0] == "WARN"
    assert "no persistence" in checks["broker persistence"][1]
    assert checks["broker server"] == ("PASS", "a Redis server of its own, not the cache's")
    assert checks["invalidation recovery"][0] == "PASS"
    assert "~33 s" in checks["invalidation recovery"][1]  # 30 s timeout + a 3 s sweep


def test_a_persistent_broker_passes(persistent_redis: SpareRedis) -> None:
    checks = by_name(persistent_redis.url, cache_run_id=None)
    assert checks["broker persistence"][0] == "PASS"
    assert checks["broker server"][0] == "PASS"  # another port than the cache's


def test_the_default_layout_is_told_what_a_redis_outage_does(real_redis_url: str) -> None:
    client = redis.Redis.from_url(real_redis_url)
    run_id = str(client.info("server")["run_id"])
    client.close()
    neighbour = TEST_REDIS_URL.rsplit("/", 1)[0] + "/14"  # only INFO is read there
    status, detail = by_name(neighbour, run_id)["broker server"]
    assert status == "WARN"
    assert "InvalidationFailedError" in detail
    # Without run ids (INFO refused) the addresses decide.
    status, _ = by_name(neighbour, None, redis_url=real_redis_url)["broker server"]
    assert status == "WARN"


def test_slow_recovery_is_a_warning() -> None:
    slow = recovery_check(make_settings(invalidate_visibility_timeout=600), redis_broker=True)
    assert slow.status == "WARN"
    assert "CTXCACHE_INVALIDATE_VISIBILITY_TIMEOUT" in (slow.fix or "")
    assert "3610 s from workers that also consume warm-ups" in slow.detail
    rabbit = recovery_check(make_settings(), redis_broker=False)
    assert rabbit.status == "PASS"


def test_rabbitmq_needs_no_connection_for_these() -> None:
    checks = by_name(f"amqp://guest:guest@127.0.0.1:{free_port()}//", None)
    assert [status for status, _ in checks.values()] == ["PASS", "PASS", "PASS"]


def test_an_unreachable_broker_skips_them(real_redis_url: str) -> None:
    settings = make_settings(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    checks = {check.name: check for check in run_checks(settings, timeout=0.5)}
    for name in BROKER_CHECK_NAMES:
        assert checks[name].status == "SKIP"
