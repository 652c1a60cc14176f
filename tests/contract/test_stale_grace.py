"""The stale grace (``CTXCACHE_STALE_GRACE``), on both clients and every backend.

Parts are written to live ``ttl + grace`` in Redis. A load-through read that
finds one past its TTL (in its grace) gets it at once and starts one
background refresh; an invalidation still removes it. Time in Redis is moved
with ``PEXPIRE`` (what is left of a part), never waited for.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from conftest import COMPANY, PHONE, make_settings

from ctxcache import WarmOutcome

from .conftest import Contract

GRACE = 100  # seconds
TTL = 43_200  # CTXCACHE_FULL_CONTEXT_TTL's default
IN_GRACE_MS = 40_000  # 40 s left in Redis: 60 s past the TTL


class Database:
    """A plain loader counting its calls; after the first, each waits for ``gate``."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, phone: str, company_id: int) -> dict[str, Any]:
        self.calls += 1
        assert self.gate.wait(timeout=5)
        return {"client": {"n": self.calls}, "services": [self.calls]}


def keys(cache: Any) -> list[str]:
    """The client's part and its company's "services" section."""
    who = cache.core.identify(PHONE, COMPANY)
    return [who.client.full_context, who.company.section("services")]


def into_grace(contract: Contract, cache: Any) -> None:
    for key in keys(cache):
        contract.redis.pexpire(key, IN_GRACE_MS)


def test_a_stale_part_is_served_at_once_and_refreshed_once(contract: Contract) -> None:
    cache = contract.make(make_settings(stale_grace=GRACE, early_refresh_beta=0))
    database = Database()
    first = cache.load_full_context(PHONE, COMPANY, database)
    for key in keys(cache):  # written for the TTL and the grace
        assert (TTL + GRACE - 60) * 1000 < contract.redis.pttl(key) <= (TTL + GRACE) * 1000
    into_grace(contract, cache)
    assert cache.get_cached_full_context(PHONE, COMPANY) is None  # get() cannot refresh it
    database.gate.clear()  # the refresh waits: both reads below happen during it
    assert cache.load_full_context(PHONE, COMPANY, database) == first  # at once, stale
    assert cache.load_full_context(PHONE, COMPANY, database) == first  # no second refresh
    stats = cache.stats()
    assert (stats.hits, stats.stale_hits, stats.early_refreshes) == (2, 2, 1)
    database.gate.set()
    contract.close_cache(cache)  # waits for the refresh, pushes the counts
    assert database.calls == 2
    assert int(contract.redis.hget(cache.keys.stats, "stale_hits")) == 2  # the fleet's stats
    for key in keys(cache):  # fresh again, with its grace
        assert contract.redis.pttl(key) > (TTL + GRACE - 60) * 1000
    other = contract.make(make_settings(stale_grace=GRACE))
    assert other.get_cached_full_context(PHONE, COMPANY) == {"client": {"n": 2}, "services": [2]}
    assert other.stats().stale_hits == 0


def test_without_grace_parts_live_their_ttl_and_nothing_is_stale(contract: Contract) -> None:
    cache = contract.make(make_settings(early_refresh_beta=0))
    database = Database()
    first = cache.load_full_context(PHONE, COMPANY, database)
    for key in keys(cache):
        assert (TTL - 60) * 1000 < contract.redis.pttl(key) <= TTL * 1000
        contract.redis.pexpire(key, IN_GRACE_MS)  # 40 s left: valid, not stale
    assert cache.get_cached_full_context(PHONE, COMPANY) == first
    assert cache.load_full_context(PHONE, COMPANY, database) == first
    report = cache.describe_cached_context(PHONE, COMPANY)
    assert all(not part.stale and part.ttl_seconds > 30 for part in report.parts if part.found)
    contract.redis.delete(*keys(cache))  # expired
    assert cache.load_full_context(PHONE, COMPANY, database) == {
        "client": {"n": 2},
        "services": [2],
    }
    stats = cache.stats()
    assert (stats.stale_hits, stats.early_refreshes, database.calls) == (0, 0, 2)


def test_a_part_invalidated_in_its_grace_is_a_miss(contract: Contract) -> None:
    cache = contract.make(make_settings(stale_grace=GRACE, early_refresh_beta=0))
    database = Database()
    cache.load_full_context(PHONE, COMPANY, database)
    into_grace(contract, cache)
    assert cache.invalidate_cached_context(PHONE, COMPANY)
    assert cache.get_cached_full_context(PHONE, COMPANY) is None
    fresh = cache.load_full_context(PHONE, COMPANY, database)  # loaded now, by this caller
    assert fresh == {"client": {"n": 2}, "services": [2]}
    into_grace(contract, cache)
    assert cache.invalidate_company(COMPANY, ["services"])
    assert cache.load_full_context(PHONE, COMPANY, database) == {
        "client": {"n": 3},
        "services": [3],
    }
    stats = cache.stats()
    assert (stats.stale_hits, stats.early_refreshes, database.calls) == (0, 0, 3)


def test_describe_shows_the_ttl_before_staleness_and_the_grace_left(contract: Contract) -> None:
    cache = contract.make(make_settings(stale_grace=GRACE))
    cache.load_full_context(PHONE, COMPANY, Database())
    report = cache.describe_cached_context(PHONE, COMPANY)
    found = [part for part in report.parts if part.found]
    assert len(found) == 2
    for part in found:  # the TTL itself, not the grace on top
        assert not part.stale
        assert part.grace_seconds is None
        assert TTL - 60 < part.ttl_seconds <= TTL
    into_grace(contract, cache)
    report = cache.describe_cached_context(PHONE, COMPANY)
    assert report.context is not None  # still there to look at
    for part in (part for part in report.parts if part.found):
        assert part.stale
        assert -61 <= part.ttl_seconds < -59  # 60 s past the TTL
        assert 39 < part.grace_seconds <= 40


def test_a_warm_up_threshold_counts_from_the_ttl_not_the_grace(contract: Contract) -> None:
    cache = contract.make(make_settings(stale_grace=GRACE))
    database = Database()
    cache.load_full_context(PHONE, COMPANY, database)
    assert cache.warm_full_context(PHONE, COMPANY, database, 60) is WarmOutcome.FRESH
    for key in keys(cache):
        contract.redis.pexpire(key, (GRACE + 30) * 1000)  # 30 s to live, then stale
    assert cache.warm_full_context(PHONE, COMPANY, database, 60) is WarmOutcome.WRITTEN
    assert database.calls == 2


def test_xfetch_counts_down_the_ttl_not_the_grace(contract: Contract) -> None:
    cache = contract.make(make_settings(stale_grace=GRACE))
    calls: list[int] = []

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        calls.append(1)
        contract.clock.advance(2.0)  # each load takes 2 s of the fake clock: delta
        return {"client": {"n": len(calls)}, "services": [len(calls)]}

    cache.core.random = lambda: math.exp(-6)  # 2 s x 1 x 6 = 12 s of XFetch lead
    cache.load_full_context(PHONE, COMPANY, loader)
    for key in keys(cache):
        contract.redis.pexpire(key, (GRACE + 30) * 1000)  # 30 s to live: not due
    cache.load_full_context(PHONE, COMPANY, loader)
    assert cache.stats().early_refreshes == 0
    for key in keys(cache):
        contract.redis.pexpire(key, (GRACE + 10) * 1000)  # 10 s to live (110 s in Redis): due
    cache.load_full_context(PHONE, COMPANY, loader)
    contract.close_cache(cache)
    assert (cache.stats().early_refreshes, cache.stats().stale_hits, len(calls)) == (1, 0, 2)
