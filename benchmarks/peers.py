"""Peers suite: ctxcache next to dogpile.cache, cashews and plain redis-py + json, on one Redis.

Each contender caches the same 300 KB context through its own API, with its
default serializer: hit (a read of a cached value), set, and load-through (a
read that misses, calls an in-memory loader and stores the result; the key is
deleted, untimed, before each). Contenders take turns round-robin within every
iteration, after a warm-up, so machine noise lands on all alike; ratios are of
medians from the same run. cashews is asyncio-only, so the whole run happens
inside one event loop and its operations are timed around their ``await``.

Memory: ``INFO memory`` ``used_memory`` growth after storing N distinct keys
through each contender's API, the contender's keys deleted before the next.

Runs against ``--url`` (else ``CTXCACHE_REDIS_URL``, else local db 0) and
writes only keys under ``ctxcache-bench:`` (and dogpile's lock for one of them,
``_lockctxcache-bench:dogpile``), which it deletes at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import json
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import redis
import redis.asyncio.connection
import redis.connection
from cashews import Cache
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
from benchmarks.dogpile_peer import DOGPILE_KEY, DOGPILE_LOCKS, TTL, dogpile_region

PHONE = "+79001234567"
COMPANY_ID = 962302
MEASURES = ("hit", "set", "load_through")
LABELS = {"hit": "hit", "set": "set", "load_through": "load-through"}
LIBRARIES = ("redis", "hiredis", "orjson", "zstandard", "dogpile.cache", "cashews", "matplotlib")
CASHEWS_KEY, PLAIN_KEY = (NAMESPACE + name for name in ("cashews", "plain"))

Op = Callable[[], Any]  # a blocking call, or one returning an awaitable (cashews)


class CountingLoader:
    """The in-memory loader: returns the fixture and counts calls, to prove each load missed."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context
        self.calls = 0

    def __call__(self, *_: object) -> dict[str, Any]:
        self.calls += 1
        return self.context


