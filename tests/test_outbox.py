"""The transactional outbox: a booking that commits and then crashes still gets invalidated."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_celery
from conftest import COMPANY, PHONE, SpareRedis, free_port, make_settings

from ctxcache import ContextCache
from tasks import create_app, runtime
from tasks.outbox import OUTBOX_TABLE, create_outbox_table, record_invalidation, relay_outbox

KEY = f"full_context:{COMPANY}:{PHONE}"
cache = test_celery.cache  # the hooks' cache on the test Redis; bound here for pytest


@pytest.fixture
def database(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "bookings.sqlite3")
    connection.execute("CREATE TABLE bookings (id INTEGER PRIMARY KEY, phone TEXT)")
    create_outbox_table(connection, "sqlite")
    yield connection
    connection.close()


def book(connection: sqlite3.Connection, *, commit: bool) -> None:
    """The booking code: the booking and its invalidation in one transaction."""
    connection.execute("INSERT INTO bookings (phone) VALUES (?)", (PHONE,))
    record_invalidation(connection, "8 (900) 123-45-67", COMPANY, "booking created")
    if commit:
        connection.commit()  # ... and the process dies here, before any hook
    else:
        connection.rollback()


def outbox_rows(connection: sqlite3.Connection) -> list[tuple[str, int, str]]:
    query = f"SELECT phone, company_id, event FROM {OUTBOX_TABLE}"
    return list(connection.execute(query))


def test_a_booking_committed_without_its_hook_is_invalidated_by_the_relay(
    database: sqlite3.Connection, cache: ContextCache
) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
    book(database, commit=True)
    assert outbox_rows(database) == [(PHONE, COMPANY, "booking created")]
    assert cache.client.exists(KEY)  # no hook ran

    dead_broker = create_app(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    assert relay_outbox(database, app=dead_broker) == 1  # applied inline; no safety net
    assert not cache.client.exists(KEY)
    assert outbox_rows(database) == []


def test_a_booking_rolled_back_leaves_nothing_to_relay(
    database: sqlite3.Connection, cache: ContextCache
) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, {"current": True})
    book(database, commit=False)
    assert outbox_rows(database) == []
    assert relay_outbox(database) == 0
    assert cache.get_cached_full_context(PHONE, COMPANY) == {"current": True}


def test_bad_input_fails_the_booking_before_it_commits(
    database: sqlite3.Connection, cache: ContextCache
) -> None:
    with pytest.raises(ValueError):
        record_invalidation(database, "not a phone", COMPANY)
    database.rollback()
    assert outbox_rows(database) == []


def test_rows_stay_while_neither_redis_nor_the_broker_takes_them(
    database: sqlite3.Connection, spare_redis: SpareRedis
) -> None:
    cache = ContextCache.from_settings(make_settings(redis_url=spare_redis.url))
    runtime.reset()
    runtime.configure(cache=cache)
    dead_broker = create_app(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        book(database, commit=True)
        spare_redis.stop()
        assert relay_outbox(database, app=dead_broker) == 0
        assert len(outbox_rows(database)) == 1
    finally:
        runtime.reset()
        cache.close()
