"""Tests of the sample salon SQLite database and its SQL context loader (no Redis needed)."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ctxcache import SectionLayout, SectionScopeError
from ctxcache import sample_salon as salon

VIP_PHONE, COMPANY = "+79001234567", 962302
FIXTURE = Path(__file__).parent / "data" / "full_context_300k.json"
# The Node service's context: its sections, in its order.
FIXTURE_KEYS = list(json.loads(FIXTURE.read_bytes()))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("salon") / "nested" / "salon.sqlite3"
    return salon.create_sample_database(path, clients_per_company=30)


@pytest.fixture
def fresh_db(tmp_path: Path) -> Path:
    """A private database for tests that write, so they cannot disturb the shared one."""
    return salon.create_sample_database(tmp_path / "salon.sqlite3", clients_per_company=5)


def _size(context: dict[str, object]) -> int:
    return len(json.dumps(context, ensure_ascii=False).encode())


def test_database_has_all_tables(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        counts = {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in (
                "companies",
                "clients",
                "services",
                "staff",
                "staff_schedules",
                "bookings",
                "messages",
                "client_preferences",
            )
        }
        first = conn.execute("SELECT company_id, phone, is_vip FROM clients ORDER BY id").fetchone()
    assert counts["companies"] == 2
    assert counts["clients"] == 60
    assert counts["services"] == 2 * salon.SERVICES_PER_COMPANY
    assert counts["staff"] == 2 * salon.STAFF_PER_COMPANY
    assert all(counts.values())
    assert first == (COMPANY, VIP_PHONE, 1)


def test_creation_is_idempotent_atomic_and_reports_progress(tmp_path: Path) -> None:
    steps: list[tuple[str, int, int]] = []
    path = salon.create_sample_database(
        tmp_path / "a" / "b.sqlite3",
        clients_per_company=3,
        progress=lambda step, done, total: steps.append((step, done, total)),
    )
    stat = path.stat()
    assert salon.create_sample_database(path, clients_per_company=3) == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert [p.name for p in path.parent.iterdir()] == ["b.sqlite3"]  # no temp file left over
    assert steps[-1] == ("clients", 2, 2)


def test_same_seed_gives_same_context(fresh_db: Path, tmp_path: Path) -> None:
    other = salon.create_sample_database(tmp_path / "other.sqlite3", clients_per_company=5)
    load_a, load_b = salon.SqlContextLoader(fresh_db), salon.SqlContextLoader(other)
    assert load_a(VIP_PHONE, COMPANY) == load_b(VIP_PHONE, COMPANY)


def test_context_shape_and_size(db: Path) -> None:
    context = salon.SqlContextLoader(db)(VIP_PHONE, COMPANY)
    assert list(context) == FIXTURE_KEYS
    assert (context["phone"], context["companyId"]) == (VIP_PHONE, COMPANY)
    assert (context["client"]["phone"], context["client"]["is_vip"]) == (VIP_PHONE, True)
    assert context["client"]["visit_history"]
    assert len(context["services"]) == salon.SERVICES_PER_COMPANY
    assert len(context["staff"]) == salon.STAFF_PER_COMPANY
    assert len(context["conversation"]) == salon.CONVERSATION_LIMIT
    assert {"staff_id", "date", "slots"} <= set(context["staffSchedules"][0])
    assert 200_000 <= _size(context) <= 400_000


def test_unknown_company_raises(db: Path) -> None:
    loader = salon.SqlContextLoader(db, layout=SectionLayout())
    with pytest.raises(LookupError, match="12345"):
        loader(VIP_PHONE, 12345)
    with pytest.raises(LookupError, match="12345"):
        loader.load_client(VIP_PHONE, 12345)
    with pytest.raises(LookupError, match="12345"):
        loader.load_company_sections(12345, ["services"])


def test_unknown_client_gets_defaults(db: Path) -> None:
    context = salon.SqlContextLoader(db)("+70000000000", COMPANY)
    assert list(context) == FIXTURE_KEYS
    assert context["client"] is None
    assert context["conversation"] == []
    assert context["preferences"]["favoriteServiceId"] is None
    assert context["services"]


def test_missing_database_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        salon.SqlContextLoader(tmp_path / "nope.sqlite3")(VIP_PHONE, COMPANY)
    assert not (tmp_path / "nope.sqlite3").exists()


def test_vip_lists(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vips = salon.list_vip_clients(db)
    assert len(vips) == 2 * 3
    assert (VIP_PHONE, COMPANY) in vips
    monkeypatch.setenv(salon.DEFAULT_DB_ENV, str(db))
    assert salon.default_db_path() == db
    assert salon.vip_clients() == vips
    assert salon.load_context(*vips[-1])["client"]["is_vip"] is True
    assert salon.sample_clients(db, COMPANY, 5)[0] == VIP_PHONE


def test_default_db_path_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(salon.DEFAULT_DB_ENV, raising=False)
    assert salon.default_db_path() == Path(".ctxcache-demo/salon.sqlite3")


def test_booking_appears_and_cancel_removes_it(fresh_db: Path) -> None:
    load = salon.SqlContextLoader(fresh_db)
    phone = salon.sample_clients(fresh_db, COMPANY, 5)[-1]
    before = load(phone, COMPANY)
    booking_id = salon.create_booking(fresh_db, phone, COMPANY)
    after = load(phone, COMPANY)
    booking = next(b for b in after["client"]["upcomingBookings"] if b["booking_id"] == booking_id)
    assert booking["status"] == "booked"
    free = {(s["staff_id"], slot) for s in after["staffSchedules"] for slot in s["slots"]}
    assert (booking["staff_id"], booking["start"]) not in free
    assert after["businessStats"] != before["businessStats"]

    salon.cancel_booking(fresh_db, booking_id)
    cancelled = load(phone, COMPANY)
    assert booking_id not in {b["booking_id"] for b in cancelled["client"]["upcomingBookings"]}
    assert cancelled["staffSchedules"] == before["staffSchedules"]
    with pytest.raises(LookupError):
        salon.cancel_booking(fresh_db, 10**9)


def test_booking_with_explicit_slot_and_new_client(fresh_db: Path) -> None:
    slot = salon.SqlContextLoader(fresh_db)(VIP_PHONE, COMPANY)["staffSchedules"][3]
    service = salon.SqlContextLoader(fresh_db)(VIP_PHONE, COMPANY)["staff"][0]["service_ids"][0]
    new_phone = "+79990000001"
    booking_id = salon.create_booking(
        fresh_db, new_phone, COMPANY, staff_id=slot["staff_id"], start=slot["slots"][0]
    )
    client = salon.SqlContextLoader(fresh_db)(new_phone, COMPANY)["client"]
    assert client is not None
    assert [(b["booking_id"], b["start"]) for b in client["upcomingBookings"]] == [
        (booking_id, slot["slots"][0])
    ]
    with pytest.raises(ValueError, match="no free slot"):  # the slot is taken now
        salon.create_booking(
            fresh_db, VIP_PHONE, COMPANY, staff_id=slot["staff_id"], start=slot["slots"][0]
        )
    assert salon.create_booking(fresh_db, VIP_PHONE, COMPANY, service_id=service) > booking_id
    with pytest.raises(LookupError):
        salon.create_booking(fresh_db, VIP_PHONE, 12345)


def test_loader_from_many_threads(db: Path) -> None:
    load = salon.SqlContextLoader(db)
    phones = salon.sample_clients(db, COMPANY, 4)
    expected = {phone: load(phone, COMPANY) for phone in phones}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda phone: (phone, load(phone, COMPANY)), phones * 3))
    assert all(context == expected[phone] for phone, context in results)


def test_the_parts_merge_into_the_whole(db: Path) -> None:
    layout = SectionLayout()
    loader = salon.SqlContextLoader(db, layout=layout)
    for phone in [*salon.sample_clients(db, COMPANY, 5), "+70000000000"]:
        client = loader.load_client(phone, COMPANY)
        company = loader.load_company_sections(COMPANY, layout.company_sections)
        assert not set(client) & set(layout.company_sections)
        assert list(company) == list(layout.company_sections)
        assert {**client, **company} == loader(phone, COMPANY)
    first_timer = loader.load_client("+70000000000", COMPANY)
    assert (first_timer["client"], first_timer["conversation"]) == (None, [])


def test_load_client_follows_the_layout(db: Path) -> None:
    layout = SectionLayout(("services", "conversation"), ("services",))
    loader = salon.SqlContextLoader(db, layout=layout)
    client = loader.load_client(VIP_PHONE, COMPANY)
    assert "services" not in client
    assert "conversation" not in client  # the layout says company; the salon cannot
    assert {"company", "staff", "staffSchedules", "businessStats"} <= set(client)
    with pytest.raises(SectionScopeError, match="'conversation'"):
        loader.load_company_sections(COMPANY, ["services", "conversation"])
    with pytest.raises(SectionScopeError, match="'promotions'"):
        loader.load_company_sections(COMPANY, ["promotions"])
    assert loader.load_company_sections(COMPANY, ["companyId"]) == {"companyId": COMPANY}


def test_the_default_layout_comes_from_the_settings(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTXCACHE_COMPANY_SECTIONS", "services,staff")
    monkeypatch.setenv("CTXCACHE_BOOKING_SECTIONS", "staff")
    client = salon.SqlContextLoader(db).load_client(VIP_PHONE, COMPANY)
    assert set(client) == set(FIXTURE_KEYS) - {"services", "staff"}
