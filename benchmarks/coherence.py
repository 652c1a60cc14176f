"""Coherence of the in-process cache under load, for the ``l1`` suite (issue 10).

Four reader processes read 50 hot clients of 5 companies through
``load_full_context`` (default settings: the in-process cache on) while a
writer process, at random, updates or invalidates a client's ``preferences``
or a company's ``staffSchedules``, for a bounded time. Every change gets a
version: the writer bumps the part's *truth* (what the loader returns) first,
then changes the cache, then records the version as *done*. A reader notes
the done versions before each read and counts the read stale if it returns
a part older than that. Target: 0 stale reads.

All keys are under ``ctxcache-bench:`` (the truth and done versions under
``ctxcache-bench:coherence:``).
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import redis

from benchmarks.common import NAMESPACE, bench_cache

__all__ = ["measure_coherence"]

READERS = 4
COMPANIES = 5
CLIENTS_PER_COMPANY = 10
FIRST_COMPANY = 962302
VERSIONS = NAMESPACE + "coherence:"


def clients() -> list[tuple[str, int]]:
    return [
        (f"+7903{(company - FIRST_COMPANY) * 100 + i:07d}", company)
        for company in range(FIRST_COMPANY, FIRST_COMPANY + COMPANIES)
        for i in range(CLIENTS_PER_COMPANY)
    ]


def client_part(phone: str, company: int) -> str:
    return f"client:{company}:{phone}"


def company_part(company: int) -> str:
    return f"company:{company}"


class VersionLoader:
    """A sectioned loader that returns each part's current truth version."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url)

    def truth(self, part: str) -> int:
        return int(self.redis.get(VERSIONS + "truth:" + part) or 0)

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        version = self.truth(client_part(phone, company_id))
        return {"client": {"phone": phone}, "preferences": {"v": version}}

    def load_company_sections(self, company_id: int, sections: Sequence[str]) -> dict[str, Any]:
        version = self.truth(company_part(company_id))
        return {name: {"v": version} if name == "staffSchedules" else {} for name in sections}


def read(url: str, deadline: float, seed: int) -> dict[str, int]:
    """One reader process: reads until ``deadline`` (wall clock); counts stale reads."""
    cache = bench_cache(url)
    loader = VersionLoader(url)
    rng = random.Random(seed)
    hot = clients()
    reads = stale = 0
    try:
        while time.time() < deadline:
            phone, company = rng.choice(hot)
            parts = (client_part(phone, company), company_part(company))
            done = [int(v or 0) for v in loader.redis.mget([VERSIONS + "done:" + p for p in parts])]
            context = cache.load_full_context(phone, company, loader)
            assert context is not None
            got = (context["preferences"]["v"], context["staffSchedules"]["v"])
            stale += got[0] < done[0] or got[1] < done[1]
            reads += 1
        stats = cache.stats()
    finally:
        cache.close()
        loader.redis.close()
    return {"reads": reads, "stale": stale, "l1_hits": stats.l1_hits}


def write(url: str, deadline: float, seed: int) -> dict[str, int]:
    """The writer process: random updates and invalidations until ``deadline``."""
    cache = bench_cache(url)
    admin = redis.Redis.from_url(url)
    rng = random.Random(seed)
    hot = clients()
    counts = {"updates": 0, "invalidations": 0}
    try:
        while time.time() < deadline:
            phone, company = rng.choice(hot)
            on_company = rng.random() < 0.5
            part = company_part(company) if on_company else client_part(phone, company)
            version = int(admin.incr(VERSIONS + "truth:" + part))
            if rng.random() < 0.5:
                counts["updates"] += 1
                if on_company:
                    cache.update_company_section(company, "staffSchedules", {"v": version})
                else:
                    cache.update_section(phone, company, "preferences", {"v": version})
            else:
                counts["invalidations"] += 1
                if on_company:
                    cache.invalidate_company(company, ["staffSchedules"])
                else:
                    cache.invalidate_cached_context(phone, company)
            admin.set(VERSIONS + "done:" + part, version)
            time.sleep(rng.uniform(0, 0.004))
    finally:
        cache.close()
        admin.close()
    return counts


def measure_coherence(url: str, seconds: float) -> dict[str, Any]:
    """Run the readers and the writer for ``seconds``; reads, stale reads, reads per second."""
    spawn = multiprocessing.get_context("spawn")  # fresh processes, nothing shared by fork
    with ProcessPoolExecutor(READERS + 1, mp_context=spawn) as pool:
        # The processes start (imports) before the clock that bounds them.
        list(pool.map(time.sleep, [0.0] * (READERS + 1)))
        deadline = time.time() + seconds
        readers = [pool.submit(read, url, deadline, seed) for seed in range(READERS)]
        writer = pool.submit(write, url, deadline, 100)
        results = [future.result() for future in readers]
        writes = writer.result()
    reads = sum(r["reads"] for r in results)
    stale = sum(r["stale"] for r in results)
    return {
        "readers": READERS,
        "clients": COMPANIES * CLIENTS_PER_COMPANY,
        "companies": COMPANIES,
        "seconds": seconds,
        "reads": reads,
        "reads_per_s": round(reads / seconds),
        "stale_reads": stale,
        "l1_hits": sum(r["l1_hits"] for r in results),
        **writes,
        "target_stale": 0,
        "pass": stale == 0,
    }
