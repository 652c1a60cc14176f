"""The contract for two clients: fail-open, L1 coherence and copies, stats, loaders."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import COMPANY, PHONE, make_settings
from test_metrics import bucket_field, counters, minus, stats_hash
from test_sections import Salon
from test_wire import load_fixture

from ctxcache import (
    AsyncContextCache,
    CacheStats,
    ContextCache,
    ReadOnlySectionError,
    WarmOutcome,
)

from .conftest import CLIENTS, Backend, Contract

KEY = f"full_context:{COMPANY}:{PHONE}"
LOCK = "{" + KEY + "}:lock"


def database(phone: str, company_id: int) -> dict[str, Any]:
    return {"from": "database"}


def test_every_call_fails_open_when_redis_is_unreachable(contract: Contract) -> None:
    cache = contract.make(make_settings(breaker_threshold=100), dead=True)
    assert cache.get_cached_full_context(PHONE, COMPANY) is None
    assert cache.set_cached_full_context(PHONE, COMPANY, {"a": 1}) is False
    assert cache.invalidate_cached_context(PHONE, COMPANY) is False
    assert cache.load_full_context(PHONE, COMPANY, database) == {"from": "database"}
    assert cache.warm_full_context(PHONE, COMPANY, database) is WarmOutcome.UNAVAILABLE
    assert cache.update_dialog_context(PHONE, COMPANY, {"a": 1}) is False
    assert cache.get_dialog_context(PHONE, COMPANY) is None
    assert cache.apply_booking_invalidation(PHONE, COMPANY) is None
    assert cache.ping() is False
    stats = cache.stats()
    assert stats.errors >= 8
    assert stats.loads == 1
    assert cache.flush_stats() is False  # the counts are kept for later


def test_the_breaker_opens_and_calls_skip_redis(contract: Contract) -> None:
    cache = contract.make(make_settings(breaker_threshold=2), dead=True)
    for _ in range(4):
        assert cache.get_cached_full_context(PHONE, COMPANY) is None
    stats = cache.stats()
    assert (stats.errors, stats.skipped) == (2, 2)


@pytest.mark.parametrize("writer_kind", CLIENTS)
def test_l1_sees_writes_and_invalidations_of_other_caches_at_once(
    contract: Contract, writer_kind: str
) -> None:
    """Two caches of one process, each with its own L1; the writer of either client kind."""
    reader, writer = contract.cache, contract.make(kind=writer_kind)
    context = load_fixture()
    writer.set_cached_full_context(PHONE, COMPANY, context)
    assert reader.get_cached_full_context(PHONE, COMPANY) == context
    writer.update_company_section(COMPANY, "services", [{"id": 1}])
    got = reader.get_cached_full_context(PHONE, COMPANY)
    assert got is not None
    assert got["services"] == [{"id": 1}]
    writer.update_section(PHONE, COMPANY, "preferences", {"time": "evening"})
    got = reader.get_cached_full_context(PHONE, COMPANY)
    assert got is not None
    assert got["preferences"] == {"time": "evening"}
    writer.invalidate_company(COMPANY, ["staff"])
    assert reader.get_cached_full_context(PHONE, COMPANY) is None
    # Rewritten with the very same content: a new stamp, so read again, not trusted.
    writer.set_cached_full_context(PHONE, COMPANY, context)
    hits = reader.stats().l1_hits
    assert reader.get_cached_full_context(PHONE, COMPANY) == context
    assert reader.stats().l1_hits == hits  # nothing was served without its fresh value
    assert reader.get_cached_full_context(PHONE, COMPANY) == context
    assert reader.stats().l1_hits > hits  # unchanged since: served from L1


def test_by_default_nothing_a_caller_changes_reaches_another(any_cache: ContextCache) -> None:
    context = load_fixture()
    any_cache.set_cached_full_context(PHONE, COMPANY, context)
    first = any_cache.get_cached_full_context(PHONE, COMPANY)
    assert first is not None
    first["client"]["name"] = "changed"  # the client's own sections: private
    first["conversation"].append({"role": "user", "text": "new"})
    first["startTime"] = 123  # the spec's { ...cachedContext, startTime }
    with pytest.raises(ReadOnlySectionError):  # a company section: refused, not shared
        first["services"][0]["price"] = -1
    again = any_cache.get_cached_full_context(PHONE, COMPANY)
    assert again == context  # another caller sees none of it


def test_flush_adds_exactly_the_counts(any_cache: ContextCache) -> None:
    any_cache.load_full_context(PHONE, COMPANY, lambda p, c: {"a": 1})
    any_cache.get_cached_full_context(PHONE, COMPANY)
    any_cache.invalidate_cached_context(PHONE, COMPANY)
    assert not any_cache.client.exists(any_cache.keys.stats)  # nothing before the interval
    assert any_cache.flush_stats() is True
    flushed = stats_hash(any_cache.client, any_cache)
    assert counters(flushed) == minus(any_cache.stats(), CacheStats())
    assert flushed[bucket_field(0.005)] == 1  # the fake clock did not move: 0 s
    assert any_cache.flush_stats() is True  # nothing new: no change
    assert stats_hash(any_cache.client, any_cache) == flushed


def test_a_part_near_expiry_is_refreshed_in_the_background(contract: Contract) -> None:
    """XFetch: the caller gets the valid value at once, a background refresh reloads it."""
    clock = contract.clock
    cache = contract.cache
    calls: list[str] = []

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        calls.append(phone)
        clock.advance(2.0)  # each load takes 2 s of the fake clock
        return {"client": {"n": len(calls)}, "services": [len(calls)]}

    cache.core.random = lambda: 1.0  # -ln(1) = 0: never early
    first = cache.load_full_context(PHONE, COMPANY, loader)
    assert cache.load_full_context(PHONE, COMPANY, loader) == first
    assert calls == [PHONE]
    contract.redis.pexpire(KEY, 10_000)  # 10 s left
    cache.core.random = lambda: math.exp(-6)  # 2 s x 1 x 6 = 12 >= 10: due
    assert cache.load_full_context(PHONE, COMPANY, loader) == first  # at once
    contract.close_cache(cache)  # waits for the background refresh
    assert calls == [PHONE, PHONE]
    assert cache.stats().early_refreshes == 1
    fresh = contract.make().get_cached_full_context(PHONE, COMPANY)
    assert fresh == {"client": {"n": 2}, "services": [2]}


async def async_database(phone: str, company_id: int) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"from": "async database", "phone": phone}


class AsyncSalon:
    """A sectioned loader with coroutine methods, over the blocking :class:`Salon`."""

    def __init__(self) -> None:
        self.salon = Salon()

    async def load_client(self, phone: str, company_id: int) -> dict[str, Any] | None:
        return self.salon.load_client(phone, company_id)

    async def load_company_sections(
        self, company_id: int, sections: Sequence[str]
    ) -> dict[str, Any]:
        return self.salon.load_company_sections(company_id, sections)


def test_async_loaders_are_awaited_by_the_asyncio_client_and_refused_by_the_sync_one(
    contract: Contract,
) -> None:
    cache = contract.cache
    if contract.kind == "sync":
        with pytest.raises(TypeError, match="AsyncContextCache"):
            cache.load_full_context(PHONE, COMPANY, async_database)
        assert not contract.redis.exists(KEY)
        assert not contract.redis.exists(LOCK)  # let go of on the error
        return
    expected = {"from": "async database", "phone": PHONE}
    assert cache.load_full_context(PHONE, COMPANY, async_database) == expected
    assert cache.get_cached_full_context(PHONE, COMPANY) == expected
    salon = AsyncSalon()
    other = "+79007654321"
    assert cache.load_full_context(other, COMPANY, salon) == salon.salon.whole(other)
    assert cache.warm_company(COMPANY, salon, 10**9) is WarmOutcome.WRITTEN  # awaited too
    assert salon.salon.clients == [other]


def test_a_plain_loader_runs_off_the_event_loop(contract: Contract) -> None:
    """The asyncio client runs a blocking loader in a thread: the loop stays free."""
    seen: list[bool] = []

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return {"a": 1}

    assert contract.cache.load_full_context(PHONE, COMPANY, loader) == {"a": 1}
    assert seen == [False]  # never on a running loop, in either client


def test_a_bad_call_raises_when_awaited_not_when_made(contract: Contract) -> None:
    if contract.kind == "sync":
        assert isinstance(contract.cache, ContextCache)
        return
    pending = contract.cache.cache.get_cached_full_context("not a phone", COMPANY)
    pending.close()  # made without raising; awaited it raises (the contract's bad-input tests)


def test_a_cancelled_async_load_lets_go_of_its_lock(backend: Backend) -> None:
    """A cancellation (a request timeout, a closed chat) is thrown into the flow like any error."""

    async def scenario() -> None:
        async with AsyncContextCache(backend.connect_async(), make_settings()) as cache:
            started = asyncio.Event()

            async def stuck(phone: str, company_id: int) -> dict[str, Any]:
                started.set()
                await asyncio.Event().wait()  # never returns
                raise AssertionError("unreachable")

            task = asyncio.create_task(cache.load_full_context(PHONE, COMPANY, stuck))
            await started.wait()
            assert backend.admin.exists(LOCK)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not backend.admin.exists(LOCK)
            assert await cache.get_cached_full_context(PHONE, COMPANY) is None

    asyncio.run(scenario())