@dataclass
class Contender:
    name: str
    stores_as: str  # its default serializer, as a user gets it
    key: str  # the key its hit, set and load-through use
    hit: Op
    set: Op
    load_through: Op
    forget: Op  # deletes ``key``; untimed, before each load-through
    store: Callable[[int], Any]  # stores the context under the i-th of N distinct keys
    stored_keys: str  # SCAN pattern of the keys ``store`` writes
    close: Op
    loader: CountingLoader


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/peers[.quick].{json,png}``."""
    quick, iterations, warmup = iteration_options(args)
    count = 100 if quick else 1000
    url = bench_url(args)
    fixture, raw_json, context = load_fixture()

    admin = redis.Redis.from_url(url)  # INFO, GET of stored values, MEMORY USAGE, clean-up
    ensure_room(admin, count * 320_000, url)  # the largest contender stores ~312 KB a context
    delete_bench_keys(admin, DOGPILE_LOCKS)  # an interrupted run's
    try:
        results: dict[str, Any] = {
            "suite": "peers",
            "quick": quick,
            "environment": environment(admin, url, fixture.name, len(raw_json)),
            "method": {
                "iterations": iterations,
                "warmup": warmup,
                "order": "round-robin, start rotating each iteration",
            },
        }
        peers = contenders(url, context)
        results.update(
            asyncio.run(
                measure_all(admin, peers, context, iterations, warmup, count, len(raw_json))
            )
        )
    finally:
        delete_bench_keys(admin, DOGPILE_LOCKS)
        admin.close()
    print(report(results))
    out = write_results("peers", quick, results, getattr(args, "results", None))
    chart(results, out.with_suffix(".png"))
    print(f"\nfigures written to {out} and {out.with_suffix('.png').name}")
    return results


# -- contenders --------------------------------------------------------------------------


def contenders(url: str, context: dict[str, Any]) -> list[Contender]:
    """The four caches, each configured as its documentation shows, on the same database.

    Every key is under the bench namespace: ctxcache's through its key prefix,
    the others' by name.
    """
    cache = bench_cache(url)
    ctx_loader = CountingLoader(context)
    ctxcache = Contender(
        "ctxcache",
        "orjson in a versioned envelope, zstd level 1 above 1 KB",
        cache.client_keys(PHONE, COMPANY_ID).full_context,
        hit=lambda: cache.get_cached_full_context(PHONE, COMPANY_ID),
        set=lambda: cache.set_cached_full_context(PHONE, COMPANY_ID, context),
        load_through=lambda: cache.load_full_context(PHONE, COMPANY_ID, ctx_loader),
        forget=lambda: cache.invalidate_cached_context(PHONE, COMPANY_ID),
        store=lambda i: cache.set_cached_full_context(f"+7900000{i:04d}", COMPANY_ID, context),
        stored_keys=NAMESPACE + "full_context:*",
        close=cache.close,
        loader=ctx_loader,
    )

    region = dogpile_region(url)
    dogpile_creator = CountingLoader(context)
    dogpile = Contender(
        "dogpile.cache",
        f"pickle.dumps (default protocol {pickle.DEFAULT_PROTOCOL}) after a JSON metadata"
        " header; no compression",
        DOGPILE_KEY,
        hit=lambda: region.get(DOGPILE_KEY),
        set=lambda: region.set(DOGPILE_KEY, context),
        load_through=lambda: region.get_or_create(DOGPILE_KEY, dogpile_creator),
        forget=lambda: region.delete(DOGPILE_KEY),
        store=lambda i: region.set(f"{DOGPILE_KEY}:{i}", context),
        stored_keys=DOGPILE_KEY + ":*",
        close=lambda: region.backend.writer_client.close(),
        loader=dogpile_creator,
    )

    cashews = Cache()
    cashews.setup(url)
    cashews_loader = CountingLoader(context)
    cashews_ = Contender(
        "cashews",
        "pickle (HIGHEST_PROTOCOL), then repr() of every value read (check_repr); no compression",
        CASHEWS_KEY,
        hit=lambda: cashews.get(CASHEWS_KEY),
        set=lambda: cashews.set(CASHEWS_KEY, context, expire=TTL),
        load_through=lambda: cashews.get_or_set(CASHEWS_KEY, cashews_loader, expire=TTL),
        forget=lambda: cashews.delete(CASHEWS_KEY),
        store=lambda i: cashews.set(f"{CASHEWS_KEY}:{i}", context, expire=TTL),
        stored_keys=CASHEWS_KEY + ":*",
        close=cashews.close,
        loader=cashews_loader,
    )

    # What the spec's Node service does: JSON text, SET EX; GET, parse.
    plain = redis.Redis.from_url(url)
    plain_loader = CountingLoader(context)

    def plain_get() -> Any:
        raw = plain.get(PLAIN_KEY)
        return None if raw is None else json.loads(raw)

    def node_style(value: Any) -> bytes:
        # JSON.stringify keeps non-ASCII text as UTF-8, as the spec's Node service stores it.
        return json.dumps(value, ensure_ascii=False).encode()

    def plain_load_through() -> Any:
        found = plain_get()
        if found is None:
            found = plain_loader()
            plain.set(PLAIN_KEY, node_style(found), ex=TTL)
        return found

    plain_json = Contender(
        "redis-py + json",
        "json.dumps(ensure_ascii=False), UTF-8 like JSON.stringify; no compression",
        PLAIN_KEY,
        hit=plain_get,
        set=lambda: plain.set(PLAIN_KEY, node_style(context), ex=TTL),
        load_through=plain_load_through,
        forget=lambda: plain.delete(PLAIN_KEY),
        store=lambda i: plain.set(f"{PLAIN_KEY}:{i}", node_style(context), ex=TTL),
        stored_keys=PLAIN_KEY + ":*",
        close=plain.close,
        loader=plain_loader,
    )
    return [ctxcache, dogpile, cashews_, plain_json]


# -- measurements ------------------------------------------------------------------------


async def settle(result: Any) -> Any:
    """``result``, awaited if it is awaitable (a cashews call)."""
    return await result if inspect.isawaitable(result) else result


async def measure_all(
    admin: redis.Redis,
    peers: list[Contender],
    context: dict[str, Any],
    iterations: int,
    warmup: int,
    count: int,
    raw_bytes: int,
) -> dict[str, Any]:
    """Timings, round trips and memory of every contender, in one event loop (for cashews)."""
    try:
        for c in peers:
            await settle(c.set())
            assert await settle(c.hit()) == context, f"{c.name} did not read back the context"
        stored = {c.name: stored_value(admin, c) for c in peers}
        timings: dict[str, dict[str, Any]] = {}
        for m in MEASURES:
            ns = await interleave(peers, m, iterations, warmup)
            base = summary(ns["ctxcache"])["median_ms"]
            timings[m] = {}
            for c in peers:
                s = summary(ns[c.name])
                trips = await round_trips(c, m)
                timings[m][c.name] = {**s, "vs_ctxcache": round(s["median_ms"] / base, 3)}
                timings[m][c.name]["round_trips"] = trips
        for c in peers:
            # +1: round_trips() made one more load-through
            assert c.loader.calls == warmup + iterations + 1, f"{c.name}: a load-through hit"
        memory: dict[str, Any] = {
            "contexts": count,
            "scale_to_1000": 1000 / count,
            "raw_json_bytes_per_1000": 1000 * raw_bytes,
        }
        for c in peers:
            memory[c.name] = await measure_memory(admin, c, count, raw_bytes)
    finally:
        for c in peers:
            await settle(c.close())
    return {"contenders": stored, "timings": timings, "memory": memory}


def stored_value(admin: redis.Redis, c: Contender) -> dict[str, Any]:
    value: bytes = admin.get(c.key)  # type: ignore[assignment]
    return {"stores_as": c.stores_as, "value_bytes": len(value), "head": repr(value[:16])}


async def interleave(
    peers: list[Contender], measure: str, iterations: int, warmup: int
) -> dict[str, list[int]]:
    """Time ``measure`` for every contender in turn; the turn order rotates each iteration."""
    timings: dict[str, list[int]] = {c.name: [] for c in peers}
    clock = time.perf_counter_ns
    gc.collect()  # start clean: the setup's garbage is nobody's cost
    for i in range(warmup + iterations):
        shift = i % len(peers)
        for c in peers[shift:] + peers[:shift]:
            if measure == "load_through":
                await settle(c.forget())
            op = getattr(c, measure)
            start = clock()
            result = op()
            if inspect.isawaitable(result):
                result = await result
            elapsed = clock() - start
            if measure != "set" and not isinstance(result, dict):
                raise RuntimeError(f"{c.name} {measure} returned {type(result).__name__}")
            if i >= warmup:
                timings[c.name].append(elapsed)
    return timings


@contextlib.contextmanager
def counting_requests() -> Iterator[list[int]]:
    """Count requests written by every redis-py connection, blocking or asyncio."""
    sent = [0]
    sync_cls = redis.connection.AbstractConnection
    async_cls = redis.asyncio.connection.AbstractConnection
    sync_send, async_send = sync_cls.send_packed_command, async_cls.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return sync_send(self, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return await async_send(self, *args, **kwargs)

    with (
        mock.patch.object(sync_cls, "send_packed_command", counted),
        mock.patch.object(async_cls, "send_packed_command", counted_async),
    ):
        yield sent


async def round_trips(c: Contender, measure: str) -> int:
    if measure == "load_through":
        await settle(c.forget())
    with counting_requests() as sent:
        await settle(getattr(c, measure)())
    return sent[0]


def used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


async def measure_memory(
    admin: redis.Redis, c: Contender, count: int, raw_bytes: int
) -> dict[str, Any]:
    """``used_memory`` growth for ``count`` contexts stored through ``c``'s own API."""
    delete_bench_keys(admin, DOGPILE_LOCKS)
    before = used_memory(admin)
    for i in range(count):
        await settle(c.store(i))
    delta = used_memory(admin) - before
    keys = list(admin.scan_iter(match=c.stored_keys, count=1000))
    assert len(keys) == count, f"{c.name}: {len(keys)} keys stored, {count} expected"
    usage = sum(admin.memory_usage(key, samples=0) or 0 for key in keys)
    delete_bench_keys(admin, DOGPILE_LOCKS)
    return {
        "used_memory_delta": delta,
        "per_1000_bytes": round(delta * 1000 / count),
        "fraction_of_raw": round(delta / (raw_bytes * count), 4),
        "memory_usage_sum": usage,
    }


