"""L1 suite (issue 10): the in-process cache's hits per mode, and early refresh.

* Hits: a client whose parts are in the in-process cache, read through one
  cache per ``CTXCACHE_L1_MODE`` (``copy``, ``shared-company``, ``shared``) and
  one with the in-process cache off, next to dogpile.cache's pickle hit on the
  same 300 KB context; round-robin, medians of the same run.
* First hit of a new client of a company whose sections are in L1, against a
  full hit without L1.
* Bytes per hit on the wire: request bytes as sent, reply bulk-string bytes
  as read, with every part in L1 and without.
* What the mutation contract costs, on the company part of the context:
  ``copy.deepcopy``, ``orjson.loads`` (copy mode's fresh decoding), ``freeze``
  (shared modes, once per version), ``thaw`` (a caller's private copy of a
  shared section).
* Early refresh: requests over 1,000 clients of 10 companies (Zipf), short
  TTLs and a loader of fixed duration, run with XFetch off and on, and with
  a stale grace of one TTL and of the run's length: how many requests waited
  for a load (for a part's first load, or after it expired), and how many
  loads there were.

Runs against ``--url`` (else ``CTXCACHE_REDIS_URL``, else local db 0); writes
only keys under ``ctxcache-bench:`` (and dogpile's lock
``_lockctxcache-bench:*``), deleted at start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import orjson
import redis
import redis.connection

from benchmarks.coherence import measure_coherence
from benchmarks.common import (
    NAMESPACE,
    bench_cache,
    bench_url,
    delete_bench_keys,
    ensure_room,
    environment,
    iteration_options,
    load_fixture,
    ms,
    round_robin,
    summary,
    table,
    write_results,
)
from benchmarks.dogpile_peer import DOGPILE_KEY, DOGPILE_LOCKS, dogpile_region
from ctxcache import CacheSettings, ContextCache
from ctxcache.core.l1 import L1_MODES, freeze, thaw

PHONE = "+79001234567"
COMPANY_ID = 962302
L1_BYTES = 64 * 1024 * 1024
LIBRARIES = ("redis", "hiredis", "orjson", "zstandard", "dogpile.cache")
TARGET_DEFAULT_VS_DOGPILE = 0.5  # the default mode's hit / dogpile's, medians
TARGET_SHARED_MS = 0.1  # "a mode that hands out read-only shared sections should reach about"
# Early refresh: the simulated run.
REFRESH_CLIENTS, REFRESH_COMPANIES = 1000, 10
ZIPF_S = 1.0
LOAD_SECONDS = 0.05
WAITED_S = LOAD_SECONDS / 2  # slower than this without waiting for a load: the machine
BETAS = (0.0, 1.0, 10.0)  # off, the default, and an eager one
# Then beta 1 with a stale grace (CTXCACHE_STALE_GRACE) of one TTL, and of the run.
GRACE_BETA = 1.0
REQUEST_THREADS = 16  # a service's concurrent requests: one waiting does not stall the rest


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/l1[.quick].json``; return the figures."""
    quick, iterations, warmup = iteration_options(args)
    url = bench_url(args)
    _, raw_json, context = load_fixture()
    admin = redis.Redis.from_url(url)
    ensure_room(admin, (iterations + warmup) * 20_000 + 2 * len(raw_json), url)
    delete_bench_keys(admin, DOGPILE_LOCKS)  # an interrupted run's
    caches = {mode: bench_cache(url, l1_mode=mode, l1_max_bytes=L1_BYTES) for mode in L1_MODES}
    caches["off"] = bench_cache(url, l1_max_bytes=0)
    region = dogpile_region(url)
    default_mode = bench_cache(url).settings.l1_mode
    results: dict[str, Any] = {
        "suite": "l1",
        "quick": quick,
        "environment": environment(admin, url, LIBRARIES),
        "method": {
            "iterations": iterations,
            "warmup": warmup,
            "order": "round-robin, start rotating each iteration",
            "context_json_bytes": len(raw_json),
            "default_mode": default_mode,
        },
    }
    try:
        results["hit"] = measure_hits(caches, region, context, iterations, warmup, default_mode)
        results["wire"] = measure_wire(caches, region)
        results["new_client"] = measure_new_client(caches, context, iterations, warmup)
        results["mutation"] = measure_mutation(caches["off"], context, iterations, warmup)
        delete_bench_keys(admin, DOGPILE_LOCKS)
        results["coherence"] = measure_coherence(url, 1.0 if quick else 10.0)
        delete_bench_keys(admin, DOGPILE_LOCKS)
        duration = min(3.0, iterations / 10) if quick else 20.0  # --iterations 5: 0.5 s
        ttl = 1 if quick else 5
        rate = 100.0 if quick else 200.0
        results["early_refresh"] = {
            "method": {
                "clients": REFRESH_CLIENTS,
                "companies": REFRESH_COMPANIES,
                "zipf_s": ZIPF_S,
                "ttl_s": ttl,
                "loader_s_per_call": LOAD_SECONDS,
                "duration_s": duration,
                "requests_per_s": rate,
                "slow_if_over_ms": WAITED_S * 1000,
                "request_threads": REQUEST_THREADS,
            },
            **{
                f"beta_{beta:g}": measure_early_refresh(
                    admin, url, context, beta, ttl, duration, rate
                )
                for beta in BETAS
            },
            **{
                grace_row(grace): measure_early_refresh(
                    admin, url, context, GRACE_BETA, ttl, duration, rate, grace=grace
                )
                for grace in graces(ttl, duration)
            },
        }
    finally:
        for cache in caches.values():
            cache.close()
        region.backend.writer_client.close()
        delete_bench_keys(admin, DOGPILE_LOCKS)
        admin.close()
    print(report(results))
    out = write_results("l1", quick, results, getattr(args, "results", None))
    print(f"\nfigures written to {out}")
    return results


