"""The sample salon's loader on the real Redis, in both loader forms (issue 9).

The merged context a read returns must equal the loader's whole output; a
new client of a company whose sections are cached loads only its own part;
after a booking, the other clients of the company stop being offered the
booked slot once the availability sections are invalidated or updated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ctxcache import CacheSettings, ContextCache, SectionedLoader
from ctxcache import sample_salon as salon

COMPANIES = (salon.FIRST_COMPANY_ID, salon.FIRST_COMPANY_ID + 1)
FIRST_TIMER = "+79990000042"  # a phone the database does not know


class CountingLoader:
    """The sectioned SQL loader, recording every call the cache makes to it."""

    def __init__(self, db: Path) -> None:
        self.inner = salon.SqlContextLoader(db)
        self.calls: list[tuple[str, Any]] = []

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        self.calls.append(("client", phone))
        return self.inner.load_client(phone, company_id)

    def load_company_sections(self, company_id: int, sections: Sequence[str]) -> dict[str, Any]:
        self.calls.append(("company", tuple(sections)))
        return self.inner.load_company_sections(company_id, sections)

    def take(self) -> list[tuple[str, Any]]:
        calls, self.calls = self.calls, []
        return calls


def plain(db: Path) -> Callable[[str, int], dict[str, Any]]:
    """The same loader in the plain form: a function, no sections."""
    whole = salon.SqlContextLoader(db)

    def load(phone: str, company_id: int) -> dict[str, Any]:
        return whole(phone, company_id)

    return load


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return salon.create_sample_database(
        tmp_path_factory.mktemp("sections") / "salon.sqlite3", clients_per_company=30
    )


@pytest.fixture
def fresh_db(tmp_path: Path) -> Path:
    """A private database for the tests that book."""
    return salon.create_sample_database(tmp_path / "salon.sqlite3", clients_per_company=5)


@pytest.fixture
def cache(real_cache: ContextCache) -> ContextCache:
    """The cache on the real test Redis, emptied before and after each test."""
    return real_cache


def test_the_salon_loader_is_sectioned() -> None:
    assert isinstance(salon.SqlContextLoader(), SectionedLoader)
    assert isinstance(salon.load_context, SectionedLoader)
    assert not isinstance(plain(Path("unused")), SectionedLoader)


@pytest.mark.parametrize("form", ["sectioned", "plain"])
def test_the_merged_context_equals_the_loaders_output(
    db: Path, cache: ContextCache, form: str
) -> None:
    whole = salon.SqlContextLoader(db)
    counting = CountingLoader(db)
    loader = counting if form == "sectioned" else plain(db)
    clients = [(p, c) for c in COMPANIES for p in [*salon.sample_clients(db, c, 30), FIRST_TIMER]]
    assert len(clients) == 62
    hits = cache.stats().hits
    for phone, company in clients:
        expected = whole(phone, company)
        assert cache.load_full_context(phone, company, loader) == expected, (phone, company)
        # The second read: every part cached.
        assert cache.load_full_context(phone, company, loader) == expected, (phone, company)
        assert cache.get_cached_full_context(phone, company) == expected
    assert cache.stats().hits - hits == 2 * len(clients)
    if form == "sectioned":  # each company's sections were loaded once, by its first client
        sections = [call for call in counting.take() if call[0] == "company"]
        assert sections == [("company", CacheSettings.load().section_layout().company_sections)] * 2


def test_a_new_client_of_a_cached_company_loads_only_its_own_part(
    db: Path, cache: ContextCache
) -> None:
    loader = CountingLoader(db)
    whole = salon.SqlContextLoader(db)
    first, second, third = salon.sample_clients(db, salon.FIRST_COMPANY_ID, 3)
    company = salon.FIRST_COMPANY_ID
    cache.load_full_context(first, company, loader)
    assert [kind for kind, _ in loader.take()] == ["client", "company"]
    for phone in (second, third, FIRST_TIMER):
        assert cache.load_full_context(phone, company, loader) == whole(phone, company)
        assert loader.take() == [("client", phone)]  # load_company_sections is not called
    # The other company's sections are its own: its first client loads them.
    other = salon.sample_clients(db, COMPANIES[1], 1)[0]
    cache.load_full_context(other, COMPANIES[1], loader)
    assert [kind for kind, _ in loader.take()] == ["client", "company"]


def first_offered_slot(context: dict[str, Any]) -> tuple[int, str]:
    day = context["staffSchedules"][0]
    return day["staff_id"], day["slots"][0]


def offered(context: dict[str, Any]) -> set[tuple[int, str]]:
    return {(day["staff_id"], slot) for day in context["staffSchedules"] for slot in day["slots"]}


@pytest.mark.parametrize("form", ["sectioned", "plain"])
@pytest.mark.parametrize("how", ["invalidate_company", "apply_booking_invalidation"])
def test_a_booked_slot_disappears_for_the_other_clients(
    fresh_db: Path, cache: ContextCache, form: str, how: str
) -> None:
    whole = salon.SqlContextLoader(fresh_db)
    counting = CountingLoader(fresh_db)
    loader = counting if form == "sectioned" else plain(fresh_db)
    company = salon.FIRST_COMPANY_ID
    a, b, c = salon.sample_clients(fresh_db, company, 3)
    for phone in (a, b, c):
        cache.load_full_context(phone, company, loader)
    staff_id, start = slot = first_offered_slot(cache.load_full_context(b, company, loader))
    counting.take()

    booking = salon.create_booking(fresh_db, a, company, staff_id=staff_id, start=start)
    assert slot not in offered(whole(b, company))
    stale = cache.get_cached_full_context(b, company)
    assert stale is not None
    assert slot in offered(stale)  # still offered: the cache has not been told yet
    booking_sections = CacheSettings.load().section_layout().booking_sections
    if how == "invalidate_company":  # what the booking hook does for the company
        assert cache.invalidate_cached_context(a, company)
        assert cache.invalidate_company(company, booking_sections)
    else:
        assert cache.apply_booking_invalidation(a, company) is not None

    for phone in (b, c):  # every other client of the company, at once
        context = cache.load_full_context(phone, company, loader)
        assert context is not None
        assert slot not in offered(context)
        assert context == whole(phone, company)
    mine = cache.load_full_context(a, company, loader)
    assert mine == whole(a, company)
    assert booking in {item["booking_id"] for item in mine["client"]["upcomingBookings"]}
    if form == "sectioned":  # only the availability was reloaded, once, not the catalogue
        assert counting.take() == [("company", booking_sections), ("client", a)]


def test_a_booked_slot_disappears_through_a_partial_update(
    fresh_db: Path, cache: ContextCache
) -> None:
    whole = salon.SqlContextLoader(fresh_db)
    loader = CountingLoader(fresh_db)
    company = salon.FIRST_COMPANY_ID
    a, b = salon.sample_clients(fresh_db, company, 2)
    cache.load_full_context(a, company, loader)
    staff_id, start = slot = first_offered_slot(cache.load_full_context(b, company, loader))
    salon.create_booking(fresh_db, a, company, staff_id=staff_id, start=start)
    names = CacheSettings.load().section_layout().booking_sections
    for name, value in whole.load_company_sections(company, names).items():
        assert cache.update_company_section(company, name, value)
    loader.take()

    context = cache.load_full_context(b, company, loader)
    assert context is not None
    assert slot not in offered(context)
    assert context == whole(b, company)
    assert loader.take() == []  # a full hit: nothing was reloaded


def test_a_custom_layout_still_merges_into_the_whole(
    db: Path, cache_factory: Callable[..., ContextCache]
) -> None:
    cache = cache_factory(company_sections="companyId,services,staff", booking_sections="staff")
    layout = cache.core.layout
    loader = salon.SqlContextLoader(db, layout=layout)
    assert "company" in loader.load_client(salon.FIRST_PHONE, salon.FIRST_COMPANY_ID)
    whole = salon.SqlContextLoader(db)
    for phone in salon.sample_clients(db, salon.FIRST_COMPANY_ID, 4):
        expected = whole(phone, salon.FIRST_COMPANY_ID)
        assert cache.load_full_context(phone, salon.FIRST_COMPANY_ID, loader) == expected
        assert cache.get_cached_full_context(phone, salon.FIRST_COMPANY_ID) == expected
