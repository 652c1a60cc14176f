"""The generation an invalidation produces, and the safety net that checks it still holds.

On every client and backend: the safety net is what survives a failover.
"""

from __future__ import annotations

from conftest import COMPANY, PHONE, make_settings

from ctxcache import ContextCache, EnsureOutcome

from .conftest import Contract

KEY = f"full_context:{COMPANY}:{PHONE}"
GEN_KEY = "{" + KEY + "}:gen"


def test_each_invalidation_produces_a_higher_generation(any_cache: ContextCache) -> None:
    first = any_cache.apply_invalidation(PHONE, COMPANY)
    second = any_cache.apply_invalidation(PHONE, COMPANY)
    assert first is not None
    assert second is not None
    assert second == first + 1
    assert int(any_cache.client.get(GEN_KEY)) == second


def test_safety_net_is_a_no_op_while_the_invalidation_holds(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, {"old": True})
    generation = any_cache.apply_invalidation(PHONE, COMPANY)
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None
    # Reloaded after the hook: the safety net must not delete the fresh context.
    fresh = any_cache.current_generation(PHONE, COMPANY)
    assert any_cache.set_cached_full_context(PHONE, COMPANY, {"new": True}, generation=fresh)
    assert any_cache.ensure_invalidated(PHONE, COMPANY, generation) is EnsureOutcome.IN_EFFECT
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == {"new": True}
    # A later invalidation also counts as "still in effect".
    any_cache.apply_invalidation(PHONE, COMPANY)
    assert any_cache.ensure_invalidated(PHONE, COMPANY, generation) is EnsureOutcome.IN_EFFECT


def test_safety_net_reapplies_an_undone_invalidation(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, {"old": True})
    before = any_cache.client.get(GEN_KEY)
    value = any_cache.client.get(KEY)
    generation = any_cache.apply_invalidation(PHONE, COMPANY)
    # A failover to a replica that never saw the invalidation: old generation, old value.
    if before is None:
        any_cache.client.delete(GEN_KEY)
    else:
        any_cache.client.set(GEN_KEY, before)
    any_cache.client.set(KEY, value)
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == {"old": True}
    assert any_cache.ensure_invalidated(PHONE, COMPANY, generation) is EnsureOutcome.REAPPLIED
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None
    assert int(any_cache.client.get(GEN_KEY)) > (generation or 0)


def test_safety_net_without_a_generation_invalidates(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, {"old": True})
    assert any_cache.ensure_invalidated(PHONE, COMPANY, None) is EnsureOutcome.REAPPLIED
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None


def test_unreachable_redis_reports_unavailable(contract: Contract) -> None:
    cache = contract.make(make_settings(breaker_threshold=100), dead=True)
    assert cache.apply_invalidation(PHONE, COMPANY) is None
    assert cache.ensure_invalidated(PHONE, COMPANY, 5) is EnsureOutcome.UNAVAILABLE
