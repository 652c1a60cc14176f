"""The in-process cache (L1) and early refresh: bounds, coherence, mutation safety, XFetch."""

from __future__ import annotations

import copy
import json
import math
import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from conftest import COMPANY, PHONE, FakeClock, SpareRedis, make_settings
from test_sections import Salon
from test_wire import load_fixture

from ctxcache import ContextCache
from ctxcache.core.l1 import FrozenDict, FrozenList, L1Cache, ReadOnlySectionError, freeze, thaw
from ctxcache.core.layout import DEFAULT_COMPANY_SECTIONS

OTHER = "+79007654321"
SECTIONS = 5  # company sections of the fixture


def entry(cache: L1Cache, size: int) -> Any:
    return cache.make("section", b"12345678", b"x" * size, None, {}, 0.0)


# -- the store alone ------------------------------------------------------------------------


def test_the_store_is_bounded_in_bytes_and_evicts_the_least_recent() -> None:
    counted: dict[str, float] = {}

    def count(name: str, amount: float) -> None:
        counted[name] = counted.get(name, 0) + amount

    l1 = L1Cache(100, count=count)
    l1.put("a", entry(l1, 40))
    l1.put("b", entry(l1, 40))
    assert l1.get("a") is not None  # "a" is now the most recent
    l1.put("c", entry(l1, 40))  # over 100: "b" goes
    assert (l1.get("b"), l1.size, len(l1)) == (None, 80, 2)
    assert counted == {"l1_bytes": 80, "l1_evictions": 1}
    l1.put("d", entry(l1, 101))  # larger than the whole bound: not kept
    assert l1.get("d") is None
    l1.discard("a", "c")
    assert (l1.size, counted["l1_bytes"]) == (0, 0)


def test_zero_bytes_disables_the_store() -> None:
    l1 = L1Cache(0)
    l1.put("a", entry(l1, 1))
    assert not l1.enabled
    assert l1.get("a") is None


def test_frozen_values_refuse_every_change_and_encode_as_json() -> None:
    value = freeze({"a": [1, {"b": 2}], "c": {"d": [3]}})
    assert isinstance(value, dict)
    assert isinstance(value["a"], list)
    changes: list[Callable[[], Any]] = [
        lambda: value.__setitem__("x", 1),
        lambda: value.pop("a"),
        lambda: value.update(x=1),
        lambda: value.setdefault("x", 1),
        lambda: value.clear(),
        lambda: value["a"].append(1),
        lambda: value["a"][1].__setitem__("b", 3),
        lambda: value["c"]["d"].extend([4]),
        lambda: value["a"].sort(),
    ]
    for change in changes:
        with pytest.raises(ReadOnlySectionError, match="thaw"):
            change()
    assert isinstance(ReadOnlySectionError("x"), TypeError)
    assert orjson.loads(orjson.dumps(value)) == json.loads(json.dumps(value)) == value
    private = thaw(value)
    private["a"].append(9)
    assert type(private) is dict
    assert value["a"] == [1, {"b": 2}]
    deep = copy.deepcopy(value)
    deep["c"]["d"].append(4)  # deepcopy gives ordinary, changeable containers
    assert isinstance(value["c"]["d"], FrozenList)
    assert not isinstance(deep, FrozenDict)


# -- through the cache ----------------------------------------------------------------------


def test_a_repeated_hit_is_served_from_l1_after_one_small_round_trip(
    any_cache: ContextCache,
) -> None:
    context = load_fixture()
    any_cache.set_cached_full_context(PHONE, COMPANY, context)
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == context
    assert any_cache.stats().l1_misses == 1 + SECTIONS
    replies: list[Any] = []
    answer = any_cache._answer

    def recorded(step: Any) -> Any:
        result = answer(step)
        replies.append(result)
        return result

    any_cache._answer = recorded  # type: ignore[method-assign]
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == context
    assert any_cache.stats().l1_hits == 1 + SECTIONS
    assert len(replies) == 1  # one round trip...
    assert len(orjson.dumps(replies[0], default=bytes.hex)) < 200  # ...of a few bytes
    # A new client of the same company: its own part alone comes over the wire.
    any_cache.load_full_context(OTHER, COMPANY, Salon(context))
    assert any_cache.stats().l1_hits == 1 + 2 * SECTIONS


