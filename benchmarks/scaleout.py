"""Scale-out suite: a 3-primary Cluster against a standalone server, and the cost of WAIT.

Starts its own servers on loopback (tests/servers.py): a Redis Cluster of 3
primaries and 3 replicas on ports 7120-7125 and a standalone redis-server on
7130, same binary, no persistence; all killed at the end. It writes nowhere else.

- Hit and set cost of the ~300 KB context (in-process cache off, so every hit
  is a Redis read), standalone against Cluster, rounds interleaved so noise
  hits both alike; medians of per-call times.
- Invalidation latency on the Cluster with ``CTXCACHE_INVALIDATION_REPLICAS=1``
  (WAIT for a replica, per slot) against ``0`` (no WAIT): a client's part (one
  slot) and a booking (the client's slot and the company's: two WAITs); p50
  and p99 of per-call times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import iteration_options, load_fixture, publish, table
from benchmarks.core import environment
from ctxcache import ContextCache
from ctxcache.settings import CacheSettings
from tests.servers import LocalCluster, ServerProcess

CLUSTER_PORT = 7120
STANDALONE_PORT = 7130
COMPANY = 962302
ROUNDS = 5


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/scaleout[.quick].json``."""
    quick, iterations, warmup = iteration_options(args)
    fixture, raw_json, context = load_fixture()
    with tempfile.TemporaryDirectory(prefix="ctxcache-scaleout-") as tmp:
        directory = Path(tmp)
        cluster = LocalCluster(CLUSTER_PORT, directory / "cluster")
        standalone = ServerProcess(
            STANDALONE_PORT,
            directory / "standalone",
            ["--port", str(STANDALONE_PORT), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
        )  # fmt: skip
        try:
            standalone.start()
            _wait_ping(standalone)
            cluster.start()
            admin = redis.Redis(port=STANDALONE_PORT)
            results: dict[str, Any] = {
                "environment": environment(
                    admin, f"redis://127.0.0.1:{STANDALONE_PORT}/0", fixture, len(raw_json)
                ),
                "iterations": iterations,
                "rounds": ROUNDS,
            }
            standalone_url = f"redis://127.0.0.1:{STANDALONE_PORT}/0"
            caches = {
                "standalone": _cache(standalone_url),
                "cluster": _cache(cluster.url),
            }
            results["hit_set"] = _hit_and_set(caches, context, iterations, warmup)
            for cache in caches.values():
                cache.close()
            results["invalidation"] = _invalidations(cluster.url, iterations, warmup)
        finally:
            cluster.stop()
            standalone.kill()
    publish("scaleout", quick, results, report(results), args)
    return results


def _wait_ping(server: ServerProcess) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if server.ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server on {server.port} did not start")


def _cache(url: str, **overrides: Any) -> ContextCache:
    # Every hit a Redis read; generous timeouts: a benchmark measures, it does not fail open.
    settings = CacheSettings.load(
        redis_url=url, l1_max_bytes=0, socket_timeout=5.0, connect_timeout=5.0, **overrides
    )
    return ContextCache.from_settings(settings)


def _timed(call: Callable[[], object], times: int) -> list[float]:
    out = []
    for _ in range(times):
        started = time.perf_counter_ns()
        call()
        out.append((time.perf_counter_ns() - started) / 1e6)
    return out


Operations = Callable[[ContextCache, Callable[[], str]], dict[str, Callable[[], object]]]


def _alternating(
    caches: dict[str, ContextCache], operations: Operations, phones: list[str], per_round: int
) -> dict[str, dict[str, Any]]:
    """p50/p99 of each cache's operations over ``ROUNDS`` rounds, the caches' order flipped
    each round so that machine noise lands on both alike.

    ``operations(cache, next_phone)`` names the calls to time on ``cache``, each
    ``per_round`` times per round; ``next_phone`` walks ``phones``.
    """
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in caches}
    for round_number in range(ROUNDS):
        order = list(caches) if round_number % 2 == 0 else list(reversed(caches))
        for name in order:
            counter = iter(range(10**9))

            def next_phone(counter: Any = counter) -> str:
                return phones[next(counter) % len(phones)]

            for kind, call in operations(caches[name], next_phone).items():
                samples[name].setdefault(kind, []).extend(_timed(call, per_round))
    return {
        name: {kind: _stats(values) for kind, values in kinds.items()}
        for name, kinds in samples.items()
    }