# -- environment, report and chart -------------------------------------------------------


def environment(admin: redis.Redis, url: str, fixture: str, size: int) -> dict[str, Any]:
    return {
        **common_environment(admin, url, LIBRARIES),
        "fixture": fixture,
        "fixture_bytes": size,
    }


def versus(name: str, ratio: float) -> str:
    if name == "ctxcache":
        return "(baseline)"
    if round(ratio, 2) == 1:
        return "same (1.00x)"
    return f"{ratio:.2f}x slower" if ratio > 1 else f"{1 / ratio:.2f}x faster"


def report(r: dict[str, Any]) -> str:
    env, method, mem = r["environment"], r["method"], r["memory"]
    libs = ", ".join(f"{name} {version}" for name, version in env["libraries"].items())
    timing = [["operation", "contender", "p50", "p90", "vs ctxcache (p50)", "round trips"]]
    for m in MEASURES:
        for name, t in r["timings"][m].items():
            cells = [ms(t["median_ms"]), ms(t["p90_ms"]), versus(name, t["vs_ctxcache"])]
            timing.append([LABELS[m], name, *cells, str(t["round_trips"])])
    stored = [["contender", "stores as (its default serializer)", "value", "first bytes"]]
    for name, s in r["contenders"].items():
        stored.append([name, s["stores_as"], f"{s['value_bytes']:,} B", s["head"]])
    scaled = (
        "" if mem["contexts"] == 1000 else f" (x{mem['scale_to_1000']:g} from {mem['contexts']})"
    )
    memory = [["per 1,000 contexts" + scaled, "used_memory +", "of raw JSON", "MEMORY USAGE"]]
    for name in r["contenders"]:
        m = mem[name]
        scale = mem["scale_to_1000"]
        memory.append(
            [
                name,
                f"{m['per_1000_bytes'] / 1e6:,.1f} MB",
                f"{m['fraction_of_raw']:.1%}",
                f"{m['memory_usage_sum'] * scale / 1e6:,.1f} MB",
            ]
        )
    return "\n".join(
        [
            f"ctxcache peers benchmark{' (quick)' if r['quick'] else ''}, {env['date']}",
            f"  platform      {env['platform']}",
            f"  cpu           {env['cpu']}",
            f"  python        {env['python']} ({libs})",
            f"  redis-server  {env['redis_server']} at {env['redis_url']}",
            f"  fixture       {env['fixture']}, {env['fixture_bytes']:,} bytes of JSON",
            f"  method        {method['iterations']} timed iterations after {method['warmup']}"
            " warm-up, contenders round-robin (rotating start); perf_counter_ns",
            "",
            table(timing),
            "  load-through: key deleted (untimed) before each, in-memory loader. Its round trips:"
            " ctxcache GET, lease script, guarded-store script;",
            "  dogpile GET, lock SET NX, GET, SETEX, lock-release script; cashews get_or_set and"
            " redis-py GET, SET (no stampede lock)",
            "",
            table(stored),
            "",
            table(memory),
            f"  raw JSON: {mem['raw_json_bytes_per_1000'] / 1e6:,.1f} MB per 1,000 contexts;"
            " used_memory + is INFO growth, MEMORY USAGE the sum over the keys",
        ]
    )