def test_copy_mode_callers_may_change_anything(clock: FakeClock) -> None:
    import fakeredis

    cache = ContextCache(fakeredis.FakeRedis(), make_settings(l1_mode="copy"), clock=clock)
    context = load_fixture()
    cache.set_cached_full_context(PHONE, COMPANY, context)
    first = cache.get_cached_full_context(PHONE, COMPANY)
    assert first is not None
    first["services"][0]["price"] = -1  # deep inside a company section
    first["client"]["name"] = "changed"
    assert cache.get_cached_full_context(PHONE, COMPANY) == context


def test_shared_mode_hands_out_read_only_sections(clock: FakeClock) -> None:
    import fakeredis

    cache = ContextCache(fakeredis.FakeRedis(), make_settings(l1_mode="shared"), clock=clock)
    context = load_fixture()
    cache.set_cached_full_context(PHONE, COMPANY, context)
    cache.get_cached_full_context(PHONE, COMPANY)
    first = cache.get_cached_full_context(PHONE, COMPANY)
    assert first == context
    assert first is not None
    started = {**first, "startTime": 1}  # the spec's flow works
    first["startTime"] = 2  # the top level is the caller's own
    with pytest.raises(ReadOnlySectionError):
        first["services"][0]["price"] = -1
    with pytest.raises(ReadOnlySectionError):
        first["conversation"].append({})
    second = cache.get_cached_full_context(PHONE, COMPANY)
    assert second is not None
    assert "startTime" not in second
    assert second["services"] is first["services"]  # shared, not decoded again
    assert started["startTime"] == 1


def test_shared_company_mode_shares_only_company_sections(clock: FakeClock) -> None:
    import fakeredis

    settings = make_settings(l1_mode="shared-company")
    cache = ContextCache(fakeredis.FakeRedis(), settings, clock=clock)
    context = load_fixture()
    cache.set_cached_full_context(PHONE, COMPANY, context)
    first = cache.get_cached_full_context(PHONE, COMPANY)
    assert first == context
    assert first is not None
    first["conversation"].append({"role": "user", "text": "new"})  # the client's own
    first["client"]["name"] = "changed"
    with pytest.raises(ReadOnlySectionError):
        first["staffSchedules"].pop()
    second = cache.get_cached_full_context(PHONE, COMPANY)
    assert second == context
    assert second is not None
    assert second["services"] is first["services"]


