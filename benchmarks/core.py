"""Core suite: ctxcache's hit, set and memory next to floors measured in the same run.

A floor is the least a cache could do for the same operation with the same
libraries: for a hit, redis-py ``GET`` of the plain JSON plus ``orjson.loads``;
for a set, ``orjson.dumps`` plus zstd level 1 plus ``SET ... EX 43200``. Each
operation is timed interleaved with its floor (A B B A ...), after a warm-up,
so that noise on this shared machine hits both alike; ratios are of medians.

Runs against ``--url`` (else ``CTXCACHE_REDIS_URL``, else local db 0) and
writes only keys under ``ctxcache-bench:``, which it deletes at start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import redis
import zstandard

from benchmarks.common import (
    NAMESPACE,
    bench_cache,
    bench_url,
    delete_bench_keys,
    ensure_room,
    iteration_options,
    load_fixture,
    ms,
    summary,
    table,
    write_results,
)
from benchmarks.common import (
    environment as common_environment,
)
from ctxcache import ContextCache
from ctxcache.core.writes import encode_context

PHONE = "+79001234567"
COMPANY_ID = 962302
TTL = 43200
FLOOR_GET_KEY = NAMESPACE + "floor:get"
FLOOR_SET_KEY = NAMESPACE + "floor:set"
RAW_KEY = NAMESPACE + "raw:{}"  # the memory floor's plain JSON values

TARGET_RATIO = 1.3  # hit and set, ctxcache median / floor median
TARGET_MEMORY = 0.30  # used_memory per context as a fraction of its raw JSON
TARGET_ROUND_TRIPS = 1  # per hit
SPEC_LOAD_S = 2.7  # the spec's "load from Redis"
SPEC_SAVE_S = 7.5  # the spec's "save to Redis, serialization included"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/core[.quick].json``; return the figures."""
    quick, iterations, warmup = iteration_options(args)
    contexts = 100 if quick else 1000
    url = bench_url(args)
    fixture, raw_json, context = load_fixture()

    admin = redis.Redis.from_url(url)  # INFO, MEMORY USAGE, deleting the bench's keys
    ensure_room(admin, contexts * len(raw_json), url)  # the memory floor's peak
    floor = redis.Redis.from_url(url)  # the floor's client, as a typical user builds it
    cache = bench_cache(url)
    delete_bench_keys(admin)  # an interrupted run's
    try:
        results: dict[str, Any] = {
            "suite": "core",
            "quick": quick,
            "environment": environment(admin, url, fixture, len(raw_json)),
            "method": {"iterations": iterations, "warmup": warmup, "order": "ABBA interleaved"},
        }
        results["hit"] = measure_hit(cache, floor, raw_json, context, iterations, warmup)
        results["set"] = measure_set(cache, floor, context, iterations, warmup)
        results["round_trips"] = measure_round_trips(cache, admin, context, min(iterations, 100))
        results["load_through"] = measure_load_through(cache, context, iterations, warmup)
        delete_bench_keys(admin)
        results["memory"] = measure_memory(cache, floor, admin, raw_json, context, contexts)
        results["spec"] = spec_comparison(results)
    finally:
        cache.close()  # first: closing pushes the cache's counters (under the namespace)
        delete_bench_keys(admin)
        floor.close()
        admin.close()
    print(report(results))
    out = write_results("core", quick, results, getattr(args, "results", None))
    print(f"\nfigures written to {out}")
    return results


# -- measurements -----------------------------------------------------------------------


def interleave(
    op: Callable[[], object], floor: Callable[[], object], iterations: int, warmup: int
) -> tuple[list[int], list[int]]:
    """Time ``op`` and ``floor`` alternately (A B B A ...); nanoseconds per call."""
    for _ in range(warmup):
        op()
        floor()
    op_ns: list[int] = []
    floor_ns: list[int] = []
    clock = time.perf_counter_ns
    for i in range(iterations):
        pairs = ((op, op_ns), (floor, floor_ns))
        for fn, out in pairs if i % 2 == 0 else reversed(pairs):
            start = clock()
            fn()
            out.append(clock() - start)
    return op_ns, floor_ns


