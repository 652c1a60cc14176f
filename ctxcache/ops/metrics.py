"""The fleet's cache metrics: read from Redis, exposed to Prometheus.

Every process that uses a :class:`~ctxcache.ContextCache` adds its counts to
one Redis hash (see :mod:`ctxcache.core.stats`), so any process can report the
whole fleet: :func:`cluster_stats` reads the hash and sizes the cached
contexts, and :func:`serve_metrics` serves the same numbers to Prometheus,
read at scrape time. Every endpoint shows the same fleet-wide totals: scrape
one, or aggregate with ``max`` rather than ``sum``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis import exceptions as redis_errors

from ctxcache import ContextCache, WarmOutcome
from ctxcache.client.connection import primaries
from ctxcache.core.stats import (
    COUNTER_NAMES,
    FLOAT_FIELDS,
    HOOK_OUTCOMES,
    LOAD_BUCKETS,
    SAFETY_NET_OUTCOMES,
    CacheStats,
    bound_label,
    parse_bucket_field,
)
from ctxcache.errors import CacheUnavailableError

__all__ = ["ClusterStats", "StatsCollector", "cluster_stats", "serve_metrics"]

logger = logging.getLogger("ctxcache")


_SCAN_COUNT: Final = 1000

# Counter name (without _total) -> (CacheStats field, help text).
COUNTERS: Final[Mapping[str, tuple[str, str]]] = {
    "ctxcache_hits": ("hits", "Lookups answered from the cache."),
    "ctxcache_stale_hits": (
        "stale_hits",
        "Of the hits: served past the TTL, in the stale grace, while a refresh runs.",
    ),
    "ctxcache_early_refreshes": (
        "early_refreshes",
        "Background refreshes started: XFetch's, and those of parts served stale.",
    ),
    "ctxcache_misses": ("misses", "Lookups that found nothing usable (incl. errors, corrupt)."),
    "ctxcache_errors": ("errors", "Redis errors and timeouts."),
    "ctxcache_skipped": ("skipped", "Calls not made: the circuit breaker was open."),
    "ctxcache_corrupt_values": ("corrupt", "Cached values that could not be decoded."),
    "ctxcache_loads": ("loads", "Calls of the context loader (the database)."),
    "ctxcache_sets": ("sets", "Parts written: clients' parts and company sections."),
    "ctxcache_superseded": ("superseded", "Writes dropped: invalidated while loading."),
    "ctxcache_invalidations": ("invalidations", "Parts invalidated (and record updates)."),
    "ctxcache_invalidations_unacknowledged": (
        "unacknowledged",
        "Invalidations no replica acknowledged in time (WAIT): not reported done, retried.",
    ),
    "ctxcache_updates": ("updates", "Partial updates of one section."),
    "ctxcache_coalesced": ("coalesced", "Misses served by another caller's load."),
    "ctxcache_uncacheable": ("uncacheable", "Loaded contexts JSON cannot hold: not cached."),
    "ctxcache_corrupt_fields": ("corrupt_fields", "Record fields that could not be decoded."),
    "ctxcache_undecryptable": (
        "undecryptable",
        "Values and fields that failed to decrypt or were plain while encryption is required.",
    ),
    "ctxcache_l1_hits": ("l1_hits", "Parts served from a process's in-process cache (L1)."),
    "ctxcache_l1_misses": ("l1_misses", "Parts fetched and decoded into the in-process cache."),
    "ctxcache_l1_evictions": ("l1_evictions", "Parts pushed out of L1 by its byte bound."),
    "ctxcache_hook_applied_later": (
        "hook_applied_later",
        "Invalidations Redis refused in a booking hook, applied later by the hook's process.",
    ),
}
SCOPES: Final = ("client", "company")


@dataclass(frozen=True)
class ClusterStats:
    """The fleet's counters and the size of the cache, as :func:`cluster_stats` read them."""

    totals: CacheStats  # summed over every process that flushed
    load_buckets: dict[float, int]  # cumulative load counts by upper bound (math.inf last)
    cached_contexts: int  # clients' parts found (at most scan_limit)
    cached_bytes: int  # their MEMORY USAGE
    cached_sections: int = 0  # company sections found (at most scan_limit)
    section_bytes: int = 0  # their MEMORY USAGE

    @property
    def total_bytes(self) -> int:
        """Both scopes: the spec's "Cache Size"."""
        return self.cached_bytes + self.section_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the totals' fields flat, buckets keyed ``"0.005"`` ... ``"+Inf"``."""
        data: dict[str, Any] = dict(self.totals.as_dict())
        data["load_buckets"] = {bound_label(b): n for b, n in self.load_buckets.items()}
        data["cached_contexts"] = self.cached_contexts
        data["cached_bytes"] = self.cached_bytes
        data["cached_sections"] = self.cached_sections
        data["section_bytes"] = self.section_bytes
        data["total_bytes"] = self.total_bytes
        return data


