"""Fleet metrics: batched flushes to one Redis hash, cluster_stats, Prometheus, Grafana."""

from __future__ import annotations

import json
import math
import re
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from conftest import COMPANY, PHONE, FakeClock, SpareRedis, free_port
from prometheus_client.parser import text_string_to_metric_families

from ctxcache import CacheStats, ContextCache, WarmOutcome
from ctxcache.core.stats import LOAD_BUCKETS, StatsRecorder, bucket_field
from ctxcache.core.steps import RoundTrip
from ctxcache.ops.metrics import StatsCollector, cluster_stats, serve_metrics
from tasks import runtime

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
OTHER = "+79001112233"
THIRD = "+79004445566"
Factory = Callable[..., ContextCache]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def timed_loader(clock: FakeClock, seconds: float) -> Callable[[str, int], dict[str, Any]]:
    """A loader that takes ``seconds`` of the fake clock."""

    def load(phone: str, company_id: int) -> dict[str, Any]:
        clock.advance(seconds)
        return {"client": {"phone": phone}, "services": list(range(50))}

    return load


def stats_hash(client: redis.Redis, cache: ContextCache) -> dict[str, float]:
    raw = client.hgetall(cache.keys.stats)
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def minus(after: CacheStats, before: CacheStats) -> dict[str, float]:
    """The non-zero counter differences, as the flush writes them to the hash."""
    diff = {f.name: getattr(after, f.name) - getattr(before, f.name) for f in fields(CacheStats)}
    return {name: value for name, value in diff.items() if value}


def counters(data: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in data.items() if not name.startswith("load_le:")}


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def spare_cache(spare_redis: SpareRedis, cache_factory: Factory, clock: FakeClock) -> ContextCache:
    return cache_factory(redis_url=spare_redis.url, clock=clock)


# -- the recorder alone -----------------------------------------------------------------


def test_histogram_is_cumulative_and_counts_each_load_once() -> None:
    recorder = StatsRecorder()
    for seconds in (0.001, 0.005, 0.0051, 0.3, 7.0, 100.0):
        recorder.record_load(seconds)
    buckets = recorder.load_buckets()
    assert list(buckets) == list(LOAD_BUCKETS)
    assert buckets[0.005] == 2  # le is inclusive
    assert buckets[0.01] == 3
    assert buckets[0.5] == 4
    assert buckets[10.0] == 5
    assert buckets[math.inf] == 6 == recorder.snapshot().loads
    counts = list(buckets.values())
    assert counts == sorted(counts)
    deltas = recorder.take()
    assert deltas is not None
    assert sum(v for k, v in deltas.items() if k.startswith("load_le:")) == 6
    assert deltas[bucket_field(math.inf)] == 1
    assert deltas["loads"] == 6
    assert deltas["load_seconds"] == pytest.approx(107.3111)
    assert recorder.take() is None  # taken once


def test_concurrent_counts_and_takes_lose_nothing() -> None:
    pushed: list[dict[str, float]] = []
    lock = threading.Lock()
    attempts = 0
    recorder = StatsRecorder(interval=0)

    def push_now() -> None:
        nonlocal attempts
        deltas = recorder.take_due()
        if deltas is None:
            return
        with lock:
            attempts += 1
            failed = attempts % 3 == 0
            if not failed:
                pushed.append(deltas)
        if failed:
            recorder.restore(deltas)  # a failed push: its counts must come back

    def work() -> None:
        for i in range(2000):
            recorder.add("hits")
            if i % 100 == 0:
                push_now()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flushed = sum(d.get("hits", 0) for d in pushed)
    assert flushed + recorder.pending().get("hits", 0) == 8000 == recorder.snapshot().hits


def test_counts_are_due_once_per_interval(clock: FakeClock) -> None:
    recorder = StatsRecorder(clock=clock, interval=10)
    recorder.add("misses", 2)
    assert recorder.take_due() is None
    clock.advance(10)
    assert recorder.take_due() == {"misses": 2}
    recorder.add("misses")
    assert recorder.take_due() is None  # the interval counts from the last take
    clock.advance(10)
    assert recorder.take_due() == {"misses": 1}


# -- flushing from the cache ------------------------------------------------------------


