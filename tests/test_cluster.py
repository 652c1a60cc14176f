"""The cache on a real Redis Cluster (3 primaries, 3 replicas) and behind real Sentinels.

The Cluster proves what the key layout promises: every Lua script the core
sends touches one hash slot (checked with ``CLUSTER KEYSLOT`` on every key of
every script command of a workload that runs every script), pipelines mix
slots, and the cluster-wide views (stats sizes, doctor, namespaces) read every
primary. Invalidations wait for a replica per slot (``WAIT``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from conftest import COMPANY, PHONE, FakeClock, make_settings
from servers import LocalCluster, LocalSentinel

import ctxcache.client.sync as sync_driver
from ctxcache import ContextCache, VipRegistry
from ctxcache.client.connection import primaries
from ctxcache.core import scripts
from ctxcache.core.scripts import LuaScript
from ctxcache.core.steps import Command
from ctxcache.ops.metrics import cluster_stats
from ctxcache.ops.namespace import delete_namespace, namespace_keys

OTHER_PHONES = [f"+7900123{n:04d}" for n in range(40)]
ALL_SCRIPTS = {name: value for name, value in vars(scripts).items() if isinstance(value, LuaScript)}


class Sections:
    """A sectioned loader: the client's part and the company's sections apart."""

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        return {"phone": phone, "name": "Anna"}

    def load_company_sections(self, company_id: int, sections: Iterable[str]) -> dict[str, Any]:
        return {name: {"company": company_id, "section": name} for name in sections}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Command]:
    """Every command the sync driver queues."""
    seen: list[Command] = []
    original = sync_driver.queue_commands

    def record(pipe: Any, commands: Iterable[Command]) -> Any:
        commands = tuple(commands)
        seen.extend(commands)
        return original(pipe, commands)

    monkeypatch.setattr(sync_driver, "queue_commands", record)
    return seen


def workload(cache: ContextCache, clock: FakeClock) -> None:
    """Every public operation once or more, so that every script of the core runs."""
    loader = Sections()
    assert cache.load_full_context(PHONE, COMPANY, loader) is not None  # leases, store
    assert cache.get_cached_full_context(PHONE, COMPANY) is not None  # read parts
    generation = cache.current_generation(PHONE, COMPANY)
    assert cache.set_cached_full_context(PHONE, COMPANY, {"phone": PHONE}, generation=generation)
    assert cache.update_section(PHONE, COMPANY, "phone", "x")  # the client part
    assert cache.update_company_section(COMPANY, "services", [1, 2])
    assert cache.update_dialog_context(PHONE, COMPANY, {"step": 1})
    assert cache.update_client_preferences(PHONE, COMPANY, {"lang": "ru"})
    assert cache.get_dialog_context(PHONE, COMPANY) == {"step": 1}
    done = cache.apply_booking_invalidation(PHONE, COMPANY)
    assert done is not None
    assert cache.confirm_invalidation(COMPANY, done, phone=PHONE) is not None
    generation_done = cache.apply_invalidation(PHONE, COMPANY)
    assert generation_done is not None
    cache.ensure_invalidated(PHONE, COMPANY, generation_done - 1)  # "behind": reapplied
    assert cache.invalidate_company(COMPANY)
    assert cache.warm_company(COMPANY, loader).value
    assert cache.warm_full_context(PHONE, COMPANY, loader).value
    clock.advance(11 * 3600)  # near expiry: a warm-up with a threshold refreshes it
    cache.warm_full_context(PHONE, COMPANY, loader, refresh_threshold=7200)

    def failing(phone: str, company_id: int) -> dict[str, Any]:
        raise RuntimeError("database down")

    cache.invalidate_cached_context(PHONE, COMPANY)
    with pytest.raises(RuntimeError):
        cache.load_full_context(PHONE, COMPANY, failing)  # releases its lock
    assert cache.clear_dialog_context(PHONE, COMPANY)
    for phone in OTHER_PHONES[:10]:
        cache.set_cached_full_context(phone, COMPANY + 1, {"phone": phone, "services": [1]})
    assert cache.flush_stats()


@pytest.mark.cluster
def test_every_script_touches_one_hash_slot(
    cluster_cache: ContextCache, recorded: list[Command], clock: FakeClock, local_cluster: Any
) -> None:
    workload(cluster_cache, clock)
    admin = local_cluster.admin(local_cluster.primaries()[0])
    sent = [command for command in recorded if command.script is not None]
    assert {command.script.sha for command in sent if command.script} == {
        script.sha for script in ALL_SCRIPTS.values()
    }, "the workload must run every script of ctxcache/core/scripts.py"
    for command in sent:
        slots = {admin.cluster("keyslot", key) for key in command.keys}
        assert len(slots) == 1, f"{command.name} touches slots {sorted(slots)}"
    # Commands without a script name one key each, or are routed (WAIT, ROLE).
    for command in recorded:
        if command.script is None and command.route is None:
            assert command.name in {"GET", "SET", "HMGET", "HGETALL", "HDEL", "DEL", "PING"}
    assert cluster_cache.stats().errors == 0


@pytest.mark.cluster
def test_invalidations_wait_for_a_replica_of_each_slot(
    cluster_cache: ContextCache, recorded: list[Command]
) -> None:
    cluster_cache.set_cached_full_context(PHONE, COMPANY, {"phone": PHONE, "services": [1]})
    recorded.clear()
    assert cluster_cache.apply_booking_invalidation(PHONE, COMPANY) is not None
    waits = [command for command in recorded if command.name == "WAIT"]
    keys = cluster_cache.client_keys(PHONE, COMPANY)
    company = cluster_cache.core.keys.company(COMPANY)
    # The client's slot and the company's: one WAIT 1 on each slot's primary.
    assert sorted(w.route or "" for w in waits) == sorted([keys.full_context, company.generations])
    assert all(w.args[0] == 1 for w in waits)
    assert cluster_cache.stats().unacknowledged == 0


@pytest.mark.cluster
def test_cluster_wide_views_read_every_primary(
    cluster_cache: ContextCache, local_cluster: LocalCluster
) -> None:
    for phone in OTHER_PHONES:
        assert cluster_cache.set_cached_full_context(phone, COMPANY, {"phone": phone})
    shards = primaries(cluster_cache.client)
    assert len(shards) == 3
    per_shard = [len(list(shard.scan_iter(match="full_context:*"))) for shard in shards]
    assert all(count > 0 for count in per_shard), per_shard  # 40 keys spread over 3 primaries
    stats = cluster_stats(cluster_cache)
    assert stats.cached_contexts == len(OTHER_PHONES)
    assert stats.cached_bytes > 0
    assert stats.totals.sets >= len(OTHER_PHONES)
    registry = VipRegistry(cluster_cache)
    for phone in OTHER_PHONES[:5]:
        registry.add(phone, COMPANY)
    assert len(registry.list()) == 5
    assert len(set(namespace_keys(cluster_cache.client, "full_context:"))) >= len(OTHER_PHONES)
    deleted = delete_namespace(cluster_cache.client, "full_context:")
    assert deleted >= len(OTHER_PHONES)
    assert cluster_stats(cluster_cache).cached_contexts == 0


@pytest.mark.cluster
def test_doctor_reads_the_cluster(local_cluster: LocalCluster, cluster_cache: ContextCache) -> None:
    from ctxcache.ops.doctor import run_checks

    for phone in OTHER_PHONES:
        cluster_cache.set_cached_full_context(phone, COMPANY, {"phone": phone})
    checks = run_checks(make_settings(redis_url=local_cluster.url, broker_url="amqp://x"))
    by_name = {check.name: check for check in checks}
    assert by_name["redis version"].ok, by_name["redis version"]
    assert "cluster" in by_name["redis version"].detail
    assert f"{len(OTHER_PHONES)} keys" in by_name["cached contexts"].detail
    assert by_name["cluster slots"].ok, by_name["cluster slots"]


@pytest.mark.sentinel
def test_the_cache_behind_sentinel(
    sentinel_cache: ContextCache, local_sentinel: LocalSentinel, recorded: list[Command]
) -> None:
    assert sentinel_cache.set_cached_full_context(PHONE, COMPANY, {"phone": PHONE})
    assert sentinel_cache.get_cached_full_context(PHONE, COMPANY) == {"phone": PHONE}
    recorded.clear()
    assert sentinel_cache.apply_invalidation(PHONE, COMPANY) is not None
    assert {c.args[0] for c in recorded if c.name == "WAIT"} == {1}  # auto: the replica is there
    replica = next(s for s in local_sentinel.servers if s is not local_sentinel.master())
    key = sentinel_cache.client_keys(PHONE, COMPANY)
    assert replica.client().get(key.generation) is not None  # acknowledged: on the replica too
    assert sentinel_cache.get_cached_full_context(PHONE, COMPANY) is None


def test_without_replicas_auto_waits_for_none(
    real_cache: ContextCache, recorded: list[Command]
) -> None:
    assert real_cache.apply_invalidation(PHONE, COMPANY) is not None
    assert [c.name for c in recorded if c.name in ("WAIT", "ROLE")] == ["ROLE"]
    recorded.clear()
    assert real_cache.apply_invalidation(PHONE, COMPANY) is not None
    assert [c.name for c in recorded if c.name in ("WAIT", "ROLE")] == []  # learnt: no replica


# A cache that needs one replica's acknowledgement, on the test server that has none.
NO_REPLICA_ANSWERS = {"invalidation_replicas": "1", "invalidation_wait_timeout": 0.02}


def test_a_required_replica_that_never_answers_means_not_done(
    cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    cache = cache_factory(**NO_REPLICA_ANSWERS, clock=clock)
    assert cache.set_cached_full_context(PHONE, COMPANY, {"phone": PHONE})
    assert cache.apply_invalidation(PHONE, COMPANY) is None  # WAIT 1 20 -> 0 replicas
    assert cache.stats().unacknowledged == 1
    assert cache.get_cached_full_context(PHONE, COMPANY) is None  # applied, just not safe


def test_an_unacknowledged_safety_net_is_unavailable_so_the_task_retries(
    cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    from ctxcache.core.invalidation import EnsureOutcome

    cache = cache_factory(**NO_REPLICA_ANSWERS, clock=clock)
    # No replica to acknowledge: not done, and the task raises (and retries) on this.
    assert cache.ensure_invalidated(PHONE, COMPANY, None) is EnsureOutcome.UNAVAILABLE


# -- Misconfiguration: an error at start-up naming the variable, or a doctor FAIL ---------


def test_a_cluster_url_at_a_plain_server_fails_at_start_naming_the_variable(
    real_redis_url: str,
) -> None:
    from ctxcache.errors import ConfigurationError

    host_port = real_redis_url.split("//")[1].split("/")[0]
    with pytest.raises(ConfigurationError) as info:
        ContextCache.from_url(f"redis+cluster://{host_port}")
    assert info.value.variable == "CTXCACHE_REDIS_URL"
    assert "without cluster mode" in str(info.value)


@pytest.mark.sentinel
def test_an_unknown_sentinel_master_is_a_doctor_fail_with_the_names(
    local_sentinel: LocalSentinel,
) -> None:
    from ctxcache.ops.doctor import run_checks

    url = local_sentinel.url().replace(local_sentinel.master_name, "no-such-master")
    checks = {c.name: c for c in run_checks(make_settings(redis_url=url), celery=False)}
    reach = checks["redis reachable"]
    assert not reach.ok
    assert "no master named 'no-such-master'" in (reach.fix or "")
    assert local_sentinel.master_name in (reach.fix or "")


def test_uncovered_slots_are_a_doctor_fail_with_the_fix() -> None:
    from ctxcache.ops.doctor.ha import cluster_slots_check

    class Partial:
        def cluster_info(self) -> dict[str, object]:
            return {"cluster_slots_assigned": 10923, "cluster_state": "fail"}

    check = cluster_slots_check(Partial())
    assert not check.ok
    assert "10,923 of 16,384" in check.detail
    assert "redis-cli --cluster fix" in (check.fix or "")


@pytest.mark.cluster
def test_a_broker_on_a_cluster_node_is_a_doctor_fail(local_cluster: LocalCluster) -> None:
    from ctxcache.ops.doctor.broker import BrokerDoctor

    node = f"redis://127.0.0.1:{local_cluster.nodes[0].port}/0"
    check = BrokerDoctor(make_settings(broker_url=node), 2.0, None).broker_eviction(node)
    assert check.name == "broker type"
    assert not check.ok
    assert "Celery does not support Redis Cluster" in check.detail
    assert "sentinel://" in (check.fix or "")