# -- hits --------------------------------------------------------------------------------


def hit_of(cache: ContextCache, phone: str = PHONE) -> Callable[[], object]:
    return lambda: cache.get_cached_full_context(phone, COMPANY_ID)


def measure_hits(
    caches: dict[str, ContextCache],
    region: Any,
    context: dict[str, Any],
    iterations: int,
    warmup: int,
    default_mode: str,
) -> dict[str, Any]:
    """A repeated hit of one client in every mode, and dogpile's, round-robin."""
    assert caches["off"].set_cached_full_context(PHONE, COMPANY_ID, context)
    region.set(DOGPILE_KEY, context)
    ops = {name: hit_of(cache) for name, cache in caches.items()}
    ops["dogpile"] = lambda: region.get(DOGPILE_KEY)
    for name, op in ops.items():
        assert op() == context, f"{name} did not read the context back"
    # The floor of any hit that proves its parts current: one small round trip.
    ops["ping"] = caches["off"].client.ping
    before = {name: cache.stats() for name, cache in caches.items()}
    ns = round_robin(ops, iterations, warmup)
    for name, cache in caches.items():
        after = cache.stats()
        assert after.misses == before[name].misses, f"a timed {name} hit missed"
    figures: dict[str, Any] = {name: summary(values) for name, values in ns.items()}
    dogpile = figures["dogpile"]["median_ms"]
    for name in ops:
        figures[name]["vs_dogpile"] = round(figures[name]["median_ms"] / dogpile, 3)
    default_ratio = figures[default_mode]["vs_dogpile"]
    shared = figures["shared"]["median_ms"]
    round_trip = figures["ping"]["median_ms"]
    figures["target"] = {
        "default_mode": default_mode,
        "default_vs_dogpile": default_ratio,
        "default_max_vs_dogpile": TARGET_DEFAULT_VS_DOGPILE,
        "pass_default": default_ratio <= TARGET_DEFAULT_VS_DOGPILE,
        "shared_about_ms": TARGET_SHARED_MS,
        "shared_ms": shared,
        "ping_ms": round_trip,
        "shared_vs_ping": round(shared / round_trip, 3),
        "modes_meeting_default_target": [
            m for m in L1_MODES if figures[m]["vs_dogpile"] <= TARGET_DEFAULT_VS_DOGPILE
        ],
    }
    return figures