def test_l1_serves_nothing_it_cannot_prove_current(
    spare_redis: SpareRedis, cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    cache = cache_factory(redis_url=spare_redis.url, clock=clock)
    context = load_fixture()
    cache.set_cached_full_context(PHONE, COMPANY, context)
    assert cache.get_cached_full_context(PHONE, COMPANY) == context
    assert len(cache.core.l1) == 1 + SECTIONS
    spare_redis.stop()
    assert cache.get_cached_full_context(PHONE, COMPANY) is None  # a miss, not a stale hit
    spare_redis.start()  # empty: what L1 holds was lost with the server
    clock.advance(cache.breaker.cooldown)
    assert cache.get_cached_full_context(PHONE, COMPANY) is None


def test_zero_bytes_turns_l1_off(cache_factory: Callable[..., ContextCache]) -> None:
    cache = cache_factory(l1_max_bytes=0)
    cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    for _ in range(3):
        assert cache.get_cached_full_context(PHONE, COMPANY) == {"a": 1}
    assert (cache.stats().l1_hits, cache.stats().l1_misses, len(cache.core.l1)) == (0, 0, 0)


# -- early refresh (XFetch) -----------------------------------------------------------------


class Draws:
    """The random source of the XFetch draw, scripted by the test."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def slow_loader(clock: FakeClock, seconds: float, calls: list[str]) -> Any:
    def load(phone: str, company_id: int) -> dict[str, Any]:
        calls.append(phone)
        clock.advance(seconds)
        return {"client": {"n": len(calls)}, "services": [len(calls)]}

    return load


def refreshing_cache(
    cache_factory: Callable[..., ContextCache], clock: FakeClock, draw: Draws, **settings: Any
) -> ContextCache:
    cache = cache_factory(clock=clock, **settings)
    cache.core.random = draw
    return cache


def test_far_from_expiry_nothing_is_refreshed(
    cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    draw = Draws(math.exp(-6))  # 2 s x 6 = 12 s of headroom
    cache = refreshing_cache(cache_factory, clock, draw)
    calls: list[str] = []
    loader = slow_loader(clock, 2.0, calls)
    cache.load_full_context(PHONE, COMPANY, loader)
    cache.client.pexpire(f"full_context:{COMPANY}:{PHONE}", 13_000)
    cache.client.pexpire(f"{{company_context:{COMPANY}}}:section:services", 13_000)
    cache.load_full_context(PHONE, COMPANY, loader)
    cache.close()
    assert calls == [PHONE]


def test_beta_zero_turns_early_refresh_off(
    cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    cache = refreshing_cache(cache_factory, clock, Draws(1e-300), early_refresh_beta=0)
    calls: list[str] = []
    loader = slow_loader(clock, 2.0, calls)
    cache.load_full_context(PHONE, COMPANY, loader)
    cache.client.pexpire(f"full_context:{COMPANY}:{PHONE}", 1)
    cache.load_full_context(PHONE, COMPANY, loader)
    cache.close()
    assert calls == [PHONE]


def test_a_due_company_section_refreshes_them_all_in_one_load(
    cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    # One at a time, each would cost a load, and the company's lock held for one
    # made the refreshes of the others skip until they expired.
    cache = refreshing_cache(cache_factory, clock, Draws(1.0))
    salon = Salon()
    salon.on_sections = lambda: clock.advance(2.0)  # the sections' load takes 2 s
    cache.load_full_context(PHONE, COMPANY, salon)
    cache.client.pexpire(f"{{company_context:{COMPANY}}}:section:staffSchedules", 10_000)
    cache.core.random = Draws(math.exp(-6))  # 2 s x 6 = 12 >= 10 s: only that one is due
    cache.load_full_context(PHONE, COMPANY, salon)
    cache.close()
    assert salon.sections == [DEFAULT_COMPANY_SECTIONS, DEFAULT_COMPANY_SECTIONS]
    assert salon.clients == [PHONE]
    assert cache.stats().early_refreshes == 1


def test_a_part_is_never_refreshed_twice_at_once(
    cache_factory: Callable[..., ContextCache], clock: FakeClock
) -> None:
    cache = refreshing_cache(cache_factory, clock, Draws(1.0))
    release = threading.Event()
    started = threading.Event()
    calls: list[str] = []

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        calls.append(phone)
        clock.advance(2.0)
        if len(calls) > 1:  # the refresh: hold it until the test has read again
            started.set()
            release.wait(10)
        return {"client": len(calls)}

    cache.load_full_context(PHONE, COMPANY, loader)
    cache.client.pexpire(f"full_context:{COMPANY}:{PHONE}", 1000)
    cache.core.random = Draws(1e-9)  # always due from now on
    cache.load_full_context(PHONE, COMPANY, loader)
    assert started.wait(10)
    for _ in range(5):  # due each time, but already being refreshed
        cache.load_full_context(PHONE, COMPANY, loader)
    release.set()
    cache.close()
    assert calls == [PHONE, PHONE]
    assert cache.stats().early_refreshes == 1