def cluster_stats(
    cache: ContextCache, *, flush: bool = True, scan_limit: int = 100_000
) -> ClusterStats:
    """The counts every process has flushed, and the number and size of cached contexts.

    With ``flush`` this process's own counts are flushed first. The key scan
    walks at most about ``scan_limit`` keys, so on a bigger database the
    context count and size are lower bounds (logged at INFO). Raises
    :class:`~ctxcache.CacheUnavailableError` if Redis cannot be read; calls
    go through the cache's circuit breaker.
    """
    if scan_limit < 1:
        raise ValueError(f"scan_limit must be at least 1, got {scan_limit!r}")
    if flush:
        cache.flush_stats()
    key = cache.keys.stats
    raw = cache.run_guarded("HGETALL", key, functools.partial(cache.client.hgetall, key))
    totals, buckets = _parse_hash(raw)
    contexts, size = _size_keys(cache, cache.keys.full_context_pattern, scan_limit)
    sections, section_size = _size_keys(cache, cache.keys.company_section_pattern, scan_limit)
    return ClusterStats(totals, buckets, contexts, size, sections, section_size)


def serve_metrics(cache: ContextCache, port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics`` for Prometheus from a daemon thread; stop it with ``.shutdown()``.

    The registry is private (no process or platform metrics, nothing global):
    it holds only a :class:`StatsCollector` for ``cache``.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(cache))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    logger.info("serving cache metrics on http://%s:%d/metrics", addr, server.server_port)
    return server


class StatsCollector(Collector):
    """Reads :func:`cluster_stats` at each scrape and exposes it.

    When Redis cannot be read only ``ctxcache_redis_up 0`` is exposed: counters
    that dropped to zero would read as resets.
    """

    def __init__(self, cache: ContextCache, *, scan_limit: int = 100_000) -> None:
        self.cache = cache
        self.scan_limit = scan_limit

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration; no Redis call there

    def collect(self) -> Iterable[Metric]:
        try:
            stats = cluster_stats(self.cache, scan_limit=self.scan_limit)
        except CacheUnavailableError as exc:
            logger.warning("cache metrics unavailable: %s", exc)
            yield _gauge("ctxcache_redis_up", "Whether Redis could be read at this scrape.", 0)
            return
        yield _gauge("ctxcache_redis_up", "Whether Redis could be read at this scrape.", 1)
        yield from _families(stats)