def test_no_flush_before_the_interval_then_it_rides_along(
    spare_redis: SpareRedis, spare_cache: ContextCache, clock: FakeClock
) -> None:
    probe = redis.Redis.from_url(spare_redis.url)
    spare_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    spare_cache.get_cached_full_context(OTHER, COMPANY)
    spare_cache.flush_stats()  # a new server learns the scripts once (NOSCRIPT, then EVAL)
    pushed = stats_hash(probe, spare_cache)  # the interval counts from that push
    trips = count_round_trips(spare_cache)
    for _ in range(20):
        spare_cache.get_cached_full_context(PHONE, COMPANY)
        spare_cache.get_cached_full_context(OTHER, COMPANY)
    clock.advance(9.9)
    spare_cache.get_cached_full_context(PHONE, COMPANY)
    assert len(trips) == 41  # one each
    assert stats_hash(probe, spare_cache) == pushed  # nothing pushed before the interval

    clock.advance(0.1)
    before = spare_cache.stats()
    spare_cache.get_cached_full_context(PHONE, COMPANY)  # carries the counts
    assert len(trips) == 42  # in the same round trip
    assert trips[-1] == ["EVALSHA", "EVALSHA"]  # the read (one script), then PUSH_STATS
    assert counters(stats_hash(probe, spare_cache)) == minus(before, CacheStats())

    clock.advance(9.9)
    spare_cache.get_cached_full_context(PHONE, COMPANY)
    assert len(trips[-1]) == 1  # the interval counts from the last push
    assert spare_cache.flush_stats() is True
    assert counters(stats_hash(probe, spare_cache)) == minus(spare_cache.stats(), CacheStats())
    probe.close()


def count_round_trips(cache: ContextCache) -> list[list[str]]:
    """Record the commands of each round trip the cache sends."""
    trips: list[list[str]] = []
    answer = cache._answer

    def counted(step: Any) -> Any:
        if isinstance(step, RoundTrip):
            trips.append(["EVALSHA" if c.script else c.name for c in step.commands])
        return answer(step)

    cache._answer = counted  # type: ignore[method-assign]
    return trips


def test_a_flush_while_redis_is_down_keeps_the_counts_for_later(
    spare_redis: SpareRedis, spare_cache: ContextCache, clock: FakeClock
) -> None:
    spare_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    spare_cache.get_cached_full_context(PHONE, COMPANY)
    assert spare_cache.flush_stats() is True
    flushed = spare_cache.stats()

    spare_redis.stop()
    for _ in range(4):
        assert spare_cache.get_cached_full_context(PHONE, COMPANY) is None
    clock.advance(10)
    assert spare_cache.get_cached_full_context(PHONE, COMPANY) is None  # its flush fails quietly
    assert spare_cache.flush_stats() is False
    assert spare_cache.stats().misses == 5

    spare_redis.start()  # an empty server on the same port
    clock.advance(spare_cache.breaker.cooldown)
    assert spare_cache.flush_stats() is True
    probe = redis.Redis.from_url(spare_redis.url)
    arrived = counters(stats_hash(probe, spare_cache))
    assert arrived == minus(spare_cache.stats(), flushed)
    assert arrived["misses"] == 5
    # Three failures open the breaker and the fourth read is skipped: counted apart.
    # The trial after the cool-down fails too (the flush goes around the breaker).
    assert (arrived["errors"], arrived["skipped"]) == (4, 1)
    assert "hits" not in arrived  # sent before the outage, not twice
    probe.close()


def test_close_flushes(cache_factory: Factory, real_client: redis.Redis) -> None:
    cache = cache_factory()
    cache.get_cached_full_context(PHONE, COMPANY)
    cache.close()
    assert real_client.hget(cache.keys.stats, "misses") == b"1"


# -- cluster_stats ----------------------------------------------------------------------


