"""Company sections cached once per company: the contract, on every client and backend."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import zstandard
from conftest import COMPANY, PHONE, make_settings
from test_sections import KEY, OTHER, Salon, section_key
from test_wire import load_fixture

from ctxcache import ContextCache, SectionScopeError
from ctxcache.core.layout import DEFAULT_COMPANY_SECTIONS

from .conftest import Contract, all_keys


def test_company_sections_are_stored_once_per_company(any_cache: ContextCache) -> None:
    context = load_fixture()
    assert any_cache.set_cached_full_context(PHONE, COMPANY, context)
    assert any_cache.set_cached_full_context(OTHER, COMPANY, {**context, "phone": OTHER})
    keys = sorted(k.decode() for k in all_keys(any_cache.client, "*context*"))
    assert keys == sorted(
        [KEY, f"full_context:{COMPANY}:{OTHER}"]
        + [section_key(name) for name in DEFAULT_COMPANY_SECTIONS]
    )
    client_part = any_cache.client.strlen(KEY)
    sections = sum(any_cache.client.strlen(section_key(n)) for n in DEFAULT_COMPANY_SECTIONS)
    assert client_part < sections / 3  # most of a context is the company's
    assert any_cache.get_cached_full_context(OTHER, COMPANY) == {**context, "phone": OTHER}


@pytest.mark.parametrize(
    "context",
    [
        {"client": {"name": "Anna"}, "conversation": [1, 2]},  # no company section
        {"services": [1], "client": {"name": "Anna"}, "company": {"id": 1}},  # some, in any order
        {"staffSchedules": [{"slot": "10:00"}]},  # only a company section
        {},
    ],
)
def test_a_context_round_trips_exactly_as_given(
    any_cache: ContextCache, context: dict[str, Any]
) -> None:
    assert any_cache.set_cached_full_context(PHONE, COMPANY, context)
    got = any_cache.get_cached_full_context(PHONE, COMPANY)
    assert got == context
    assert list(got or {}) == list(context)  # key order too


def test_a_hit_needs_every_part_it_was_stored_with(any_cache: ContextCache) -> None:
    context = load_fixture()
    any_cache.set_cached_full_context(PHONE, COMPANY, context)
    assert any_cache.invalidate_company(COMPANY, ["staffSchedules"]) is True
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None  # never a half context
    assert any_cache.client.exists(KEY)  # the client's part stays
    stats = any_cache.stats()
    assert (stats.client_hits, stats.company_hits, stats.company_misses) == (1, 4, 1)


def test_invalidating_a_client_leaves_the_company_sections(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, load_fixture())
    assert any_cache.invalidate_cached_context(PHONE, COMPANY)
    assert not any_cache.client.exists(KEY)
    assert all(any_cache.client.exists(section_key(n)) for n in DEFAULT_COMPANY_SECTIONS)


def test_invalidate_company_drops_the_named_sections_or_all(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, load_fixture())
    assert any_cache.invalidate_company(COMPANY, ["services", "staff"])
    present = {n for n in DEFAULT_COMPANY_SECTIONS if any_cache.client.exists(section_key(n))}
    assert present == {"company", "staffSchedules", "businessStats"}
    assert any_cache.invalidate_company(str(COMPANY))
    assert not any(any_cache.client.exists(section_key(n)) for n in DEFAULT_COMPANY_SECTIONS)
    with pytest.raises(SectionScopeError, match="client"):
        any_cache.invalidate_company(COMPANY, ["client"])


def test_booking_invalidation_drops_the_client_and_the_availability(
    any_cache: ContextCache,
) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, load_fixture())
    done = any_cache.apply_booking_invalidation(PHONE, COMPANY)
    assert done is not None
    assert done.client is not None
    assert set(done.sections) == {"staffSchedules", "businessStats"}
    assert not any_cache.client.exists(KEY)
    present = {n for n in DEFAULT_COMPANY_SECTIONS if any_cache.client.exists(section_key(n))}
    assert present == {"company", "services", "staff"}


def test_a_sectioned_loader_loads_only_what_is_missing(any_cache: ContextCache) -> None:
    salon = Salon()
    first = any_cache.load_full_context(PHONE, COMPANY, salon)
    assert first == salon.whole(PHONE)
    assert salon.sections == [DEFAULT_COMPANY_SECTIONS]
    # A new client of a company whose sections are cached: its own part alone.
    second = any_cache.load_full_context(OTHER, COMPANY, salon)
    assert second == salon.whole(OTHER)
    assert salon.clients == [PHONE, OTHER]
    assert salon.sections == [DEFAULT_COMPANY_SECTIONS]
    # After a booking only the availability is reloaded, not the catalogue.
    any_cache.invalidate_company(COMPANY, ["staffSchedules"])
    assert any_cache.load_full_context(OTHER, COMPANY, salon) == salon.whole(OTHER)
    assert salon.sections[-1] == ("staffSchedules",)
    assert salon.clients == [PHONE, OTHER]  # the client's part was still cached
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == salon.whole(PHONE)


def test_a_plain_loader_refills_a_missing_section(any_cache: ContextCache) -> None:
    context = load_fixture()
    calls: list[str] = []

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        calls.append(phone)
        return {**context, "fresh": True}

    any_cache.set_cached_full_context(PHONE, COMPANY, context)
    any_cache.invalidate_company(COMPANY, ["services"])
    assert any_cache.load_full_context(PHONE, COMPANY, loader) == {**context, "fresh": True}
    assert calls == [PHONE]
    assert any_cache.client.exists(section_key("services"))
    # The client's part was not rewritten (it was cached); the section was.
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == context


def test_a_loader_that_puts_company_sections_in_the_client_part_is_refused(
    any_cache: ContextCache,
) -> None:
    class Confused(Salon):
        def load_client(self, phone: str, company_id: int) -> dict[str, Any] | None:
            return {"client": {}, "services": []}

    with pytest.raises(SectionScopeError, match="services"):
        any_cache.load_full_context(PHONE, COMPANY, Confused())
    assert not all_keys(any_cache.client, "*context*")


def test_old_node_blobs_and_v1_envelopes_are_read(any_cache: ContextCache) -> None:
    context = load_fixture()
    any_cache.client.set(KEY, orjson.dumps(context))  # the Node service's JSON.stringify
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == context
    assert any_cache.load_full_context(PHONE, COMPANY, Salon()) == context  # a hit
    v1 = b"\x00ctx\x01\x01" + zstandard.ZstdCompressor().compress(orjson.dumps(context))
    any_cache.client.set(KEY, v1)  # written by ctxcache 0.1
    assert any_cache.get_cached_full_context(PHONE, COMPANY) == context


# -- partial updates ----------------------------------------------------------------------


def test_update_section_replaces_one_client_section(any_cache: ContextCache) -> None:
    context = load_fixture()
    any_cache.set_cached_full_context(PHONE, COMPANY, context, ttl=600)
    assert any_cache.update_section(PHONE, COMPANY, "preferences", {"time": "evening"})
    assert any_cache.update_section(PHONE, COMPANY, "newSection", [1, 2])
    got = any_cache.get_cached_full_context(PHONE, COMPANY)
    assert got == {**context, "preferences": {"time": "evening"}, "newSection": [1, 2]}
    assert 590 < any_cache.client.ttl(KEY) <= 600  # the expiry is kept
    assert any_cache.stats().updates == 2


def test_update_section_of_an_uncached_client_writes_nothing(any_cache: ContextCache) -> None:
    assert any_cache.update_section(PHONE, COMPANY, "preferences", {}) is False
    assert not any_cache.client.exists(KEY)


def test_update_section_refuses_company_sections_and_bad_values(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, {"client": 1})
    before = any_cache.client.get(KEY)
    with pytest.raises(SectionScopeError):
        any_cache.update_section(PHONE, COMPANY, "services", [])
    with pytest.raises(ValueError, match="NaN"):
        any_cache.update_section(PHONE, COMPANY, "client", float("nan"))
    with pytest.raises(SectionScopeError):
        any_cache.update_company_section(COMPANY, "client", {})
    with pytest.raises(SectionScopeError):
        any_cache.update_company_section(COMPANY, "noSuchSection", {})
    assert any_cache.client.get(KEY) == before
    assert not all_keys(any_cache.client, "{company_context*")


def test_update_company_section_reaches_every_client(any_cache: ContextCache) -> None:
    context = load_fixture()
    any_cache.set_cached_full_context(PHONE, COMPANY, context)
    any_cache.set_cached_full_context(OTHER, COMPANY, context)
    prices = [{"id": 1, "price": 999}]
    assert any_cache.update_company_section(COMPANY, "services", prices)
    for phone in (PHONE, OTHER):
        got = any_cache.get_cached_full_context(phone, COMPANY)
        assert got is not None
        assert got["services"] == prices


def test_an_update_never_resurrects_an_invalidated_part(any_cache: ContextCache) -> None:
    any_cache.set_cached_full_context(PHONE, COMPANY, {"client": 1})
    any_cache.invalidate_cached_context(PHONE, COMPANY)
    assert any_cache.update_section(PHONE, COMPANY, "client", 2) is False
    assert not any_cache.client.exists(KEY)


def test_an_update_voids_a_load_in_flight(any_cache: ContextCache) -> None:
    def loader(phone: str, company_id: int) -> dict[str, Any]:
        # The database was read before the update landed.
        any_cache.update_section(phone, company_id, "client", "updated")
        return {"client": "stale"}

    assert any_cache.load_full_context(PHONE, COMPANY, loader) == {"client": "stale"}
    assert not any_cache.client.exists(KEY)  # its write was dropped
    assert any_cache.stats().superseded == 1


def test_a_legacy_whole_context_is_dropped_by_an_update(any_cache: ContextCache) -> None:
    any_cache.client.set(KEY, orjson.dumps({"client": 1, "services": []}))
    assert any_cache.update_section(PHONE, COMPANY, "client", 2) is False
    assert not any_cache.client.exists(KEY)  # reloaded, split, on the next load


# -- generations across parts ---------------------------------------------------------------


def test_a_guarded_set_drops_sections_invalidated_since_the_token(any_cache: ContextCache) -> None:
    context = load_fixture()
    token = any_cache.current_generation(PHONE, COMPANY)
    any_cache.invalidate_company(COMPANY, ["staffSchedules"])  # a booking, meanwhile
    assert any_cache.set_cached_full_context(PHONE, COMPANY, context, generation=token) is False
    assert not any_cache.client.exists(section_key("staffSchedules"))  # the stale slots
    assert any_cache.client.exists(section_key("services"))
    assert any_cache.get_cached_full_context(PHONE, COMPANY) is None


def test_confirm_invalidation_reapplies_an_undone_section(any_cache: ContextCache) -> None:
    context = load_fixture()
    any_cache.set_cached_full_context(PHONE, COMPANY, context)
    gens = f"{{company_context:{COMPANY}}}:gen"
    before = any_cache.client.hgetall(gens)
    value = any_cache.client.get(section_key("staffSchedules"))
    done = any_cache.apply_booking_invalidation(PHONE, COMPANY)
    assert done is not None
    # A failover to a replica that never saw it: old generations, old slots.
    any_cache.client.delete(gens)
    if before:
        any_cache.client.hset(gens, mapping=before)
    any_cache.client.set(section_key("staffSchedules"), value)
    outcome = any_cache.confirm_invalidation(COMPANY, done.as_dict(), phone=PHONE)
    assert outcome.value == "reapplied"
    assert not any_cache.client.exists(section_key("staffSchedules"))
    # Now it holds: a second check is a no-op.
    again = any_cache.confirm_invalidation(COMPANY, done, phone=PHONE)
    assert again.value == "in_effect"


# -- layouts --------------------------------------------------------------------------------


def test_a_layout_from_settings_changes_the_scopes(
    any_cache: ContextCache, contract: Contract
) -> None:
    cache = contract.make(make_settings(company_sections="services", booking_sections="services"))
    cache.set_cached_full_context(PHONE, COMPANY, {"services": [1], "staff": [2]})
    assert any_cache.client.exists(section_key("services"))
    assert not any_cache.client.exists(section_key("staff"))  # client scope here
    assert cache.get_cached_full_context(PHONE, COMPANY) == {"services": [1], "staff": [2]}
