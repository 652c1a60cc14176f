"""Asyncio suite: hits per second on one core, AsyncContextCache against ContextCache.

One process pinned to one CPU (the Redis server may use the others). The
asyncio client serves 100 concurrent coroutines on one event loop; the sync
client serves the same load from a thread pool (100 threads, and a small pool
of 8, since threads past a few only add GIL hand-offs). Every caller reads the
same cached ~300 KB context, in rounds of fixed length, interleaved
(A B B A ...) so that noise on a shared machine hits all alike; the figures
are medians of the rounds, and the ratio is of those medians.

Where it runs and what it writes: as every suite (``benchmarks/README.md``,
"What the benchmarks touch"); one context, under ``ctxcache-bench:``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from benchmarks.common import (
    NAMESPACE,
    bench_url,
    delete_bench_keys,
    load_fixture,
    publish,
    table,
)
from benchmarks.core import environment
from ctxcache import AsyncContextCache, ContextCache
from ctxcache.settings import CacheSettings

PHONE = "+79001234567"
COMPANY_ID = 962302
COROUTINES = 100
THREAD_POOLS = (100, 8)
# copy: each caller gets its own copy of the cached context, so a
# hit's CPU is mostly that copy; shared: read-only sections, no copy, so a hit
# is mostly its one round trip, where the I/O model shows.
L1_MODES = ("copy", "shared")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/asyncio[.quick].json``."""
    quick = bool(getattr(args, "quick", False))
    rounds, seconds = (3, 0.25) if quick else (7, 2.0)
    url = bench_url(args)
    fixture, raw_json, context = load_fixture()
    method = {
        "rounds": rounds,
        "round_seconds": seconds,
        "coroutines": COROUTINES,
        "thread_pools": list(THREAD_POOLS),
        "order": "ABBA interleaved rounds",
        "l1_modes": list(L1_MODES),
    }
    admin = redis.Redis.from_url(url)
    delete_bench_keys(admin)  # an interrupted run's
    try:
        env = environment(admin, url, fixture, len(raw_json))
        results: dict[str, Any] = {"suite": "asyncio", "quick": quick, "environment": env}
        results.update(method=method, l1_modes={})
        with one_cpu() as cpu:
            results["environment"]["pinned_cpu"] = cpu
            for mode in L1_MODES:
                settings = CacheSettings.load(redis_url=url, key_prefix=NAMESPACE, l1_mode=mode)
                results["l1_modes"][mode] = measure(settings, context, rounds, seconds)
    finally:
        delete_bench_keys(admin)
        admin.close()
    publish("asyncio", quick, results, report(results), args)
    return results


def measure(
    settings: CacheSettings, context: dict[str, Any], rounds: int, seconds: float
) -> dict[str, Any]:
    """Hits/s of each contender on one cache configuration, medians of ``rounds``."""
    contenders = {"asyncio": 0, **{f"threads_{n}": n for n in THREAD_POOLS}}
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    with ContextCache.from_settings(settings) as sync_cache, asyncio.Runner() as runner:
        assert sync_cache.set_cached_full_context(PHONE, COMPANY_ID, context)
        async_cache = runner.run(open_async(settings))
        try:
            for index in range(rounds):
                order = list(contenders.items())
                for name, threads in order if index % 2 == 0 else reversed(order):
                    if threads:
                        rate = thread_hits(sync_cache, context, threads, seconds)
                    else:
                        rate = runner.run(async_hits(async_cache, context, seconds))
                    per_round[name].append(rate)
        finally:
            runner.run(async_cache.aclose())
    medians = {name: statistics.median(rates) for name, rates in per_round.items()}
    best_threads = max(medians[f"threads_{n}"] for n in THREAD_POOLS)
    return {
        "hits_per_second": {
            name: {"median": round(medians[name]), "rounds": [round(r) for r in rates]}
            for name, rates in per_round.items()
        },
        "ratio_asyncio_to_threads_100": round(medians["asyncio"] / medians["threads_100"], 3),
        "ratio_asyncio_to_best_threads": round(medians["asyncio"] / best_threads, 3),
    }


@contextlib.contextmanager
def one_cpu() -> Iterator[int | None]:
    """Pin this process to one CPU for the measurement (where the OS lets us)."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


async def open_async(settings: CacheSettings) -> AsyncContextCache:
    return AsyncContextCache.from_settings(settings)


async def async_hits(cache: AsyncContextCache, context: dict[str, Any], seconds: float) -> float:
    """Hits per second of :data:`COROUTINES` coroutines reading for ``seconds``."""
    assert await cache.get_cached_full_context(PHONE, COMPANY_ID) == context
    counts = [0] * COROUTINES
    started = time.perf_counter()
    stop = started + seconds

    async def caller(index: int) -> None:
        while time.perf_counter() < stop:
            if await cache.get_cached_full_context(PHONE, COMPANY_ID) is None:
                raise RuntimeError("a miss during the hit benchmark")
            counts[index] += 1

    await asyncio.gather(*(caller(i) for i in range(COROUTINES)))
    return sum(counts) / (time.perf_counter() - started)


def thread_hits(
    cache: ContextCache, context: dict[str, Any], threads: int, seconds: float
) -> float:
    """Hits per second of ``threads`` threads of one pool reading for ``seconds``."""
    assert cache.get_cached_full_context(PHONE, COMPANY_ID) == context
    ready = threading.Barrier(threads + 1)
    stop_at: list[float] = []

    def caller() -> int:
        count = 0
        ready.wait()
        stop = stop_at[0]
        while time.perf_counter() < stop:
            if cache.get_cached_full_context(PHONE, COMPANY_ID) is None:
                raise RuntimeError("a miss during the hit benchmark")
            count += 1
        return count

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(caller) for _ in range(threads)]
        started = time.perf_counter()
        stop_at.append(started + seconds)
        ready.wait()  # every thread is running: all start together
        total = sum(future.result() for future in futures)
        elapsed = time.perf_counter() - started
    return total / elapsed


def report(r: dict[str, Any]) -> str:
    env, method = r["environment"], r["method"]
    label = {"asyncio": f"AsyncContextCache, {method['coroutines']} coroutines"}
    label.update({f"threads_{n}": f"ContextCache, {n} threads" for n in method["thread_pools"]})
    rows = [["L1 mode", "client", "hits/s (median)", "rounds"]]
    ratios = []
    for mode, figures in r["l1_modes"].items():
        for name, hits in figures["hits_per_second"].items():
            rounds = " ".join(f"{x:,}" for x in hits["rounds"])
            rows.append([mode, label[name], f"{hits['median']:,}", rounds])
        ratios.append(
            f"{mode}: asyncio / 100 threads {figures['ratio_asyncio_to_threads_100']:.2f}x,"
            f" asyncio / best thread pool {figures['ratio_asyncio_to_best_threads']:.2f}x"
        )
    return "\n".join(
        [
            f"asyncio suite: {env['redis_url']}, redis {env['redis_server']}, {env['cpu']},"
            f" pinned to CPU {env['pinned_cpu']}",
            f"{method['rounds']} rounds of {method['round_seconds']} s, {method['order']};"
            f" the same {env['fixture_bytes'] / 1000:,.0f} KB context for every hit",
            "",
            table(rows),
            "",
            *ratios,
        ]
    )