def test_cluster_stats_sums_two_workers(cache_factory: Factory, real_client: redis.Redis) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    worker_a = cache_factory(clock=clock_a)
    worker_b = cache_factory(clock=clock_b)
    assert worker_a.client.connection_pool is not worker_b.client.connection_pool

    worker_a.load_full_context(PHONE, COMPANY, timed_loader(clock_a, 0.003))
    worker_a.get_cached_full_context(PHONE, COMPANY)
    worker_b.load_full_context(OTHER, COMPANY, timed_loader(clock_b, 0.3))
    worker_b.get_cached_full_context(PHONE, COMPANY)
    worker_b.get_cached_full_context(THIRD, COMPANY)
    worker_b.invalidate_cached_context(THIRD, COMPANY)

    unflushed = cluster_stats(worker_a, flush=False)
    assert unflushed.totals == CacheStats()
    assert unflushed.cached_contexts == 2

    clock_a.advance(10)
    before_a = worker_a.stats()
    worker_a.get_cached_full_context(PHONE, COMPANY)  # flushes worker A on the way
    result = cluster_stats(worker_b)  # flushes worker B first
    totals = result.totals
    expected = {
        f.name: getattr(before_a, f.name) + getattr(worker_b.stats(), f.name)
        for f in fields(CacheStats)
    }
    assert {f.name: getattr(totals, f.name) for f in fields(CacheStats)} == pytest.approx(expected)
    # Two client parts and the company's one section, written once for both.
    assert (totals.hits, totals.misses, totals.loads, totals.sets) == (2, 3, 2, 3)
    assert totals.invalidations == 1
    assert totals.load_seconds == pytest.approx(0.303)
    assert totals.hit_rate == pytest.approx(0.4)

    assert list(result.load_buckets) == list(LOAD_BUCKETS)
    assert result.load_buckets[0.005] == 1
    assert result.load_buckets[0.25] == 1
    assert result.load_buckets[0.5] == 2
    assert result.load_buckets[math.inf] == totals.loads == 2

    keys = [worker_a.client_keys(p, COMPANY).full_context for p in (PHONE, OTHER)]
    assert result.cached_contexts == 2
    assert result.cached_bytes == sum(int(real_client.memory_usage(k) or 0) for k in keys)
    assert result.cached_bytes > 0

    data = orjson.loads(orjson.dumps(result.as_dict()))
    assert data["hits"] == 2
    assert data["load_buckets"]["+Inf"] == 2
    assert data["cached_contexts"] == 2


def test_cluster_stats_ignores_other_keys_and_caps_the_scan(
    real_cache: ContextCache, real_client: redis.Redis
) -> None:
    phones = [f"+7900123450{i}" for i in range(8)]
    for phone in phones:
        real_cache.set_cached_full_context(phone, COMPANY, {"a": 1})
        real_cache.update_dialog_context(phone, COMPANY, {"step": 1})  # not a full context
        real_cache.set_cached_full_context(phone, COMPANY, {"a": 1})
    real_client.set("unrelated", b"x" * 1000)
    assert cluster_stats(real_cache).cached_contexts == 8
    assert cluster_stats(real_cache, scan_limit=3).cached_contexts <= 3
    with pytest.raises(ValueError, match="scan_limit"):
        cluster_stats(real_cache, scan_limit=0)


def test_cluster_stats_works_where_memory_usage_does_not(fake_cache: ContextCache) -> None:
    fake_cache.set_cached_full_context(PHONE, COMPANY, {"a": "x" * 100})
    result = cluster_stats(fake_cache)  # fakeredis has no MEMORY: STRLEN instead
    assert result.cached_contexts == 1
    assert result.cached_bytes == fake_cache.client.strlen(f"full_context:{COMPANY}:{PHONE}")
    assert result.totals.sets == 1


# -- Prometheus -------------------------------------------------------------------------