@contextlib.contextmanager
def counting_bytes() -> Iterator[dict[str, int]]:
    """Bytes written by every blocking redis-py connection, and the RESP2 size of its replies."""
    counts = {"sent": 0, "received": 0}
    cls = redis.connection.AbstractConnection
    send, read = cls.send_packed_command, cls.read_response

    def sized(value: object) -> int:
        """The RESP2 encoding's size of a parsed reply."""
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):  # $<len>\r\n<bytes>\r\n
            return len(value) + len(str(len(value))) + 5
        if isinstance(value, list | tuple):  # *<n>\r\n<items>
            return len(str(len(value))) + 3 + sum(sized(item) for item in value)
        return len(str(value)) + 3  # :<int>\r\n (or a status line)

    def counted_send(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        chunks = [command] if isinstance(command, bytes | str) else command
        counts["sent"] += sum(len(chunk) for chunk in chunks)
        return send(self, command, *args, **kwargs)  # type: ignore[no-untyped-call]

    def counted_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        reply = read(self, *args, **kwargs)
        counts["received"] += sized(reply)
        return reply

    with (
        mock.patch.object(cls, "send_packed_command", counted_send),
        mock.patch.object(cls, "read_response", counted_read),
    ):
        yield counts


def measure_wire(caches: dict[str, ContextCache], region: Any, n: int = 20) -> dict[str, Any]:
    """Bytes per hit on the wire: every part in L1 (default mode), L1 off, dogpile."""
    ops: dict[str, Callable[[], object]] = {
        "all_parts_in_l1": hit_of(caches["copy"]),
        "l1_off": hit_of(caches["off"]),
        "dogpile": lambda: region.get(DOGPILE_KEY),
    }
    figures: dict[str, Any] = {"hits": n}
    for name, op in ops.items():
        op()  # L1 filled, connection made
        with counting_bytes() as counts:
            for _ in range(n):
                op()
        figures[name] = {"sent": counts["sent"] // n, "received": counts["received"] // n}
    return figures


def measure_new_client(
    caches: dict[str, ContextCache], context: dict[str, Any], iterations: int, warmup: int
) -> dict[str, Any]:
    """First hit of a client never read before, its company's sections in L1; and without L1."""
    count = iterations + warmup
    phones = [f"+7901{i:07d}" for i in range(count + 1)]
    writer = caches["off"]
    for phone in phones:  # the company sections written last stay: every L1 refetches them once
        assert writer.set_cached_full_context(phone, COMPANY_ID, context)
    for cache in caches.values():
        assert cache.get_cached_full_context(phones[-1], COMPANY_ID) == context  # sections in L1

    def first_hits(cache: ContextCache) -> Callable[[], object]:
        queue = iter(phones[:count])
        return lambda: cache.get_cached_full_context(next(queue), COMPANY_ID)

    ops = {name: first_hits(cache) for name, cache in caches.items()}
    ns = round_robin(ops, iterations, warmup)
    figures: dict[str, Any] = {name: summary(values) for name, values in ns.items()}
    base = figures["off"]["median_ms"]
    for name in ops:
        figures[name]["vs_l1_off"] = round(figures[name]["median_ms"] / base, 3)
    return figures


def measure_mutation(
    cache: ContextCache, context: dict[str, Any], iterations: int, warmup: int
) -> dict[str, Any]:
    """What each way of keeping callers apart costs on the company part of the context."""
    layout = cache.core.layout
    company = {name: value for name, value in context.items() if layout.is_company(name)}
    data = orjson.dumps(company)
    frozen = freeze(company)
    ops: dict[str, Callable[[], object]] = {
        "deepcopy": lambda: copy.deepcopy(company),
        "orjson_loads": lambda: orjson.loads(data),
        "freeze": lambda: freeze(company),
        "thaw": lambda: thaw(frozen),
        "shared_hand_out": lambda: dict(frozen),
    }
    n = max(10, iterations // 3)
    ns = round_robin(ops, n, max(3, warmup // 3))
    figures: dict[str, Any] = {"company_part_json_bytes": len(data)}
    figures.update({name: summary(values) for name, values in ns.items()})
    return figures


# -- early refresh -----------------------------------------------------------------------


class FixedLoader:
    """A sectioned loader whose every call takes ``LOAD_SECONDS``.

    Calls made by a request (a thread that set ``local.parts``) are listed
    there; the rest come from early-refresh threads and are only counted.
    """

    def __init__(self, context: dict[str, Any], company_sections: Sequence[str]) -> None:
        self.client = {k: v for k, v in context.items() if k not in company_sections}
        self.company = {k: v for k, v in context.items() if k in company_sections}
        self.local = threading.local()
        self.lock = threading.Lock()
        self.foreground = 0
        self.background = 0

    def _count(self, part: str) -> None:
        time.sleep(LOAD_SECONDS)
        parts: list[str] | None = getattr(self.local, "parts", None)
        with self.lock:
            if parts is None:
                self.background += 1
            else:
                self.foreground += 1
                parts.append(part)

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        self._count("client")
        return {**self.client, "phone": phone}

    def load_company_sections(self, company_id: int, sections: Sequence[str]) -> dict[str, Any]:
        self._count("company")
        return {name: self.company[name] for name in sections}


def zipf_requests(count: int, seed: int = 10) -> list[int]:
    """``count`` client indexes drawn from Zipf(``ZIPF_S``) over the clients, seeded."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** ZIPF_S for rank in range(REFRESH_CLIENTS)]
    order = list(range(REFRESH_CLIENTS))
    rng.shuffle(order)  # popularity not tied to the company: ranks spread over companies
    return [order[i] for i in rng.choices(range(REFRESH_CLIENTS), weights, k=count)]


def graces(ttl: int, duration: float) -> tuple[int, ...]:
    """The stale graces tried with XFetch: one TTL, and one that spans the run.

    With TTL + grace at least the run's length, every client that comes back
    finds its parts, at worst stale; without it, a client away longer than
    TTL + grace waits as for a first load, since nothing read its parts to
    refresh them.
    """
    return tuple(sorted({ttl, max(ttl, math.ceil(duration - ttl))}))


def grace_row(grace: int) -> str:
    """The results key of the run with a stale grace of ``grace`` seconds."""
    return f"beta_{GRACE_BETA:g}_grace_{grace:g}"


def measure_early_refresh(
    admin: redis.Redis,
    url: str,
    context: dict[str, Any],
    beta: float,
    ttl: int,
    duration: float,
    rate: float,
    *,
    grace: float = 0.0,
) -> dict[str, Any]:
    """Paced traffic from ``REQUEST_THREADS``; which requests waited for a load."""
    delete_bench_keys(admin)
    polled = threading.local()  # whether this request paused for another's load

    def sleep(seconds: float) -> None:
        polled.yes = True
        time.sleep(seconds)

    settings = CacheSettings.load(
        redis_url=url,
        key_prefix=NAMESPACE,
        full_context_ttl=ttl,
        early_refresh_beta=beta,
        stale_grace=grace,
    )
    cache = ContextCache.from_settings(settings, sleep=sleep)
    loader = FixedLoader(context, cache.core.layout.company_sections)
    requests = zipf_requests(int(duration * rate))
    lock = threading.Lock()
    last_seen: dict[str, float] = {}  # part -> when a request last began reading it
    stored: set[str] = set()  # parts a request has loaded (or found) at least once
    waits = {"first_ever": 0, "client_expired": 0, "company_expired": 0, "load_elsewhere": 0}
    slow_no_wait = 0  # took half a load or more without waiting for one: the machine
    within_ttl = 0  # waits on a part some request had read within its TTL: XFetch's chance
    slow: list[float] = []

    def serve(client: int) -> None:
        nonlocal within_ttl, slow_no_wait
        company = COMPANY_ID + client % REFRESH_COMPANIES
        parts = {"client": f"client:{client}", "company": f"company:{company}"}
        t0 = time.perf_counter()
        with lock:
            previous = {kind: last_seen.get(part) for kind, part in parts.items()}
            first = {kind for kind, part in parts.items() if part not in stored}
            last_seen.update((part, t0) for part in parts.values())
        loaded: list[str] = []
        loader.local.parts, polled.yes = loaded, False
        try:
            got = cache.load_full_context(f"+7902{client:07d}", company, loader)
        finally:
            loader.local.parts = None
        elapsed = time.perf_counter() - t0
        assert got is not None
        with lock:
            stored.update(parts.values())
        if not (loaded or polled.yes):
            if elapsed >= WAITED_S:
                with lock:
                    slow_no_wait += 1
            return
        with lock:
            slow.append(elapsed)
            kinds = loaded or list(parts)
            if first.intersection(kinds):  # loaded it first, or waited for its first load
                waits["first_ever"] += 1
            elif not loaded:
                waits["load_elsewhere"] += 1  # polled while another request loaded
            else:
                waits["company_expired" if "company" in loaded else "client_expired"] += 1
                seen = [previous[kind] for kind in loaded]
                within_ttl += any(t is not None and t0 - t < ttl for t in seen)

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="request") as pool:
            futures = []
            for k, client in enumerate(requests):
                pause = started + k / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                futures.append(pool.submit(serve, client))
            for future in futures:
                future.result()
        behind = time.perf_counter() - started - duration
        stats = cache.stats()
    finally:
        cache.close()  # waits for refreshes in flight
        delete_bench_keys(admin)
    return {
        "beta": beta,
        "stale_grace_s": grace,
        "requests": len(requests),
        "distinct_clients": sum(1 for part in last_seen if part.startswith("client:")),
        "waited": len(slow),
        "waits": waits,
        "waited_after_expiry": waits["client_expired"] + waits["company_expired"],
        "waits_after_expiry_read_within_ttl": within_ttl,
        "slow_without_waiting": slow_no_wait,
        "loads_foreground": loader.foreground,
        "loads_background": loader.background,
        "loads_total": loader.foreground + loader.background,
        "early_refreshes": stats.early_refreshes,
        "stale_hits": stats.stale_hits,
        "waited_p50_ms": round(statistics.median(slow) * 1000, 1) if slow else 0.0,
        "finished_late_s": round(max(0.0, behind), 2),
        "pass": len(slow) == waits["first_ever"],
    }


# -- report ------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(r: dict[str, Any]) -> str:
    env, hit, wire, new, mut = (
        r[k] for k in ("environment", "hit", "wire", "new_client", "mutation")
    )
    hits = [["repeated hit, parts in L1", "p50", "p90", "vs dogpile"]]
    labels = {"off": "L1 off", "ping": "PING (one round trip)"}
    for name in (*L1_MODES, "off", "dogpile", "ping"):
        h = hit[name]
        label = f"L1 {name}" if name in L1_MODES else labels.get(name, name)
        hits.append([label, ms(h["median_ms"]), ms(h["p90_ms"]), f"{h['vs_dogpile']:.2f}x"])
    firsts = [["first hit, new client, company in L1", "p50", "vs L1 off"]]
    for name in (*L1_MODES, "off"):
        firsts.append([name, ms(new[name]["median_ms"]), f"{new[name]['vs_l1_off']:.2f}x"])
    wires = [["bytes per hit", "sent", "received"]]
    for name in ("all_parts_in_l1", "l1_off", "dogpile"):
        wires.append([name, f"{wire[name]['sent']:,}", f"{wire[name]['received']:,}"])
    muts = [[f"company part ({mut['company_part_json_bytes']:,} B of JSON)", "p50"]]
    for name in ("deepcopy", "orjson_loads", "freeze", "thaw", "shared_hand_out"):
        muts.append([name, ms(mut[name]["median_ms"])])
    er = r["early_refresh"]
    refresh = [["early refresh", "requests", "waited", "first-ever", "client expired"]]
    refresh[0] += ["company expired", "on another's load", "loads", "in background", "stale hits"]
    refresh[0].append("target")
    rows = [(f"beta {beta:g}" + (" (off)" if not beta else ""), f"beta_{beta:g}") for beta in BETAS]
    for grace in graces(er["method"]["ttl_s"], er["method"]["duration_s"]):
        rows.append((f"beta {GRACE_BETA:g}, grace {grace:g} s", grace_row(grace)))
    for label, key in rows:
        e = er[key]
        w = e["waits"]  # load_elsewhere: polled for another request's load
        refresh.append(
            [
                label,
                f"{e['requests']:,}",
                str(e["waited"]),
                str(w["first_ever"]),
                str(w["client_expired"]),
                str(w["company_expired"]),
                str(w["load_elsewhere"]),
                str(e["loads_total"]),
                str(e["loads_background"]),
                str(e["stale_hits"]),
                mark(e["pass"]) if e["beta"] or e["stale_grace_s"] else "",
            ]
        )
    t = hit["target"]
    m = er["method"]
    co = r["coherence"]
    return "\n".join(
        [
            f"ctxcache l1 benchmark{' (quick)' if r['quick'] else ''}, {env['date']}",
            f"  cpu {env['cpu']}, python {env['python']}, redis-server {env['redis_server']}"
            f" at {env['redis_url']}",
            "",
            table(hits),
            f"  default mode {t['default_mode']}: {t['default_vs_dogpile']:.2f}x dogpile"
            f" (<= {TARGET_DEFAULT_VS_DOGPILE}): {mark(t['pass_default'])};"
            f" shared {ms(t['shared_ms'])} (about {TARGET_SHARED_MS} ms),"
            f" {t['shared_vs_ping']:.2f}x a PING's round trip",
            "",
            table(firsts),
            "",
            table(wires),
            "  sent: request bytes as written; received: the replies' RESP2 size",
            "",
            table(muts),
            "",
            f"coherence: {co['readers']} reader processes, {co['clients']} clients of"
            f" {co['companies']} companies, {co['seconds']:g} s; a writer made {co['updates']}"
            f" updates and {co['invalidations']} invalidations: {co['reads']:,} reads"
            f" ({co['reads_per_s']:,}/s), {co['l1_hits']:,} parts from L1, stale reads"
            f" {co['stale_reads']} (target 0): {mark(co['pass'])}",
            "",
            table(refresh),
            f"  {m['clients']:,} clients of {m['companies']} companies, Zipf s={m['zipf_s']},"
            f" {m['requests_per_s']:g} requests/s for {m['duration_s']:g} s, TTL {m['ttl_s']} s,"
            f" loader {m['loader_s_per_call'] * 1000:g} ms a call, {m['request_threads']} request"
            " threads; waited: called the loader, or polled while another request loaded",
        ]
    )