def _hit_and_set(
    caches: dict[str, ContextCache], context: dict[str, Any], iterations: int, warmup: int
) -> dict[str, Any]:
    phones = [f"+7900777{n:04d}" for n in range(20)]
    for cache in caches.values():  # warm connections and scripts
        for phone in phones:
            cache.set_cached_full_context(phone, COMPANY, context)
        _timed(lambda c=cache: c.get_cached_full_context(phones[0], COMPANY), warmup)

    def operations(
        cache: ContextCache, next_phone: Callable[[], str]
    ) -> dict[str, Callable[[], object]]:
        def hit() -> object:
            found = cache.get_cached_full_context(next_phone(), COMPANY)
            assert found is not None
            return found

        def put() -> object:
            ok = cache.set_cached_full_context(next_phone(), COMPANY, context)
            assert ok
            return ok

        return {"hit": hit, "set": put}

    out: dict[str, Any] = _alternating(caches, operations, phones, max(1, iterations // ROUNDS))
    out["cluster_over_standalone"] = {
        kind: round(out["cluster"][kind]["p50_ms"] / out["standalone"][kind]["p50_ms"], 2)
        for kind in ("hit", "set")
    }
    return out


def _invalidations(url: str, iterations: int, warmup: int) -> dict[str, Any]:
    caches = {
        "wait_1": _cache(url, invalidation_replicas="1", invalidation_wait_timeout=1.0),
        "no_wait": _cache(url, invalidation_replicas="0"),
    }
    phones = [f"+7900888{n:04d}" for n in range(20)]

    def operations(
        cache: ContextCache, next_phone: Callable[[], str]
    ) -> dict[str, Callable[[], object]]:
        def client() -> object:
            done = cache.apply_invalidation(next_phone(), COMPANY)
            assert done is not None
            return done

        def booking() -> object:
            done = cache.apply_booking_invalidation(next_phone(), COMPANY)
            assert done is not None
            return done

        return {"client": client, "booking": booking}

    try:
        for cache in caches.values():
            for phone in phones[:warmup]:
                cache.apply_booking_invalidation(phone, COMPANY)
        return _alternating(caches, operations, phones, max(1, iterations // ROUNDS))
    finally:
        for cache in caches.values():
            cache.close()


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(p99, 3),
        "n": len(ordered),
    }


def report(results: dict[str, Any]) -> str:
    env, hs, inv = results["environment"], results["hit_set"], results["invalidation"]
    rows = [["", "standalone p50", "cluster p50", "cluster / standalone", "standalone p99",
             "cluster p99"]]  # fmt: skip
    for kind in ("hit", "set"):
        rows.append(
            [
                f"{kind} (~300 KB context)",
                f"{hs['standalone'][kind]['p50_ms']:.3f} ms",
                f"{hs['cluster'][kind]['p50_ms']:.3f} ms",
                f"{hs['cluster_over_standalone'][kind]:.2f}x",
                f"{hs['standalone'][kind]['p99_ms']:.3f} ms",
                f"{hs['cluster'][kind]['p99_ms']:.3f} ms",
            ]
        )
    wait_rows = [["invalidation (Cluster)", "no WAIT p50", "WAIT 1 p50", "no WAIT p99",
                  "WAIT 1 p99"]]  # fmt: skip
    for kind, label in (("client", "a client's part (1 slot)"), ("booking", "a booking (2 slots)")):
        wait_rows.append(
            [
                label,
                f"{inv['no_wait'][kind]['p50_ms']:.3f} ms",
                f"{inv['wait_1'][kind]['p50_ms']:.3f} ms",
                f"{inv['no_wait'][kind]['p99_ms']:.3f} ms",
                f"{inv['wait_1'][kind]['p99_ms']:.3f} ms",
            ]
        )
    return "\n".join(
        [
            f"scaleout: {env['cpu']}, Redis {env['redis_server']}, Python {env['python']},"
            f" {results['iterations']} calls per figure in {results['rounds']} interleaved rounds",
            "",
            table(rows),
            "",
            table(wait_rows),
        ]
    )
