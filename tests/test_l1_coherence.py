"""Coherence of the in-process cache across real processes, under invalidations and updates.

Four reader processes, each with its own L1, read 50 hot clients of 5
companies while a writer process changes "the database" and then the cache
(invalidations and partial updates, of clients and of company sections). A
read may never return a part older than a change that completed before the
read began: each reader notes what was completed before it starts a read and
checks what it got. Bounded in time; fails if the stamp check is removed.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from typing import Any

from conftest import TEST_REDIS_URL

from ctxcache import CacheSettings, ContextCache

CLIENTS = 50
COMPANIES = 5
READERS = 4
SECONDS = 3.0
FIRST_COMPANY = 7001


def phone(index: int) -> str:
    return f"+7900555{index:04d}"


def company(index: int) -> int:
    return FIRST_COMPANY + index % COMPANIES


class VersionedSalon:
    """A sectioned loader over "the database": the shared version counters."""

    def __init__(self, clients: SynchronizedArray[int], companies: SynchronizedArray[int]):
        self.clients = clients
        self.companies = companies

    def load_client(self, phone_number: str, company_id: int) -> dict[str, Any]:
        index = int(phone_number[-4:])
        return {"client": {"version": self.clients[index]}, "conversation": [index] * 50}

    def load_company_sections(self, company_id: int, sections: Any) -> dict[str, Any]:
        version = self.companies[company_id - FIRST_COMPANY]
        data = {
            "company": {"id": company_id},
            "services": [{"id": i, "price": 100 + i} for i in range(200)],
            "staff": [{"id": i} for i in range(20)],
            "staffSchedules": {"version": version, "slots": list(range(300))},
            "businessStats": {"version": version},
        }
        return {name: data[name] for name in sections}


def reader(
    db: tuple[SynchronizedArray[int], SynchronizedArray[int]],
    done: tuple[SynchronizedArray[int], SynchronizedArray[int]],
    go: Synchronized[int],
    results: Any,
) -> None:
    cache = ContextCache.from_settings(CacheSettings.load(redis_url=TEST_REDIS_URL))
    salon = VersionedSalon(*db)
    rng = random.Random()
    reads = stale = 0
    while not go.value:
        time.sleep(0.001)
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        index = rng.randrange(CLIENTS)
        company_index = index % COMPANIES
        # What had completed before this read began.
        client_floor, company_floor = done[0][index], done[1][company_index]
        context = cache.load_full_context(phone(index), company(index), salon)
        assert context is not None
        reads += 1
        if context["client"]["version"] < client_floor:
            stale += 1
        if context["staffSchedules"]["version"] < company_floor:
            stale += 1
    stats = cache.stats()
    results.put((reads, stale, stats.l1_hits))
    cache.close()


def writer(
    db: tuple[SynchronizedArray[int], SynchronizedArray[int]],
    done: tuple[SynchronizedArray[int], SynchronizedArray[int]],
    go: Synchronized[int],
    results: Any,
) -> None:
    cache = ContextCache.from_settings(CacheSettings.load(redis_url=TEST_REDIS_URL))
    salon = VersionedSalon(*db)
    rng = random.Random()
    changes = 0
    while not go.value:
        time.sleep(0.001)
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        index = rng.randrange(CLIENTS)
        kind = rng.randrange(4)
        if kind < 2:  # a client's change: the database first, then the cache
            version = db[0][index] + 1
            db[0][index] = version
            if kind == 0:
                assert cache.invalidate_cached_context(phone(index), company(index))
            else:
                part = salon.load_client(phone(index), company(index))["client"]
                cache.update_section(phone(index), company(index), "client", part)
            done[0][index] = version
        else:  # a company's change: a booking, or a new schedule
            company_index = index % COMPANIES
            version = db[1][company_index] + 1
            db[1][company_index] = version
            if kind == 2:
                assert cache.invalidate_company(company(index), ["staffSchedules", "businessStats"])
            else:
                sections = salon.load_company_sections(company(index), ["staffSchedules"])
                cache.update_company_section(
                    company(index), "staffSchedules", sections["staffSchedules"]
                )
                cache.invalidate_company(company(index), ["businessStats"])
            done[1][company_index] = version
        changes += 1
        time.sleep(0.002)
    results.put(("writer", changes))
    cache.close()


def test_no_process_ever_reads_a_part_older_than_a_completed_change(real_client: Any) -> None:
    spawn = multiprocessing.get_context("spawn")
    db = (spawn.Array("q", CLIENTS), spawn.Array("q", COMPANIES))
    done = (spawn.Array("q", CLIENTS), spawn.Array("q", COMPANIES))
    go = spawn.Value("i", 0)
    results = spawn.Queue()
    processes = [spawn.Process(target=reader, args=(db, done, go, results)) for _ in range(READERS)]
    processes.append(spawn.Process(target=writer, args=(db, done, go, results)))
    for process in processes:
        process.start()
    time.sleep(1.0)  # let every process import and connect
    go.value = 1
    outcomes = [results.get(timeout=SECONDS + 60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    writes = [o for o in outcomes if o[0] == "writer"]
    reads = [o for o in outcomes if o[0] != "writer"]
    assert writes[0][1] > 100  # the writer kept changing things
    total_reads = sum(r[0] for r in reads)
    assert sum(r[1] for r in reads) == 0, f"stale reads among {total_reads}"
    assert total_reads > 1000
    assert sum(r[2] for r in reads) > total_reads  # most parts came from L1