def test_endpoint_shows_the_whole_fleet(cache_factory: Factory) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    worker_a = cache_factory(clock=clock_a)
    worker_b = cache_factory(clock=clock_b)
    worker_a.load_full_context(PHONE, COMPANY, timed_loader(clock_a, 0.02))
    worker_a.get_cached_full_context(PHONE, COMPANY)
    assert worker_a.warm_full_context(OTHER, COMPANY, timed_loader(clock_a, 1.5), 60) is (
        WarmOutcome.WRITTEN
    )
    assert worker_b.warm_full_context(OTHER, COMPANY, timed_loader(clock_b, 1), 60) is (
        WarmOutcome.FRESH
    )
    worker_b.get_cached_full_context(THIRD, COMPANY)
    worker_b.client.set(f"full_context:{COMPANY}:{THIRD}", b"garbage")
    worker_b.get_cached_full_context(THIRD, COMPANY)
    worker_b.invalidate_cached_context(PHONE, COMPANY)
    assert worker_b.flush_stats()
    # Nothing from worker A is flushed yet: the scrape flushes the serving process.

    port = free_port()
    server = serve_metrics(worker_a, port)
    try:
        content_type, samples = scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    assert content_type.startswith("text/plain")
    expected = cluster_stats(worker_a, flush=False)
    totals = expected.totals
    assert (totals.hits, totals.misses, totals.corrupt, totals.loads) == (1, 3, 1, 2)

    assert value(samples, "ctxcache_redis_up") == 1
    assert value(samples, "ctxcache_hits_total") == totals.hits
    assert value(samples, "ctxcache_misses_total") == totals.misses
    assert value(samples, "ctxcache_errors_total") == totals.errors == 0
    assert value(samples, "ctxcache_skipped_total") == totals.skipped == 0
    assert value(samples, "ctxcache_corrupt_values_total") == 1
    assert value(samples, "ctxcache_loads_total") == 2
    assert value(samples, "ctxcache_sets_total") == totals.sets == 3  # a shared section
    assert value(samples, "ctxcache_superseded_total") == 0
    assert value(samples, "ctxcache_invalidations_total") == 1
    assert value(samples, "ctxcache_coalesced_total") == 0
    assert value(samples, "ctxcache_stale_hits_total") == totals.stale_hits == 0
    assert value(samples, "ctxcache_early_refreshes_total") == totals.early_refreshes
    for outcome in WarmOutcome:
        expected_warmups = {"written": 1, "fresh": 1}.get(outcome.value, 0)
        assert value(samples, "ctxcache_warmups_total", outcome=outcome.value) == expected_warmups
    assert value(samples, "ctxcache_hit_ratio") == pytest.approx(0.25)
    assert value(samples, "ctxcache_cached_contexts") == expected.cached_contexts == 1  # OTHER
    assert value(samples, "ctxcache_cached_bytes", scope="client") == expected.cached_bytes > 0

    buckets = {
        float(dict(labels)["le"]): count
        for (name, labels), count in samples.items()
        if name == "ctxcache_load_seconds_bucket"
    }
    assert buckets == {b: float(n) for b, n in expected.load_buckets.items()}
    assert buckets[0.01] == 0
    assert buckets[0.025] == 1
    assert buckets[2.5] == 2 == buckets[math.inf]
    counts = [buckets[b] for b in sorted(buckets)]
    assert counts == sorted(counts)
    assert value(samples, "ctxcache_load_seconds_count") == 2
    assert value(samples, "ctxcache_load_seconds_sum") == pytest.approx(1.52)


def test_endpoint_when_redis_is_down_exports_no_counters(
    spare_redis: SpareRedis, spare_cache: ContextCache
) -> None:
    port = free_port()
    server = serve_metrics(spare_cache, port)
    try:
        spare_redis.stop()
        _, samples = scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    assert value(samples, "ctxcache_redis_up") == 0
    assert ("ctxcache_hits_total", frozenset()) not in samples  # no false counter reset