def chart(r: dict[str, Any], path: Path) -> None:
    env, timings, mem = r["environment"], r["timings"], r["memory"]
    names = list(r["contenders"])
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"]
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[2.2, 1])
    width = 0.8 / len(names)
    p90s = [timings[m][n]["p90_ms"] for m in MEASURES for n in names]
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(MEASURES))]
        values = [timings[m][name]["median_ms"] for m in MEASURES]
        whiskers = [
            [0] * len(values),
            [timings[m][name]["p90_ms"] - v for m, v in zip(MEASURES, values, strict=True)],
        ]
        bars = left.bar(
            xs,
            values,
            width,
            yerr=whiskers,
            capsize=3,
            label=name,
            color=colors[i % len(colors)],
            error_kw={"elinewidth": 0.8, "ecolor": "#444444"},
        )
        left.bar_label(bars, fmt="%.2f", fontsize=8, label_type="center", color="white")
    if max(p90s) / min(p90s) > 20:  # log only when linear bars would be unreadable
        left.set_yscale("log")
        left.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    else:
        left.set_ylim(0, max(p90s) * 1.2)
    left.set_xticks(range(len(MEASURES)), [LABELS[m] for m in MEASURES])
    left.set_ylabel("ms per operation (lower is better)")
    left.legend(loc="upper right", ncols=2, fontsize=9)
    left.set_title(
        f"300 KB context: bar = median, whisker = p90, {r['method']['iterations']} interleaved"
        " iterations",
        fontsize=10,
    )

    per_1000 = [mem[n]["per_1000_bytes"] / 1e6 for n in names]
    bars = right.bar(names, per_1000, color=[colors[i % len(colors)] for i in range(len(names))])
    labels = [
        f"{mb:,.0f} MB\n{mem[n]['fraction_of_raw']:.0%} of raw"
        for mb, n in zip(per_1000, names, strict=True)
    ]
    right.bar_label(bars, labels, fontsize=8, padding=2)
    raw_mb = mem["raw_json_bytes_per_1000"] / 1e6
    right.axhline(raw_mb, color="black", linestyle="--", linewidth=1)
    right.annotate(
        f"raw JSON {raw_mb:,.0f} MB",
        (-0.4, raw_mb),
        xytext=(0, 4),
        textcoords="offset points",
        fontsize=8,
    )
    right.set_ylim(top=max([*per_1000, raw_mb]) * 1.25)
    right.set_ylabel("Redis used_memory per 1,000 contexts, MB")
    right.set_title("memory per 1,000 cached contexts")
    right.tick_params(axis="x", labelsize=8)
    cpu = env["cpu"].replace(" logical CPUs", " cores")
    fig.suptitle(
        f"ctxcache vs peers on Redis {env['redis_server']} - {env['date'][:10]} - {cpu}",
        fontsize=12,
    )
    fig.savefig(path, dpi=110)
