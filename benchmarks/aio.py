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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from benchmarks.common import (
    NAMESPACE,
    bench_cache,
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/asyncio[.quick].json``."""
    quick = bool(getattr(args, "quick", False))
    rounds, seconds = (3, 0.25) if quick else (7, 2.0)
    url = bench_url(args)
    fixture, raw_json, context = load_fixture()
    admin = redis.Redis.from_url(url)
    delete_bench_keys(admin)  # an interrupted run's
    settings = CacheSettings.load(redis_url=url, key_prefix=NAMESPACE)
    sync_cache = bench_cache(url)
    try:
        with one_cpu() as cpu:
            assert sync_cache.set_cached_full_context(PHONE, COMPANY_ID, context)
            contenders = {"asyncio": "async", **{f"threads_{n}": n for n in THREAD_POOLS}}
            per_round: dict[str, list[float]] = {name: [] for name in contenders}
            with asyncio.Runner() as runner:
                async_cache = runner.run(open_async(settings))
                try:
                    for index in range(rounds):
                        order = list(contenders.items())
                        for name, how in order if index % 2 == 0 else reversed(order):
                            if how == "async":
                                rate = runner.run(async_hits(async_cache, context, seconds))
                            else:
                                rate = thread_hits(sync_cache, context, int(how), seconds)
                            per_round[name].append(rate)
                finally:
                    runner.run(async_cache.aclose())
        medians = {name: statistics.median(rates) for name, rates in per_round.items()}
        best_threads = max(medians[f"threads_{n}"] for n in THREAD_POOLS)
        results: dict[str, Any] = {
            "suite": "asyncio",
            "quick": quick,
            "environment": {**environment(admin, url, fixture, len(raw_json)), "pinned_cpu": cpu},
            "method": {
                "rounds": rounds,
                "round_seconds": seconds,
                "coroutines": COROUTINES,
                "thread_pools": list(THREAD_POOLS),
                "order": "ABBA interleaved rounds",
                "l1_max_bytes": settings.l1_max_bytes,
            },
            "hits_per_second": {
                name: {"median": round(medians[name]), "rounds": [round(r) for r in rates]}
                for name, rates in per_round.items()
            },
            "ratio_asyncio_to_threads_100": round(medians["asyncio"] / medians["threads_100"], 3),
            "ratio_asyncio_to_best_threads": round(medians["asyncio"] / best_threads, 3),
        }
    finally:
        sync_cache.close()
        delete_bench_keys(admin)
        admin.close()
    publish("asyncio", quick, results, report(results), args)
    return results


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
    env, method, hits = r["environment"], r["method"], r["hits_per_second"]
    label: dict[str, Callable[[], str]] = {
        "asyncio": lambda: f"AsyncContextCache, {method['coroutines']} coroutines",
        **{
            f"threads_{n}": (lambda n=n: f"ContextCache, pool of {n} threads")
            for n in method["thread_pools"]
        },
    }
    rows = [["client", "hits/s (median)", "rounds"]]
    for name, figures in hits.items():
        rows.append(
            [label[name](), f"{figures['median']:,}", " ".join(f"{x:,}" for x in figures["rounds"])]
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
            f"asyncio / 100 threads: {r['ratio_asyncio_to_threads_100']:.2f}x;"
            f" asyncio / best thread pool: {r['ratio_asyncio_to_best_threads']:.2f}x",
        ]
    )