def compare(op_ns: list[int], floor_ns: list[int]) -> dict[str, Any]:
    ctx, flo = summary(op_ns), summary(floor_ns)
    ratio = ctx["median_ms"] / flo["median_ms"]
    return {
        "ctxcache": ctx,
        "floor": flo,
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "pass": ratio <= TARGET_RATIO,
    }


def measure_hit(
    cache: ContextCache,
    floor: redis.Redis,
    raw_json: bytes,
    context: dict[str, Any],
    iterations: int,
    warmup: int,
) -> dict[str, Any]:
    assert cache.set_cached_full_context(PHONE, COMPANY_ID, context)
    floor.set(FLOOR_GET_KEY, raw_json, ex=TTL)
    assert cache.get_cached_full_context(PHONE, COMPANY_ID) == context
    op_ns, floor_ns = interleave(
        lambda: cache.get_cached_full_context(PHONE, COMPANY_ID),
        lambda: orjson.loads(floor.get(FLOOR_GET_KEY)),  # type: ignore[arg-type]
        iterations,
        warmup,
    )
    assert cache.stats().misses == 0, "a timed hit was a miss"
    return {"floor_is": "redis-py GET of the plain JSON + orjson.loads", **compare(op_ns, floor_ns)}


def measure_set(
    cache: ContextCache,
    floor: redis.Redis,
    context: dict[str, Any],
    iterations: int,
    warmup: int,
) -> dict[str, Any]:
    compressor = zstandard.ZstdCompressor(level=1)  # reused, as ctxcache reuses its own
    written_before = cache.stats().sets
    op_ns, floor_ns = interleave(
        lambda: cache.set_cached_full_context(PHONE, COMPANY_ID, context),
        lambda: floor.set(FLOOR_SET_KEY, compressor.compress(orjson.dumps(context)), ex=TTL),
        iterations,
        warmup,
    )
    parts = 1 + sum(1 for name in context if cache.core.layout.is_company(name))
    written = cache.stats().sets - written_before
    assert written == (iterations + warmup) * parts, "a timed set failed"
    return {
        "floor_is": f"orjson.dumps + zstd level 1 (compressor reused) + SET EX {TTL}",
        **compare(op_ns, floor_ns),
    }


@contextlib.contextmanager
def counting_requests(client: redis.Redis) -> Iterator[list[int]]:
    """Count requests written by ``client``'s connection class (one per round trip)."""
    cls = client.connection_pool.connection_class
    original = cls.send_packed_command
    sent = [0]

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return original(self, *args, **kwargs)

    with mock.patch.object(cls, "send_packed_command", counted):
        yield sent


