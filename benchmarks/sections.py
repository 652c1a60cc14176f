"""Sections suite (issue 9): company sections cached once per company, on the sample salon.

* Memory: Redis ``used_memory`` growth and ``MEMORY USAGE`` for 10,000
  clients of one company, and for 100 companies x 100 clients, each cached by
  ``load_full_context`` with :class:`~ctxcache.sample_salon.SqlContextLoader`.
  The old layout (a whole context per client) is measured in the same run on
  a sample of 1,000 of those clients and projected: a second cache whose only
  company section is a name no context has, so every context is stored whole.
* Full hit (in-process cache off) next to its floor, the same stored bytes
  fetched with one ``MGET`` and decoded (zstd + orjson), and next to the old
  layout's single-value hit; round-robin, medians of the same run.
* Database time: the loader's time for the first load of a new client of a
  company whose sections are cached, against a full load (sections dropped).
* Staleness after a booking: A books the slot B is offered; from the call of
  ``tasks.booking_created(A)`` (a real worker consuming its queue) until B's
  next ``load_full_context`` no longer offers the slot.

Runs against ``--url`` (else ``CTXCACHE_REDIS_URL``, else local db 0); writes
only keys under ``ctxcache-bench:`` (the Redis broker's under
``ctxcache-bench:broker:``), deleted at start and end. The sample databases
are built in a temporary directory and removed after.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis
import zstandard

import tasks
from benchmarks.celery_tasks import BROKER_KEY_PREFIX, celery_worker, purge_queues
from benchmarks.common import (
    NAMESPACE,
    bench_cache,
    bench_url,
    delete_bench_keys,
    ensure_room,
    environment,
    iteration_options,
    memory_usage,
    ms,
    round_robin,
    summary,
    table,
    used_memory,
    write_results,
)
from ctxcache import ContextCache
from ctxcache import sample_salon as salon
from ctxcache.core.wire import HEADER_SIZE
from ctxcache.demo.sections import first_offered_slot, offers
from ctxcache.sample_salon.database import read_snapshot
from tasks import runtime

OLD_PREFIX = NAMESPACE + "old:"  # the old layout's values, beside the sectioned ones
NO_SECTION = "ctxcache-bench-no-section"  # a company section no context has: one value each
COMPANY_ID = salon.FIRST_COMPANY_ID
LIBRARIES = ("redis", "hiredis", "orjson", "zstandard", "celery")
TARGET_MEMORY_BYTES = 0.1e9  # 10,000 clients of one company
TARGET_HIT_RATIO = 1.3  # full hit / its floor, medians
TARGET_STALE_P99_MS = 20.0
STALE_TIMEOUT_S = 5.0
UNTIMED_BOOKINGS = 5


class TimedLoader:
    """The sample salon's loader in its sectioned form, timing each call (database time)."""

    def __init__(self, path: Path) -> None:
        self.inner = salon.SqlContextLoader(path)
        self.calls: list[tuple[str, float]] = []

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return self.inner.load_client(phone, company_id)
        finally:
            self.calls.append(("client", time.perf_counter() - started))

    def load_company_sections(self, company_id: int, sections: Sequence[str]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return self.inner.load_company_sections(company_id, sections)
        finally:
            self.calls.append(("company", time.perf_counter() - started))

    def take(self) -> list[tuple[str, float]]:
        calls, self.calls = self.calls, []
        return calls


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/sections[.quick].json``."""
    quick, iterations, warmup = iteration_options(args)
    one_company = 300 if quick else 10_000
    grid = (5, 20) if quick else (100, 100)
    old_sample = 50 if quick else 1000
    bookings = min(20, iterations) if quick else 300
    pairs = min(5, iterations) if quick else 50
    url = bench_url(args)
    admin = redis.Redis.from_url(url)
    ensure_room(admin, one_company * 20_000 + old_sample * 90_000, url)
    cache = bench_cache(url, l1_max_bytes=0)  # the layout's own cost: no in-process cache
    old = bench_cache(
        url, OLD_PREFIX, company_sections=NO_SECTION, booking_sections=NO_SECTION, l1_max_bytes=0
    )
    delete_bench_keys(admin)  # an interrupted run's
    results: dict[str, Any] = {
        "suite": "sections",
        "quick": quick,
        "environment": environment(admin, url, LIBRARIES),
        "method": {
            "iterations": iterations,
            "warmup": warmup,
            "layout": ",".join(cache.core.layout.company_sections),
            "old_layout": f"whole context per client (CTXCACHE_COMPANY_SECTIONS={NO_SECTION})",
            "l1": "off (CTXCACHE_L1_MAX_BYTES=0) unless named",
        },
    }
    try:
        with tempfile.TemporaryDirectory(prefix="ctxcache-bench-") as tmp:
            big = salon.create_sample_database(
                Path(tmp) / "one.sqlite3", companies=1, clients_per_company=one_company
            )
            many = salon.create_sample_database(
                Path(tmp) / "grid.sqlite3", companies=grid[0], clients_per_company=grid[1]
            )
            results["memory"] = {
                "one_company": measure_memory(admin, cache, old, big, old_sample, target=True),
                "grid": measure_memory(admin, cache, old, many, old_sample, target=False),
            }
            loader = TimedLoader(many)
            results["hit"] = measure_hit(admin, cache, old, url, loader, iterations, warmup)
            results["database"] = measure_database(cache, loader, many, pairs)
            delete_bench_keys(admin)
            results["staleness"] = measure_staleness(url, cache, loader, many, bookings, Path(tmp))
    finally:
        runtime.reset()
        old.close()
        cache.close()
        delete_bench_keys(admin)
        admin.close()
    print(report(results))
    out = write_results("sections", quick, results, getattr(args, "results", None))
    print(f"\nfigures written to {out}")
    return results


# -- memory ------------------------------------------------------------------------------


def companies_of(path: Path) -> list[int]:
    with read_snapshot(path) as conn:
        return [int(row[0]) for row in conn.execute("SELECT id FROM companies ORDER BY id")]


def measure_memory(
    admin: redis.Redis,
    cache: ContextCache,
    old: ContextCache,
    path: Path,
    old_sample: int,
    *,
    target: bool,
) -> dict[str, Any]:
    """Every client of the database cached by section; a sample of them as whole values."""
    delete_bench_keys(admin)
    loader = salon.SqlContextLoader(path)
    clients = [
        (phone, cid)
        for cid in companies_of(path)
        for phone in salon.sample_clients(path, cid, 10**6)
    ]
    before, started = used_memory(admin), time.monotonic()
    for phone, cid in clients:
        if cache.load_full_context(phone, cid, loader) is None:
            raise RuntimeError(f"the sample database does not know {phone}")
    sectioned_delta = used_memory(admin) - before
    seconds = time.monotonic() - started
    layout = cache.core.layout
    parts = memory_usage(admin, (cache.client_keys(p, c).full_context for p, c in clients))
    company_ids = sorted({cid for _, cid in clients})
    sections = memory_usage(
        admin,
        (
            key
            for cid in company_ids
            for key in cache.keys.company(cid).sections(layout.company_sections)
        ),
    )
    step = max(1, len(clients) // old_sample)
    sample = clients[::step][:old_sample]
    before = used_memory(admin)
    for phone, cid in sample:
        context = cache.get_cached_full_context(phone, cid)
        assert context is not None
        assert old.set_cached_full_context(phone, cid, context)
    old_delta = used_memory(admin) - before
    old_usage = memory_usage(admin, (old.client_keys(p, c).full_context for p, c in sample))
    delete_bench_keys(admin)
    scale = len(clients) / len(sample)
    result: dict[str, Any] = {
        "companies": len(company_ids),
        "clients": len(clients),
        "load_seconds": round(seconds, 1),
        "sectioned": {
            "used_memory_delta": sectioned_delta,
            "memory_usage": parts + sections,
            "client_parts": parts,
            "company_sections": sections,
            "per_client_part": round(parts / len(clients)),
        },
        "old_layout": {
            "sample": len(sample),
            "used_memory_delta": old_delta,
            "memory_usage": old_usage,
            "projected_used_memory": round(old_delta * scale),
            "projected_memory_usage": round(old_usage * scale),
            "per_client": round(old_usage / len(sample)),
        },
        "old_over_sectioned": round(old_delta * scale / sectioned_delta, 1),
    }
    if target:
        projected = sectioned_delta * 10_000 / len(clients)
        result.update(target_bytes=TARGET_MEMORY_BYTES, pass_=projected <= TARGET_MEMORY_BYTES)
        result["pass"] = result.pop("pass_")
    return result


# -- hit ---------------------------------------------------------------------------------


def floor_decode(raw: bytes, decompressor: zstandard.ZstdDecompressor) -> Any:
    """A stored part's JSON, decoded: skip the envelope and its metadata, unzstd, orjson."""
    (meta_size,) = struct.unpack_from(">H", raw, HEADER_SIZE - 2)
    payload = raw[HEADER_SIZE + meta_size :]
    if raw[6]:  # the encoding byte: 1 is zstd
        payload = decompressor.decompress(payload)
    return orjson.loads(payload)


def measure_hit(
    admin: redis.Redis,
    cache: ContextCache,
    old: ContextCache,
    url: str,
    loader: TimedLoader,
    iterations: int,
    warmup: int,
) -> dict[str, Any]:
    """A full hit, by section and as one value, next to the floor of the same stored bytes."""
    phone = salon.sample_clients(loader.inner.path, COMPANY_ID, 1)[0]
    context = cache.load_full_context(phone, COMPANY_ID, loader)
    assert context is not None
    assert old.set_cached_full_context(phone, COMPANY_ID, context)
    who = cache.core.identify(phone, COMPANY_ID)
    stored = [
        who.client.full_context,
        *who.company.sections(cache.core.layout.company_sections),
    ]
    floor_keys = [f"{NAMESPACE}floor:{i}" for i in range(len(stored))]
    for key, floor_key in zip(stored, floor_keys, strict=True):
        admin.set(floor_key, admin.get(key) or b"", ex=3600)
    sizes = [len(admin.get(key) or b"") for key in stored]
    floor = redis.Redis.from_url(url)
    decompressor = zstandard.ZstdDecompressor()
    with_l1 = bench_cache(url)  # the default in-process cache, for reference

    def floor_hit() -> list[Any]:
        raws: list[bytes] = floor.mget(floor_keys)  # type: ignore[assignment]
        return [floor_decode(raw, decompressor) for raw in raws]

    try:
        ops: dict[str, Callable[[], object]] = {
            "sectioned": lambda: cache.get_cached_full_context(phone, COMPANY_ID),
            "old_layout": lambda: old.get_cached_full_context(phone, COMPANY_ID),
            "floor": floor_hit,
            "sectioned_l1_default": lambda: with_l1.get_cached_full_context(phone, COMPANY_ID),
        }
        for name, op in ops.items():
            got = op()
            if name == "floor":
                assert isinstance(got, list), got
                assert len(got) == len(stored), "the floor did not read every part"
            else:
                assert got == context, f"{name} did not read the context back"
        misses = (cache.stats().misses, old.stats().misses)
        ns = round_robin(ops, iterations, warmup)
        assert cache.stats().misses == misses[0], "a timed sectioned hit missed"
        assert old.stats().misses == misses[1], "a timed old-layout hit missed"
        l1_mode = with_l1.settings.l1_mode
    finally:
        with_l1.close()
        floor.close()
    figures = {name: summary(values) for name, values in ns.items()}
    base = figures["floor"]["median_ms"]
    ratio = figures["sectioned"]["median_ms"] / base
    vs_old = figures["sectioned"]["median_ms"] / figures["old_layout"]["median_ms"]
    return {
        "context_json_bytes": len(orjson.dumps(context)),
        "stored_bytes": sizes,
        "old_layout_bytes": len(admin.get(old.client_keys(phone, COMPANY_ID).full_context) or b""),
        "floor_is": f"one MGET of the {len(stored)} stored values, envelope skipped, zstd + orjson",
        "l1_default_mode": l1_mode,
        **figures,
        "ratio_to_floor": round(ratio, 3),
        "ratio_to_old_layout": round(vs_old, 3),
        "target_ratio": TARGET_HIT_RATIO,
        "pass": ratio <= TARGET_HIT_RATIO and vs_old <= 1.0,
    }


# -- database time -----------------------------------------------------------------------


def measure_database(
    cache: ContextCache, loader: TimedLoader, path: Path, pairs: int
) -> dict[str, Any]:
    """First loads of new clients: company sections dropped first (a full load), or cached."""
    companies = companies_of(path)[1:] or companies_of(path)
    phones = {cid: salon.sample_clients(path, cid, 10**6)[1:] for cid in companies}  # not the hit's
    todo = []  # (cold, warm) pairs of new clients of one company
    for j in range(pairs):
        cid = companies[j % len(companies)]
        first = 2 * (j // len(companies))
        todo += [(phone, cid) for phone in phones[cid][first : first + 2]]
    samples: dict[str, list[tuple[float, float]]] = {"full": [], "own_part": []}
    loader.take()
    for i in range(2 * pairs):
        phone, cid = todo[i]
        cold = i % 2 == 0
        if cold:
            assert cache.invalidate_company(cid)
        else:  # the company is cached by the cold load just before
            assert cache.get_cached_full_context(todo[i - 1][0], cid) is not None
        started = time.perf_counter()
        assert cache.load_full_context(phone, cid, loader) is not None
        total = time.perf_counter() - started
        calls = loader.take()
        expected = ["client", "company"] if cold else ["client"]
        assert sorted(kind for kind, _ in calls) == expected, calls
        samples["full" if cold else "own_part"].append((sum(s for _, s in calls), total))
    figures: dict[str, Any] = {"pairs": pairs}
    for name, rows in samples.items():
        figures[name] = {
            "database_ms": round(statistics.median(s for s, _ in rows) * 1000, 3),
            "load_full_context_ms": round(statistics.median(t for _, t in rows) * 1000, 3),
        }
    figures["saved"] = round(
        1 - figures["own_part"]["database_ms"] / figures["full"]["database_ms"], 4
    )
    return figures


# -- staleness ---------------------------------------------------------------------------


def measure_staleness(
    url: str, cache: ContextCache, loader: TimedLoader, path: Path, bookings: int, tmp: Path
) -> dict[str, Any]:
    """A books B's first offered slot; until when B's next load still offers it."""
    runtime.configure(cache=cache)
    app = tasks.create_app(broker_url=url)
    options = app.conf.broker_transport_options
    app.conf.broker_transport_options = {**options, "global_keyprefix": BROKER_KEY_PREFIX}
    purge_queues(app)
    phones = salon.sample_clients(path, COMPANY_ID, 10**6)
    env = {"CTXCACHE_REDIS_URL": url, "CTXCACHE_BROKER_URL": url}
    hook: list[int] = []
    fresh_from: list[int] = []  # call -> start of the first read that no longer offered it
    read_done: list[int] = []  # call -> end of that read (a reload of the availability)
    stale_before = fresh_first = 0
    try:
        with celery_worker(app, env, tmp / "worker.log"):
            for i in range(UNTIMED_BOOKINGS + bookings):
                b, a = phones[(2 * i) % len(phones)], phones[(2 * i + 1) % len(phones)]
                before = cache.load_full_context(b, COMPANY_ID, loader)
                assert before is not None
                staff_id, start = slot = first_offered_slot(before)
                salon.create_booking(path, a, COMPANY_ID, staff_id=staff_id, start=start)
                cached = cache.get_cached_full_context(b, COMPANY_ID)
                stale_before += cached is not None and offers(cached, slot)
                called = time.perf_counter_ns()
                outcome = tasks.booking_created(a, COMPANY_ID, app=app)
                returned = time.perf_counter_ns()
                assert outcome.applied, outcome
                assert outcome.queued, outcome
                reads = 0
                while True:
                    read_start = time.perf_counter_ns()
                    context = cache.load_full_context(b, COMPANY_ID, loader)
                    read_end = time.perf_counter_ns()
                    if context is not None and not offers(context, slot):
                        break
                    reads += 1
                    if read_end - called > STALE_TIMEOUT_S * 1e9:
                        raise RuntimeError(f"B still offered {slot} after {STALE_TIMEOUT_S} s")
                if i < UNTIMED_BOOKINGS:
                    continue
                fresh_first += reads == 0
                hook.append(returned - called)
                fresh_from.append(read_start - called)
                read_done.append(read_end - called)
    finally:
        purge_queues(app)
        app.close()
        loader.take()
    stale = percentiles(fresh_from)
    return {
        "bookings": bookings,
        "untimed": UNTIMED_BOOKINGS,
        "stale_before_hook": stale_before,
        "fresh_at_first_read_after_hook": fresh_first,
        "hook": percentiles(hook),
        "stale_until": stale,
        "read_completed": percentiles(read_done),
        "target_p99_ms": TARGET_STALE_P99_MS,
        "pass": fresh_first == bookings and stale["p99_ms"] <= TARGET_STALE_P99_MS,
    }


def percentiles(ns: list[int]) -> dict[str, float]:
    values = sorted(n / 1e6 for n in ns)
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else 0.0
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(values[-1], 3),
    }


# -- report ------------------------------------------------------------------------------


def gb(value: float) -> str:
    return f"{value / 1e9:.3f} GB" if value >= 1e8 else f"{value / 1e6:,.1f} MB"


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(r: dict[str, Any]) -> str:
    env = r["environment"]
    memory = [["memory", "clients", "by section (used_memory +)", "MEMORY USAGE", "old layout"]]
    memory[0] += ["old / new", "target"]
    for name, m in r["memory"].items():
        s, o = m["sectioned"], m["old_layout"]
        label = "one company" if name == "one_company" else f"{m['companies']} companies"
        verdict = f"<= 0.1 GB {mark(m['pass'])}" if "pass" in m else ""
        memory.append(
            [
                label,
                f"{m['clients']:,}",
                gb(s["used_memory_delta"]),
                gb(s["memory_usage"]),
                f"{gb(o['projected_used_memory'])} (from {o['sample']:,})",
                f"{m['old_over_sectioned']}x",
                verdict,
            ]
        )
    h = r["hit"]
    hits = [["full hit", "p50", "p90", "vs floor"]]
    for name in ("sectioned", "old_layout", "floor", "sectioned_l1_default"):
        ratio = h[name]["median_ms"] / h["floor"]["median_ms"]
        hits.append([name, ms(h[name]["median_ms"]), ms(h[name]["p90_ms"]), f"{ratio:.2f}"])
    d, st = r["database"], r["staleness"]
    return "\n".join(
        [
            f"ctxcache sections benchmark{' (quick)' if r['quick'] else ''}, {env['date']}",
            f"  cpu {env['cpu']}, python {env['python']}, redis-server {env['redis_server']}"
            f" at {env['redis_url']}",
            "",
            table(memory),
            "",
            table(hits),
            f"  floor: {h['floor_is']}; sectioned/floor {h['ratio_to_floor']:.2f}"
            f" (<= {TARGET_HIT_RATIO}), sectioned/old layout {h['ratio_to_old_layout']:.2f}"
            f" (<= 1): {mark(h['pass'])}",
            "",
            f"database time, first load of a new client (medians of {d['pairs']} each):"
            f" full {ms(d['full']['database_ms'])}, own part only (company cached)"
            f" {ms(d['own_part']['database_ms'])}: {d['saved']:.1%} saved",
            "",
            f"staleness after a booking ({st['bookings']} bookings, real worker):"
            f" fresh at the first read after the hook {st['fresh_at_first_read_after_hook']}"
            f"/{st['bookings']}; stale until p50 {ms(st['stale_until']['p50_ms'])},"
            f" p99 {ms(st['stale_until']['p99_ms'])} (<= {TARGET_STALE_P99_MS} ms):"
            f" {mark(st['pass'])}; hook p50 {ms(st['hook']['p50_ms'])};"
            f" that read done p50 {ms(st['read_completed']['p50_ms'])}",
        ]
    )
