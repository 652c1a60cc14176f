"""Company sections cached once per company: the contract, on fakeredis and the real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import COMPANY, PHONE
from test_wire import load_fixture

from ctxcache import (
    CacheSettings,
    ConfigurationError,
    ContextCache,
    SectionedLoader,
)
from ctxcache.core.layout import DEFAULT_COMPANY_SECTIONS

KEY = f"full_context:{COMPANY}:{PHONE}"
OTHER = "+79007654321"
SECTION = "{company_context:%d}:section:%s"


def section_key(name: str, company: int = COMPANY) -> str:
    return SECTION % (company, name)


class Salon:
    """A sectioned loader over a fixture context that counts what it is asked for."""

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self.context = context if context is not None else load_fixture()
        self.clients: list[str] = []
        self.sections: list[tuple[str, ...]] = []
        self.lock = threading.Lock()
        self.on_sections: Callable[[], None] | None = None
        self.delay = 0.0

    def load_client(self, phone: str, company_id: int) -> dict[str, Any] | None:
        with self.lock:
            self.clients.append(phone)
        time.sleep(self.delay)
        data = {k: v for k, v in self.context.items() if k not in DEFAULT_COMPANY_SECTIONS}
        return {**data, "phone": phone}

    def load_company_sections(self, company_id: int, sections: Sequence[str]) -> dict[str, Any]:
        with self.lock:
            self.sections.append(tuple(sections))
        time.sleep(self.delay)
        if self.on_sections is not None:
            self.on_sections()
        return {name: self.context[name] for name in sections}

    def whole(self, phone: str) -> dict[str, Any]:
        return {**self.context, "phone": phone}


def test_a_salon_is_a_sectioned_loader() -> None:
    assert isinstance(Salon(), SectionedLoader)
    assert not isinstance(lambda p, c: {}, SectionedLoader)


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"company_sections": ""}, "CTXCACHE_COMPANY_SECTIONS"),
        ({"company_sections": "services,staff,services"}, "CTXCACHE_COMPANY_SECTIONS"),
        ({"company_sections": "services, ,staff"}, "CTXCACHE_COMPANY_SECTIONS"),
        ({"booking_sections": "client"}, "CTXCACHE_BOOKING_SECTIONS"),
        ({"booking_sections": ""}, "CTXCACHE_BOOKING_SECTIONS"),
    ],
)
def test_bad_layouts_fail_at_start_naming_the_variable(
    overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load(**overrides)
    assert variable in str(info.value)


# -- against the real server, with real threads ----------------------------------------------


def test_fifty_clients_of_one_company_missing_at_once_load_its_sections_once(
    cache_factory: Callable[..., ContextCache],
) -> None:
    salon = Salon()
    salon.delay = 0.2  # the database takes a while; everyone else misses meanwhile
    callers = 50
    phones = [f"+7900111{i:04d}" for i in range(callers)]
    caches = [cache_factory() for _ in range(callers)]
    start = threading.Barrier(callers)

    def call(index: int) -> dict[str, Any] | None:
        start.wait(timeout=10)
        return caches[index].load_full_context(phones[index], COMPANY, salon)

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(call, range(callers), timeout=60))
    assert salon.sections == [DEFAULT_COMPANY_SECTIONS]  # one load of the company's sections
    assert sorted(salon.clients) == sorted(phones)  # each client's own part, once
    assert results == [salon.whole(phone) for phone in phones]


def test_an_invalidation_inside_a_company_load_voids_its_write(
    cache_factory: Callable[..., ContextCache],
) -> None:
    cache, booking = cache_factory(), cache_factory()
    salon = Salon()
    # A booking commits and invalidates while the sections are being read.
    salon.on_sections = lambda: booking.invalidate_company(COMPANY, ["staffSchedules"])
    assert cache.load_full_context(PHONE, COMPANY, salon) == salon.whole(PHONE)
    keys = cache.client
    assert not keys.exists(section_key("staffSchedules"))  # the stale slots were not cached
    assert keys.exists(section_key("services"))  # the rest of the load was
    assert cache.stats().superseded == 1
    salon.on_sections = None
    assert cache.load_full_context(PHONE, COMPANY, salon) == salon.whole(PHONE)
    assert salon.sections[-1] == ("staffSchedules",)


def test_updates_racing_invalidations_never_resurrect_a_part(
    cache_factory: Callable[..., ContextCache],
) -> None:
    writer, invalidator, reader = cache_factory(), cache_factory(), cache_factory()
    stop = threading.Event()
    invalidated_at: list[float] = []

    def invalidate() -> None:
        while not stop.is_set():
            invalidator.invalidate_cached_context(PHONE, COMPANY)
            invalidated_at.append(time.monotonic())

    thread = threading.Thread(target=invalidate)
    thread.start()
    try:
        for i in range(300):
            writer.update_section(PHONE, COMPANY, "step", i)
            if i % 50 == 0:
                writer.set_cached_full_context(PHONE, COMPANY, {"client": 1, "step": -1})
    finally:
        stop.set()
        thread.join(timeout=10)
    invalidator.invalidate_cached_context(PHONE, COMPANY)
    # The last invalidation came after every update: nothing may be left.
    for _ in range(5):
        assert writer.update_section(PHONE, COMPANY, "step", "late") is False
    assert reader.get_cached_full_context(PHONE, COMPANY) is None
    assert len(invalidated_at) > 10