def commands_processed(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_commands_processed"])


def server_commands_per_call(admin: redis.Redis, op: Callable[[], object], n: int) -> float:
    """Commands the server ran per ``op``; the least of 3 tries, as other clients add to it."""
    best = float("inf")
    for _ in range(3):
        before = commands_processed(admin)
        for _ in range(n):
            op()
        # The second INFO counts the first one.
        best = min(best, (commands_processed(admin) - before - 1) / n)
    return best


def measure_round_trips(
    cache: ContextCache, admin: redis.Redis, context: dict[str, Any], n: int
) -> dict[str, Any]:
    def hit() -> None:
        assert cache.get_cached_full_context(PHONE, COMPANY_ID) is not None

    def set_() -> None:
        assert cache.set_cached_full_context(PHONE, COMPANY_ID, context)

    def miss() -> int:
        cache.invalidate_cached_context(PHONE, COMPANY_ID)  # not counted: outside the window
        with counting_requests(cache.client) as sent:
            cache.load_full_context(PHONE, COMPANY_ID, lambda phone, company_id: context)
        return sent[0]

    results: dict[str, Any] = {}
    for name, op in (("hit", hit), ("set", set_)):
        with counting_requests(cache.client) as sent:
            for _ in range(n):
                op()
        results[name] = {
            "client_requests": sent[0] / n,
            "server_commands": server_commands_per_call(admin, op, n),
        }
    miss()  # the first miss may load the Lua scripts into a fresh server: not counted
    misses = [miss() for _ in range(min(n, 20))]
    results["load_through_miss"] = {"client_requests": statistics.mean(misses)}
    hit_counts = results["hit"]
    results["target"] = TARGET_ROUND_TRIPS
    # One write per round trip: on one server a hit is one READ_PARTS script over
    # every part (a Cluster pipelines one per hash slot).
    results["pass"] = hit_counts["client_requests"] == TARGET_ROUND_TRIPS
    return results


def measure_load_through(
    cache: ContextCache, context: dict[str, Any], iterations: int, warmup: int
) -> dict[str, Any]:
    def loader(phone: str, company_id: int) -> dict[str, Any]:
        return context

    timings: list[int] = []
    for i in range(warmup + max(1, iterations // 2)):
        cache.invalidate_cached_context(PHONE, COMPANY_ID)
        start = time.perf_counter_ns()
        cache.load_full_context(PHONE, COMPANY_ID, loader)
        if i >= warmup:
            timings.append(time.perf_counter_ns() - start)
    assert cache.get_cached_full_context(PHONE, COMPANY_ID) == context
    return {"loader": "in memory, returns the fixture", **summary(timings)}


def used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


def measure_memory(
    cache: ContextCache,
    floor: redis.Redis,
    admin: redis.Redis,
    raw_json: bytes,
    context: dict[str, Any],
    count: int,
) -> dict[str, Any]:
    raw_total = count * len(raw_json)

    def stored(
        label: str, store: Callable[[int], object], key: Callable[[int], str]
    ) -> dict[str, Any]:
        before = used_memory(admin)
        for i in range(count):
            store(i)
        delta = used_memory(admin) - before
        usage = sum(admin.memory_usage(key(i), samples=0) or 0 for i in range(count))
        delete_bench_keys(admin)
        return {
            "stored_as": label,
            "used_memory_delta": delta,
            "fraction_of_raw": round(delta / raw_total, 4),
            "memory_usage_sum": usage,
        }

    def phone(i: int) -> str:
        return f"+7900000{i:04d}"

    ctx_result = stored(
        "ctxcache envelope (zstd)",
        lambda i: cache.set_cached_full_context(phone(i), COMPANY_ID, context),
        lambda i: cache.client_keys(phone(i), COMPANY_ID).full_context,
    )
    ctx_result["value_bytes"] = encode_context(
        cache.core, cache.core.identify(phone(0), COMPANY_ID), context
    ).size
    raw_result = stored(
        "plain JSON (no compression)",
        lambda i: floor.set(RAW_KEY.format(i), raw_json, ex=TTL),
        RAW_KEY.format,
    )
    return {
        "contexts": count,
        "raw_json_bytes": len(raw_json),
        "raw_total_bytes": raw_total,
        "ctxcache": ctx_result,
        "raw_json": raw_result,
        "target": TARGET_MEMORY,
        "pass": ctx_result["fraction_of_raw"] <= TARGET_MEMORY,
    }


def spec_comparison(results: dict[str, Any]) -> dict[str, Any]:
    rows = (
        ("hit", "load from Redis", SPEC_LOAD_S, results["hit"]["ctxcache"]["median_ms"]),
        ("set", "save to Redis", SPEC_SAVE_S, results["set"]["ctxcache"]["median_ms"]),
        ("load_through_miss", "save to Redis", SPEC_SAVE_S, results["load_through"]["median_ms"]),
    )
    return {
        name: {
            "spec_step": step,
            "spec_s": spec_s,
            "median_ms": ms,
            "x_faster": round(spec_s * 1000 / ms),
        }
        for name, step, spec_s, ms in rows
    }


# -- environment and report --------------------------------------------------------------


def environment(admin: redis.Redis, url: str, fixture: Path, size: int) -> dict[str, Any]:
    libraries = ("redis", "hiredis", "orjson", "zstandard")
    return {
        **common_environment(admin, url, libraries),
        "fixture": fixture.name,
        "fixture_bytes": size,
    }


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(r: dict[str, Any]) -> str:
    env, method, mem, trips, lt = (
        r[k] for k in ("environment", "method", "memory", "round_trips", "load_through")
    )
    libs = ", ".join(f"{name} {version}" for name, version in env["libraries"].items())
    timing = [["operation", "ctxcache p50", "p90", "floor p50", "p90", "ratio", "target", ""]]
    for name in ("hit", "set"):
        c, f, ratio, ok = (r[name][k] for k in ("ctxcache", "floor", "ratio", "pass"))
        cells = [ms(c["median_ms"]), ms(c["p90_ms"]), ms(f["median_ms"]), ms(f["p90_ms"])]
        timing.append([name, *cells, f"{ratio:.2f}", f"<= {TARGET_RATIO}", mark(ok)])

    memory = [[f"{mem['contexts']:,} contexts", "used_memory +", "of raw JSON", "MEMORY USAGE"]]
    memory[0] += ["target", ""]
    for name in ("ctxcache", "raw_json"):
        m = mem[name]
        cells = [f"{m['used_memory_delta'] / 1e6:,.1f} MB", f"{m['fraction_of_raw']:.1%}"]
        cells.append(f"{m['memory_usage_sum'] / 1e6:,.1f} MB")
        verdict = [f"<= {TARGET_MEMORY:.0%}", mark(mem["pass"])] if name == "ctxcache" else ["", ""]
        memory.append([m["stored_as"], *cells, *verdict])

    round_trips = [["round trips per call", "requests sent", "commands run", "target", ""]]
    for name, label in (("hit", "hit"), ("set", "set"), ("load_through_miss", "load-through miss")):
        t = trips[name]
        server = f"{t['server_commands']:.2f}" if "server_commands" in t else "-"
        verdict = [str(TARGET_ROUND_TRIPS), mark(trips["pass"])] if name == "hit" else ["", ""]
        round_trips.append([label, f"{t['client_requests']:.2f}", server, *verdict])

    spec = [["ctxcache vs the spec's figures", "ctxcache p50", "spec", "faster"]]
    for name, s in r["spec"].items():
        label = (
            f"{name.replace('_', ' ').replace('load through', 'load-through')} vs {s['spec_step']}"
        )
        spec.append([label, ms(s["median_ms"]), f"~{s['spec_s']} s", f"{s['x_faster']:,}x"])

    return "\n".join(
        [
            f"ctxcache core benchmark{' (quick)' if r['quick'] else ''}, {env['date']}",
            f"  platform      {env['platform']}",
            f"  cpu           {env['cpu']}",
            f"  python        {env['python']} ({libs})",
            f"  redis-server  {env['redis_server']} at {env['redis_url']}",
            f"  fixture       {env['fixture']}, {env['fixture_bytes']:,} bytes of JSON",
            f"  method        {method['iterations']} timed iterations after {method['warmup']}"
            " warm-up, each interleaved with its floor (ABBA); perf_counter_ns",
            "",
            table(timing),
            f"  hit floor: {r['hit']['floor_is']}",
            f"  set floor: {r['set']['floor_is']}",
            "",
            table(memory),
            f"  one ctxcache value: {mem['ctxcache']['value_bytes']:,} bytes for"
            f" {mem['raw_json_bytes']:,} bytes of JSON",
            "",
            table(round_trips),
            "  requests sent: counted in the client; commands run: the server's"
            " total_commands_processed",
            "",
            f"load-through on a miss (invalidated before each run, in-memory loader):"
            f" p50 {ms(lt['median_ms'])}, p90 {ms(lt['p90_ms'])} over {lt['n']} runs",
            "",
            table(spec),
            "  spec: its benchmark table (load from Redis ~2.7 s; save, serialization included,"
            " ~7.5 s)",
        ]
    )