def _families(stats: ClusterStats) -> Iterator[Metric]:
    totals = stats.totals
    for name, (field, help_text) in COUNTERS.items():
        yield CounterMetricFamily(name, help_text, value=getattr(totals, field))
    warmups = CounterMetricFamily(
        "ctxcache_warmups", "Warm-ups of VIP contexts by outcome.", labels=["outcome"]
    )
    for outcome in WarmOutcome:
        warmups.add_metric([outcome.value], getattr(totals, f"warm_{outcome.value}"))
    yield warmups
    for kind, help_text in (("hits", "Parts found"), ("misses", "Parts not found")):
        family = CounterMetricFamily(
            f"ctxcache_part_{kind}", f"{help_text}, by scope.", labels=["scope"]
        )
        for scope in SCOPES:
            family.add_metric([scope], getattr(totals, f"{scope}_{kind}"))
        yield family
    hooks = CounterMetricFamily(
        "ctxcache_hook_invalidations",
        "Booking hooks by what they did: applied inline and/or queued, or failed (raised).",
        labels=["outcome"],
    )
    for name in HOOK_OUTCOMES:
        hooks.add_metric([name], getattr(totals, f"hook_{name}"))
    yield hooks
    safety_net = CounterMetricFamily(
        "ctxcache_safety_net",
        "Queued safety-net invalidations by what they found: still in effect (no-op), "
        "re-applied, or Redis unavailable (retried).",
        labels=["outcome"],
    )
    for name in SAFETY_NET_OUTCOMES:
        safety_net.add_metric([name], getattr(totals, f"safety_net_{name}"))
    yield safety_net
    yield HistogramMetricFamily(
        "ctxcache_load_seconds",
        "Time the context loader took.",
        buckets=[(bound_label(b), n) for b, n in stats.load_buckets.items()],
        sum_value=totals.load_seconds,
    )
    yield _gauge(
        "ctxcache_hit_ratio", "Hits over lookups since the counters began.", totals.hit_rate
    )
    yield _gauge(
        "ctxcache_l1_bytes",
        "JSON bytes held in the in-process caches, summed over the processes as they last"
        " pushed their counts (a process that stopped without close() keeps its figure).",
        totals.l1_bytes,
    )
    yield _gauge("ctxcache_cached_contexts", "Clients' parts in the cache.", stats.cached_contexts)
    yield _gauge(
        "ctxcache_cached_sections", "Company sections in the cache.", stats.cached_sections
    )
    memory = GaugeMetricFamily(
        "ctxcache_cached_bytes", "Memory used by the cache, by scope.", labels=["scope"]
    )
    memory.add_metric(["client"], stats.cached_bytes)
    memory.add_metric(["company"], stats.section_bytes)
    yield memory


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _parse_hash(raw: Mapping[bytes | str, bytes | str]) -> tuple[CacheStats, dict[float, int]]:
    counters: dict[str, float] = {}
    per_bucket: dict[float, int] = dict.fromkeys(LOAD_BUCKETS, 0)
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        try:
            number = float(value)
        except ValueError:
            logger.warning("ignoring %s=%r in the stats hash: not a number", name, value)
            continue
        bound = parse_bucket_field(name)
        if bound is not None:
            per_bucket[bound] = per_bucket.get(bound, 0) + int(number)
        elif name in COUNTER_NAMES:
            counters[name] = number
    ints = {n: int(v) for n, v in counters.items() if n not in FLOAT_FIELDS}
    totals = CacheStats(load_seconds=counters.get("load_seconds", 0.0), **ints)
    cumulative: dict[float, int] = {}
    running = 0
    for bound in sorted(per_bucket):
        running += per_bucket[bound]
        cumulative[bound] = running
    return totals, cumulative


def _size_keys(cache: ContextCache, pattern: str, scan_limit: int) -> tuple[int, int]:
    """Count the keys matching ``pattern`` and add up their MEMORY USAGE, walking ~scan_limit.

    In a Cluster every primary is scanned in turn (replicas hold copies).
    """
    seen: set[bytes | str] = set()
    contexts = size = 0
    walked = 0
    for shard in primaries(cache.client):
        cursor = 0
        while True:
            count = max(1, min(_SCAN_COUNT, scan_limit - walked))
            scan = functools.partial(shard.scan, cursor, match=pattern, count=count)
            cursor, found = cache.run_guarded("SCAN", pattern, scan)
            walked += count
            batch = [key for key in found if key not in seen][: max(0, scan_limit - len(seen))]
            seen.update(batch)
            if batch:
                sizes = cache.run_guarded(
                    "MEMORY USAGE",
                    pattern,
                    functools.partial(_memory_usage, shard, batch),
                )
                present = [s for s in sizes if s is not None]
                contexts += len(present)
                size += sum(present)
            if cursor == 0:
                break
            if walked >= scan_limit or len(seen) >= scan_limit:
                logger.info(  # at every scrape of a big server: not a warning
                    "stopped counting cached contexts after %d keys (scan_limit); "
                    "the count and size are lower bounds",
                    walked,
                )
                return contexts, size
    return contexts, size


def _memory_usage(client: redis.Redis, keys: list[bytes | str]) -> list[int | None]:
    """MEMORY USAGE of ``keys`` in one pipeline; STRLEN where MEMORY is not available."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key)
    results = pipe.execute(raise_on_error=False)
    if any(isinstance(r, redis_errors.ResponseError) for r in results):
        # MEMORY is disabled on some managed servers (and missing in fakeredis).
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.strlen(key)
        results = [r or None for r in pipe.execute(raise_on_error=False)]
    return [int(r) if isinstance(r, int) else None for r in results]
