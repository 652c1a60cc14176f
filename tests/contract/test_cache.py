"""The cache's contract: every client on every backend (see ``conftest.py`` here)."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest
from conftest import COMPANY, PHONE, make_settings
from test_wire import load_fixture

from ctxcache import (
    FULL_CONTEXT_TTL,
    GENERATION_UNKNOWN,
    ContextCache,
    ContextTooLargeError,
    InvalidCompanyIdError,
    InvalidContextError,
    InvalidPhoneError,
    InvalidTTLError,
    WarmOutcome,
)
from ctxcache.core.wire import MAGIC, WIRE_VERSION

from .conftest import Contract, all_keys

KEY = f"full_context:{COMPANY}:{PHONE}"


class CountingLoader:
    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.context = context if context is not None else {"client": {"name": "Anna"}}

    def __call__(self, phone: str, company_id: int) -> dict[str, Any]:
        self.calls.append((phone, company_id))
        return self.context


def test_miss_set_hit_invalidate(any_cache: ContextCache) -> None:
    context = load_fixture()
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None
    assert any_cache.set_cached_full_context(PHONE, COMPANY, context) is True
    assert any_cache.client.exists(KEY)
    assert any_cache.get_cached_full_context("89001234567", str(COMPANY)) == context
    assert any_cache.invalidate_cached_context("79001234567@c.us", COMPANY) is True
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None
    assert any_cache.invalidate_cached_context(PHONE, COMPANY) is True  # idempotent


def test_default_ttl_is_twelve_hours_and_explicit_ttl_is_kept(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    ttl = any_cache.client.ttl(KEY)
    assert FULL_CONTEXT_TTL - 5 <= ttl <= FULL_CONTEXT_TTL == 43200
    any_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1}, 60)
    assert 55 <= any_cache.client.ttl(KEY) <= 60


def test_load_through_calls_the_loader_once(any_cache: ContextCache) -> None:
    loader = CountingLoader(load_fixture())
    first = any_cache.load_full_context(PHONE, COMPANY, loader)
    second = any_cache.load_full_context("89001234567", COMPANY, loader)
    assert first == second == loader.context
    assert loader.calls == [(PHONE, COMPANY)]  # normalized phone, int company
    stats = any_cache.stats()
    # The fixture has the five company sections: six parts written.
    assert (stats.hits, stats.misses, stats.loads, stats.sets) == (1, 1, 1, 6)
    assert stats.hit_rate == stats.miss_rate == 0.5


def test_invalidation_during_load_returns_result_but_does_not_cache(
    any_cache: ContextCache,
) -> None:
    def loader(phone: str, company_id: int) -> dict[str, Any]:
        # The booking commits and invalidates while this load is running.
        assert any_cache.invalidate_cached_context(phone, company_id)
        return {"stale": True}

    assert any_cache.load_full_context(PHONE, COMPANY, loader) == {"stale": True}
    assert not any_cache.client.exists(KEY)
    assert not any_cache.client.exists(f"{{{KEY}}}:lock")  # lock released anyway
    assert any_cache.stats().superseded == 1


def test_guarded_set_is_dropped_after_an_invalidation(any_cache: ContextCache) -> None:
    generation = any_cache.current_generation(PHONE, COMPANY)
    any_cache.invalidate_cached_context(PHONE, COMPANY)
    assert not any_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1}, generation=generation)
    assert not any_cache.client.exists(KEY)
    fresh = any_cache.current_generation(PHONE, COMPANY)
    assert any_cache.set_cached_full_context(PHONE, COMPANY, {"a": 2}, generation=fresh)
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == {"a": 2}


def test_unknown_generation_never_writes(any_cache: ContextCache) -> None:
    assert not any_cache.set_cached_full_context(
        PHONE, COMPANY, {"a": 1}, generation=GENERATION_UNKNOWN
    )
    assert not any_cache.client.exists(KEY)


def test_loader_error_propagates_and_releases_the_lock(any_cache: ContextCache) -> None:
    def failing(phone: str, company_id: int) -> dict[str, Any]:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        any_cache.load_full_context(PHONE, COMPANY, failing)
    assert not any_cache.client.exists(f"{{{KEY}}}:lock")


@pytest.mark.parametrize(
    ("phone", "company", "error"),
    [
        ("not a phone", COMPANY, InvalidPhoneError),
        ("", COMPANY, InvalidPhoneError),
        (PHONE, -1, InvalidCompanyIdError),
        (PHONE, "abc", InvalidCompanyIdError),
        (PHONE, None, InvalidCompanyIdError),
    ],
)
def test_bad_identity_raises_on_every_call(
    any_cache: ContextCache, phone: Any, company: Any, error: type[Exception]
) -> None:
    calls = [
        lambda: any_cache.get_cached_full_context(phone, company),
        lambda: any_cache.set_cached_full_context(phone, company, {"a": 1}),
        lambda: any_cache.invalidate_cached_context(phone, company),
        lambda: any_cache.load_full_context(phone, company, CountingLoader()),
        lambda: any_cache.update_dialog_context(phone, company, {"a": 1}),
    ]
    for call in calls:
        with pytest.raises(error):
            call()


@pytest.mark.parametrize(
    ("context", "error"),
    [
        ([1, 2], InvalidContextError),
        ({"when": {1, 2}}, InvalidContextError),
        ({"huge": "x" * 2_000_000}, ContextTooLargeError),
    ],
)
def test_bad_context_raises_and_keeps_the_cached_value(
    contract: Contract, context: Any, error: type[Exception]
) -> None:
    small_cap = contract.make(make_settings(max_context_bytes=1_000_000))
    small_cap.set_cached_full_context(PHONE, COMPANY, {"good": True})
    with pytest.raises(error):
        small_cap.set_cached_full_context(PHONE, COMPANY, context)
    assert small_cap.get_cached_full_context(PHONE, COMPANY) == {"good": True}


def test_a_loader_result_json_cannot_hold_is_returned_uncached(any_cache: ContextCache) -> None:
    marker = object()
    result = any_cache.load_full_context(PHONE, COMPANY, lambda p, c: {"x": marker})
    assert result == {"x": marker}  # the request succeeds; only the caching failed
    assert any_cache.stats().uncacheable == 1
    assert not any_cache.client.exists(KEY)
    assert not any_cache.client.exists(f"{{{KEY}}}:lock")  # the lock was let go


def test_a_loader_result_that_is_not_a_mapping_raises(any_cache: ContextCache) -> None:
    with pytest.raises(InvalidContextError):
        any_cache.load_full_context(PHONE, COMPANY, lambda p, c: [1])  # type: ignore[arg-type,return-value]
    assert not any_cache.client.exists(KEY)
    assert not any_cache.client.exists(f"{{{KEY}}}:lock")


def test_a_loader_that_does_not_know_the_client_gives_none(any_cache: ContextCache) -> None:
    assert any_cache.load_full_context(PHONE, COMPANY, lambda p, c: None) is None
    assert not all_keys(any_cache.client, "*context*")  # nothing cached, no lock left


@pytest.mark.parametrize("ttl", [0, -5, "12h", True, float("nan")])
def test_bad_ttl_raises(any_cache: ContextCache, ttl: Any) -> None:
    with pytest.raises(InvalidTTLError):
        any_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1}, ttl)


@pytest.mark.parametrize(
    "stored",
    [
        b"garbage",
        b"[1,2,3]",
        MAGIC + bytes((WIRE_VERSION + 1, 0)) + b"{}",
        MAGIC + bytes((WIRE_VERSION, 1)) + b"not zstd",
        b"\x80\x04\x95\x00\x00",
    ],
)
def test_corrupt_value_is_a_counted_miss_and_is_removed(
    any_cache: ContextCache, stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    any_cache.client.set(KEY, stored)
    loader = CountingLoader()
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None
    assert not any_cache.client.exists(KEY)
    assert any_cache.stats().corrupt == 1
    any_cache.client.set(KEY, stored)
    assert any_cache.load_full_context(PHONE, COMPANY, loader) == loader.context
    assert len(loader.calls) == 1
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == loader.context


def test_plain_json_written_by_the_node_service_is_read(any_cache: ContextCache) -> None:
    context = load_fixture()
    any_cache.client.set(KEY, json.dumps(context, ensure_ascii=False), ex=43200)
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == context


def test_key_prefix_is_applied_once(any_cache: ContextCache, contract: Contract) -> None:
    prefixed = contract.make(make_settings(key_prefix="salon:"))
    prefixed.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    assert any_cache.client.exists(f"salon:{KEY}")
    assert not any_cache.client.exists(KEY)
    assert not any_cache.client.exists(f"salon:salon:{KEY}")


def test_dialog_context_and_preferences_have_their_ttls_and_invalidate(
    any_cache: ContextCache,
) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    assert any_cache.get_dialog_context(PHONE, COMPANY) is None
    assert any_cache.update_dialog_context(PHONE, COMPANY, {"step": "choose_service", "n": 1})
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None  # invalidated
    assert any_cache.update_dialog_context(PHONE, COMPANY, {"n": 2})
    assert any_cache.get_dialog_context(PHONE, COMPANY) == {"step": "choose_service", "n": 2}
    keys = any_cache.client_keys(PHONE, COMPANY)
    assert 30 * 86400 - 5 <= any_cache.client.ttl(keys.dialog) <= 30 * 86400

    any_cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    assert any_cache.update_client_preferences(PHONE, COMPANY, {"preferredTime": "evening"})
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None
    assert any_cache.get_client_preferences(PHONE, COMPANY) == {"preferredTime": "evening"}
    assert 365 * 86400 - 5 <= any_cache.client.ttl(keys.preferences) <= 365 * 86400


def test_section_update_voids_a_load_in_flight(any_cache: ContextCache) -> None:
    def loader(phone: str, company_id: int) -> dict[str, Any]:
        any_cache.update_dialog_context(phone, company_id, {"step": "new"})
        return {"old": True}

    any_cache.load_full_context(PHONE, COMPANY, loader)
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None


def test_bad_section_update_raises(any_cache: ContextCache) -> None:
    for fields in [{}, {"a": object()}, {1: "x"}, ["a"]]:
        with pytest.raises(InvalidContextError):
            any_cache.update_dialog_context(PHONE, COMPANY, fields)  # type: ignore[arg-type]


def test_warm_skips_fresh_and_refreshes_old(any_cache: ContextCache) -> None:
    loader = CountingLoader()
    assert any_cache.warm_full_context(PHONE, COMPANY, loader, 3600) is WarmOutcome.WRITTEN
    assert any_cache.warm_full_context(PHONE, COMPANY, loader, 3600) is WarmOutcome.FRESH
    any_cache.set_cached_full_context(PHONE, COMPANY, {"old": True}, 60)
    assert any_cache.warm_full_context(PHONE, COMPANY, loader, 3600) is WarmOutcome.WRITTEN
    assert len(loader.calls) == 2
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == loader.context


def test_warm_is_superseded_by_an_invalidation(any_cache: ContextCache) -> None:
    def loader(phone: str, company_id: int) -> dict[str, Any]:
        any_cache.invalidate_cached_context(phone, company_id)
        return {"stale": True}

    assert any_cache.warm_full_context(PHONE, COMPANY, loader) is WarmOutcome.SUPERSEDED
    assert not any_cache.client.exists(KEY)


def test_hit_is_logged_at_info_with_the_phone_masked(
    any_cache: ContextCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ctxcache")
    any_cache.load_full_context(PHONE, COMPANY, CountingLoader())
    any_cache.load_full_context(PHONE, COMPANY, CountingLoader())
    any_cache.invalidate_cached_context(PHONE, COMPANY)
    any_cache.update_client_preferences(PHONE, COMPANY, {"a": 1})
    any_cache.client.set(KEY, b"garbage")
    any_cache.get_cached_full_context(PHONE, COMPANY)
    levels = {r.levelname for r in caplog.records}
    assert {"INFO", "DEBUG", "ERROR"} <= levels
    assert any("cache hit" in r.getMessage() and r.levelname == "INFO" for r in caplog.records)
    for record in caplog.records:
        assert "9001234567" not in record.getMessage()
        assert record.name == "ctxcache"


def test_stats_snapshot_is_serializable(any_cache: ContextCache) -> None:
    any_cache.load_full_context(PHONE, COMPANY, CountingLoader())
    data = any_cache.stats().as_dict()
    assert orjson.loads(orjson.dumps(data))["loads"] == 1
    assert data["average_load_seconds"] >= 0


def test_an_expired_generation_never_comes_back_with_a_leased_value(
    any_cache: ContextCache,
) -> None:
    """The counter expires (or is evicted) while a load runs, then a booking
    invalidates: the load's write must still be dropped."""
    keys = any_cache.client_keys(PHONE, COMPANY)
    assert any_cache.invalidate_cached_context(PHONE, COMPANY)  # a rare client: counter set once

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        any_cache.client.delete(keys.generation)  # its TTL ran out meanwhile
        assert any_cache.invalidate_cached_context(phone, company_id)  # the booking
        return {"bookings": ["before the booking"]}

    any_cache.load_full_context(PHONE, COMPANY, loader)
    assert not any_cache.client.exists(KEY)
    assert any_cache.stats().superseded == 1


def test_generations_are_never_small_reusable_numbers(any_cache: ContextCache) -> None:
    first = any_cache.apply_invalidation(PHONE, COMPANY)
    assert first is not None
    assert first > 10**15  # seeded from the server clock in microseconds
    assert any_cache.apply_invalidation(PHONE, COMPANY) == first + 1