def test_worker_serves_metrics_when_the_port_is_set(
    real_cache: ContextCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("CTXCACHE_METRICS_PORT", str(port))
    runtime.reset()
    runtime.configure(cache=real_cache)
    try:
        runtime._start_metrics()
        server = runtime._state["metrics_server"]
        try:
            _, samples = scrape(port)
        finally:
            server.shutdown()
        assert value(samples, "ctxcache_redis_up") == 1
        assert server.server_address[0] == "127.0.0.1"
        monkeypatch.setitem(runtime._owner, "pid", -1)  # as if this were a forked child
        runtime._after_fork()  # a prefork child lets go of the listener
        assert server.socket.fileno() == -1
        assert "metrics_server" not in runtime._state
    finally:
        runtime.reset()


def test_worker_without_a_port_serves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXCACHE_METRICS_PORT", raising=False)
    runtime.reset()
    try:
        runtime._start_metrics()
        assert "metrics_server" not in runtime._state
    finally:
        runtime.reset()


# -- Grafana ----------------------------------------------------------------------------


def test_dashboard_is_valid_and_uses_only_exported_metrics(fake_cache: ContextCache) -> None:
    fake_cache.load_full_context(PHONE, COMPANY, lambda p, c: {"a": 1})
    exported = {
        sample.name for family in StatsCollector(fake_cache).collect() for sample in family.samples
    }
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bctxcache_[a-z0-9_]+\b", target["expr"]))
            assert names, target["expr"]
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("hit rate", "miss rate", "load time", "cache size", "invalidations", "warm-up"):
        assert word in titles
    assert {
        "ctxcache_hits_total",
        "ctxcache_misses_total",
        "ctxcache_load_seconds_sum",
        "ctxcache_load_seconds_count",
        "ctxcache_load_seconds_bucket",
        "ctxcache_cached_contexts",
        "ctxcache_cached_bytes",
        "ctxcache_invalidations_total",
        "ctxcache_warmups_total",
        "ctxcache_errors_total",
        "ctxcache_corrupt_values_total",
        "ctxcache_l1_hits_total",
        "ctxcache_l1_bytes",
        "ctxcache_stale_hits_total",
        "ctxcache_early_refreshes_total",
    } <= used


def test_stats_and_the_endpoint_count_by_scope(cache_factory: Factory) -> None:
    cache = cache_factory()
    context = {"client": {"name": "Anna"}, "services": list(range(300)), "staff": [1, 2]}
    cache.set_cached_full_context(PHONE, COMPANY, context)
    cache.set_cached_full_context(OTHER, COMPANY, context)
    cache.get_cached_full_context(PHONE, COMPANY)
    cache.invalidate_company(COMPANY, ["staff"])
    cache.get_cached_full_context(OTHER, COMPANY)  # its client part, one section found
    result = cluster_stats(cache)
    assert (result.cached_contexts, result.cached_sections) == (2, 1)
    assert result.section_bytes > result.cached_bytes / 2 > 0  # services is the bulk
    assert result.total_bytes == result.cached_bytes + result.section_bytes
    totals = result.totals
    assert (totals.client_hits, totals.client_misses) == (2, 0)
    assert (totals.company_hits, totals.company_misses) == (3, 1)
    server = serve_metrics(cache, 0)
    try:
        _, samples = scrape(server.server_port)
    finally:
        server.shutdown()
    assert value(samples, "ctxcache_part_hits_total", scope="company") == 3
    assert value(samples, "ctxcache_part_misses_total", scope="company") == 1
    assert value(samples, "ctxcache_cached_sections") == 1
    assert value(samples, "ctxcache_cached_bytes", scope="company") == result.section_bytes


def test_the_endpoint_shows_the_in_process_caches_and_close_takes_its_bytes_out(
    cache_factory: Factory,
) -> None:
    context = {"client": {"name": "Anna"}, "services": list(range(300)), "staff": [1, 2]}
    reader = cache_factory(l1_max_bytes=9_500, stats_flush_interval=3600)
    reader.set_cached_full_context(PHONE, COMPANY, context)
    reader.get_cached_full_context(PHONE, COMPANY)  # every part fetched into L1
    reader.get_cached_full_context(PHONE, COMPANY)  # every part from L1
    bigger = {**context, "services": list(range(2000))}  # ~9 KB: fits, but not beside them
    reader.set_cached_full_context(OTHER, COMPANY + 1, bigger)
    reader.get_cached_full_context(OTHER, COMPANY + 1)  # over 9,500 bytes: evicts
    local = reader.stats()
    assert (local.l1_hits, local.l1_misses) == (3, 6)
    assert local.l1_evictions >= 1
    assert 0 < local.l1_bytes == reader.core.l1.size <= 9_500
    assert reader.flush_stats()
    server = serve_metrics(reader, 0)
    try:
        _, samples = scrape(server.server_port)
    finally:
        server.shutdown()
    for name in ("hits", "misses", "evictions"):
        assert value(samples, f"ctxcache_l1_{name}_total") == getattr(local, f"l1_{name}")
    assert value(samples, "ctxcache_l1_bytes") == local.l1_bytes
    reader.close()  # empties its L1 and pushes that: the fleet holds no bytes of it
    assert cluster_stats(cache_factory()).totals.l1_bytes == 0
