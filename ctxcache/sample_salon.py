"""Sample salon database in SQLite and a SQL loader of a client's full context.

This is the "slow database" that the cache sits in front of in demos and worker tests.
Everything is generated deterministically from a seed; dates are relative to the fixed
``SAMPLE_TODAY`` so that two builds with the same seed are identical.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

DEFAULT_DB_ENV = "CTXCACHE_SAMPLE_DB"
SCHEMA_VERSION = 1
FIRST_COMPANY_ID = 962302
FIRST_PHONE = "+79001234567"
SAMPLE_TODAY = date(2026, 11, 25)
SERVICES_PER_COMPANY = 160
STAFF_PER_COMPANY = 18
SCHEDULE_DAYS = 14
CONVERSATION_LIMIT = 80
VISIT_HISTORY_LIMIT = 30

_CATEGORIES = ("Стрижки", "Окрашивание", "Ногти", "Брови")
_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SYLLABLES = [c + v for c in "бвгджзклмнпрстфхцчшщ" for v in "аеиоуыэюя"]
# 09:00 .. 20:45 on a 15-minute grid; about half of the quarters become free slots.
_QUARTERS = [f"{h:02d}:{m:02d}" for h in range(9, 21) for m in (0, 15, 30, 45)]
_DEFAULT_PREFERENCES: dict[str, Any] = {
    "favoriteServiceId": None,
    "favoriteStaffId": None,
    "notes": "",
    "preferredTime": None,
}

_SCHEMA = """
CREATE TABLE companies (id INTEGER PRIMARY KEY, title TEXT NOT NULL, address TEXT NOT NULL,
    timezone TEXT NOT NULL, working_hours TEXT NOT NULL, settings TEXT NOT NULL);
CREATE TABLE clients (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    phone TEXT NOT NULL, name TEXT NOT NULL, is_vip INTEGER NOT NULL DEFAULT 0,
    conversation_summary TEXT NOT NULL DEFAULT '', UNIQUE (company_id, phone));
CREATE TABLE services (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    title TEXT NOT NULL, category TEXT NOT NULL, price_min INTEGER NOT NULL,
    price_max INTEGER NOT NULL, duration INTEGER NOT NULL, description TEXT NOT NULL,
    active INTEGER NOT NULL, weight REAL NOT NULL);
CREATE TABLE staff (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    name TEXT NOT NULL, specialization TEXT NOT NULL, rating REAL NOT NULL, bio TEXT NOT NULL,
    avatar TEXT NOT NULL);
CREATE TABLE staff_services (staff_id INTEGER NOT NULL REFERENCES staff,
    service_id INTEGER NOT NULL REFERENCES services, PRIMARY KEY (staff_id, service_id));
CREATE TABLE bookings (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    client_id INTEGER NOT NULL REFERENCES clients, service_id INTEGER NOT NULL REFERENCES services,
    staff_id INTEGER NOT NULL REFERENCES staff, start TEXT NOT NULL, cost INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('completed', 'booked', 'cancelled')));
CREATE TABLE staff_schedules (id INTEGER PRIMARY KEY,
    company_id INTEGER NOT NULL REFERENCES companies, staff_id INTEGER NOT NULL REFERENCES staff,
    slot_start TEXT NOT NULL, booking_id INTEGER REFERENCES bookings,
    UNIQUE (staff_id, slot_start));
CREATE TABLE messages (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients,
    role TEXT NOT NULL, text TEXT NOT NULL, ts TEXT NOT NULL);
CREATE TABLE client_preferences (client_id INTEGER PRIMARY KEY REFERENCES clients,
    favorite_service_id INTEGER, favorite_staff_id INTEGER, preferred_time TEXT,
    notes TEXT NOT NULL DEFAULT '');
CREATE INDEX bookings_client ON bookings (client_id, start);
CREATE INDEX schedules_free ON staff_schedules (company_id, booking_id, slot_start);
CREATE INDEX messages_client ON messages (client_id, ts);
"""


def default_db_path() -> Path:
    """``$CTXCACHE_SAMPLE_DB`` if set, else ``.ctxcache-demo/salon.sqlite3``."""
    return Path(os.environ.get(DEFAULT_DB_ENV) or ".ctxcache-demo/salon.sqlite3")


def _resolve(path: str | Path | None) -> Path:
    return Path(path) if path is not None else default_db_path()


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    # URI mode keeps sqlite from silently creating an empty file at a wrong path;
    # isolation_level=None lets us issue BEGIN ourselves.
    if not path.exists():
        raise FileNotFoundError(
            f"sample salon database {path} does not exist; create it with create_sample_database()"
        )
    uri = f"{path.resolve().as_uri()}?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def _write_tx(path: str | Path | None) -> Iterator[sqlite3.Connection]:
    with closing(_connect(_resolve(path), "rw")) as conn:
        # IMMEDIATE takes the write lock up front, so picking a free slot and taking it
        # cannot race with another writer.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    # Picking from a fixed pseudo-Russian vocabulary is ~10x faster than building every
    # word from syllables, which keeps creation well under a second per company.
    return ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(size)]


class _Builder:
    """Fills one fresh database; ids are explicit so rows can reference each other."""

    def __init__(self, conn: sqlite3.Connection, seed: int, clients: int, vips: int) -> None:
        self.conn = conn
        # Seeded sample data, not secrets; RUF100 too because some lint runs leave S off.
        self.rng = random.Random(seed)  # noqa: S311, RUF100
        self.vocab = _vocabulary(self.rng)
        self.clients, self.vips = clients, min(vips, clients)
        self.slot_ids, self.booking_ids = itertools.count(1), itertools.count(1)

    def words(self, count: int) -> str:
        return " ".join(self.rng.choices(self.vocab, k=count))

    def text(self, low: int, high: int) -> str:
        """About ``low``..``high`` characters; an average word plus space is ~6 chars."""
        return self.words(self.rng.randint(low, high) // 6)

    def company(self, index: int) -> Iterator[str]:
        """Insert one company step by step, yielding each finished step's name."""
        rng, cid = self.rng, FIRST_COMPANY_ID + index
        hours = {day: ["09:00", "21:00"] for day in _WEEK}
        settings = {"booking_window_days": 30, "language": "ru", "reminders": True}
        self.conn.execute(
            "INSERT INTO companies VALUES (?, ?, ?, ?, ?, ?)",
            (
                cid,
                f"Салон {self.words(1)}",
                self.words(6),
                "Europe/Moscow",
                json.dumps(hours),
                json.dumps(settings),
            ),
        )

        first = 10000 + index * SERVICES_PER_COMPANY
        services = []
        for sid in range(first, first + SERVICES_PER_COMPANY):
            low = rng.randint(800, 3000)
            services.append(
                (
                    sid,
                    cid,
                    self.words(3),
                    rng.choice(_CATEGORIES),
                    low,
                    low + rng.randint(500, 3000),
                    rng.choice((30, 60, 90, 120)),
                    self.text(225, 260),
                    int(rng.random() > 0.05),
                    round(rng.uniform(0.01, 1.0), 4),
                )
            )
        self.conn.executemany("INSERT INTO services VALUES (?,?,?,?,?,?,?,?,?,?)", services)
        yield "services"

        staff_ids = list(range(index * STAFF_PER_COMPANY + 1, (index + 1) * STAFF_PER_COMPANY + 1))
        self.conn.executemany(
            "INSERT INTO staff VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    st,
                    cid,
                    f"Мастер {self.words(1)}",
                    self.words(3),
                    rng.choice((4.5, 4.7, 4.9, 5.0)),
                    self.text(215, 265),
                    f"https://cdn.example/{st}.jpg",
                )
                for st in staff_ids
            ],
        )
        performers = {s[0]: rng.sample(staff_ids, 6) for s in services}
        self.conn.executemany(
            "INSERT INTO staff_services VALUES (?, ?)",
            [(st, sid) for sid, sts in performers.items() for st in sts],
        )
        yield "staff"

        slots = [
            (next(self.slot_ids), cid, st, f"{SAMPLE_TODAY + timedelta(days=d)}T{q}:00")
            for st in staff_ids
            for d in range(SCHEDULE_DAYS)
            for q in _QUARTERS
            if rng.random() < 0.5
        ]
        self.conn.executemany("INSERT INTO staff_schedules VALUES (?, ?, ?, ?, NULL)", slots)
        yield "staff_schedules"

        self._clients(index, cid, services, performers, slots)
        yield "clients"

    def _clients(
        self,
        index: int,
        cid: int,
        services: list[tuple[Any, ...]],
        performers: dict[int, list[int]],
        slots: list[tuple[int, int, int, str]],
    ) -> None:
        rng = self.rng
        weights = [s[9] for s in services]
        free_slots = rng.sample(slots, len(slots))  # pop() from a shuffled copy = random pick
        first_ts = datetime.combine(SAMPLE_TODAY, time(9))
        rows: dict[str, list[tuple[Any, ...]]] = {
            key: [] for key in ("clients", "bookings", "slots", "messages", "preferences")
        }
        for k in range(self.clients):
            client_id = index * self.clients + k + 1
            vip = k < self.vips
            chatty = vip or rng.random() < 0.1
            rows["clients"].append(
                (
                    client_id,
                    cid,
                    f"+7{9001234567 + client_id - 1}",
                    self.words(1).capitalize(),
                    int(vip),
                    self.text(650, 750) if chatty else "",
                )
            )
            for svc in rng.choices(
                services, weights, k=rng.randint(30, 45) if vip else rng.randint(0, 25)
            ):
                day = SAMPLE_TODAY - timedelta(days=rng.randint(1, 365))
                rows["bookings"].append(
                    (
                        next(self.booking_ids),
                        cid,
                        client_id,
                        svc[0],
                        rng.choice(performers[svc[0]]),
                        f"{day}T{rng.choice(_QUARTERS)}:00",
                        rng.randint(svc[4], svc[5]),
                        "cancelled" if rng.random() < 0.08 else "completed",
                    )
                )
            if (vip or rng.random() < 0.15) and free_slots:
                slot_id, _, staff_id, start = free_slots.pop()
                svc = rng.choice([s for s in services if staff_id in performers[s[0]]])
                booking_id = next(self.booking_ids)
                rows["bookings"].append(
                    (
                        booking_id,
                        cid,
                        client_id,
                        svc[0],
                        staff_id,
                        start,
                        (svc[4] + svc[5]) // 2,
                        "booked",
                    )
                )
                rows["slots"].append((booking_id, slot_id))
            rows["messages"].extend(  # newest first, 5 minutes apart, like the fixture
                (
                    client_id,
                    rng.choice(("user", "assistant")),
                    self.text(40, 240),
                    (first_ts - timedelta(minutes=5 * i)).isoformat(),
                )
                for i in range(CONVERSATION_LIMIT if chatty else rng.randint(0, 12))
            )
            favorite = rng.choice(services)[0]
            rows["preferences"].append(
                (
                    client_id,
                    favorite,
                    rng.choice(performers[favorite]),
                    rng.choice(("morning", "afternoon", "evening")),
                    self.text(65, 75),
                )
            )
        for key, sql in (
            ("clients", "INSERT INTO clients VALUES (?, ?, ?, ?, ?, ?)"),
            ("bookings", "INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            ("slots", "UPDATE staff_schedules SET booking_id = ? WHERE id = ?"),
            ("messages", "INSERT INTO messages VALUES (NULL, ?, ?, ?, ?)"),
            ("preferences", "INSERT INTO client_preferences VALUES (?, ?, ?, ?, ?)"),
        ):
            self.conn.executemany(sql, rows[key])


def _is_ready(path: Path) -> bool:
    try:
        with closing(_connect(path, "ro")) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            has_data = conn.execute("SELECT EXISTS (SELECT 1 FROM companies)").fetchone()[0]
    except (FileNotFoundError, sqlite3.DatabaseError):
        return False
    return bool(version == SCHEMA_VERSION and has_data)


def create_sample_database(
    path: str | Path | None = None,
    *,
    companies: int = 2,
    clients_per_company: int = 200,
    vip_per_company: int = 3,
    seed: int = 962302,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Build the sample database at ``path`` unless a complete one is already there."""
    if companies < 1 or clients_per_company < 1:
        raise ValueError("companies and clients_per_company must be at least 1")
    target = _resolve(path)
    if _is_ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename: readers never see a half-built database.
    # (Not mkstemp: its 0600 mode would stick to the database; sqlite honours the umask.)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
            # Durability of the temp file does not matter until the final fsync below.
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN")
            builder = _Builder(conn, seed, clients_per_company, vip_per_company)
            for index in range(companies):
                for step in builder.company(index):
                    if progress is not None:
                        progress(step, index + 1, companies)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if not _is_ready(target):  # else another process won the race: keep its (used?) copy
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


class SqlContextLoader:
    """Callable ``(phone, company_id) -> context`` that assembles the context with SQL."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = _resolve(path)

    def __call__(self, phone: str, company_id: int) -> dict[str, Any]:
        # A fresh read-only connection per call: safe from any thread or process.
        with closing(_connect(self.path, "ro")) as conn:
            # One read transaction = one consistent snapshot across all the SELECTs.
            conn.execute("BEGIN")
            try:
                return self._load(conn, phone, company_id)
            finally:
                conn.execute("ROLLBACK")

    def _load(self, conn: sqlite3.Connection, phone: str, company_id: int) -> dict[str, Any]:
        company = conn.execute(
            "SELECT id AS company_id, title, address, timezone, working_hours,"
            " settings FROM companies WHERE id = ?",
            (company_id,),
        ).fetchone()
        if company is None:
            raise LookupError(f"company {company_id} not found in sample database {self.path}")
        client = _client(conn, phone, company_id)
        conversation: list[dict[str, Any]] = []
        preferences, summary = dict(_DEFAULT_PREFERENCES), ""
        if client is not None:  # a first-time client keeps the defaults above
            conversation = [
                dict(row)
                for row in conn.execute(
                    "SELECT role, text, ts AS timestamp FROM messages WHERE client_id = ?"
                    " ORDER BY ts DESC, id DESC LIMIT ?",
                    (client["id"], CONVERSATION_LIMIT),
                )
            ]
            preferences.update(
                favoriteServiceId=client["favorite_service_id"],
                favoriteStaffId=client["favorite_staff_id"],
                notes=client.pop("notes") or "",
                preferredTime=client.pop("preferred_time"),
            )
            summary = client.pop("conversation_summary")
        pairs = conn.execute(
            "SELECT ss.staff_id, ss.service_id FROM staff_services ss JOIN staff st"
            " ON st.id = ss.staff_id WHERE st.company_id = ? ORDER BY ss.staff_id, ss.service_id",
            (company_id,),
        ).fetchall()
        return {
            "phone": phone,
            "companyId": company_id,
            "company": {
                **dict(company),
                "working_hours": json.loads(company["working_hours"]),
                "settings": json.loads(company["settings"]),
            },
            "client": client,
            "services": _services(conn, company_id, pairs),
            "staff": _staff(conn, company_id, pairs),
            "staffSchedules": _free_slots(conn, company_id),
            "conversation": conversation,
            "businessStats": {
                "popularServices": [
                    dict(row)
                    for row in conn.execute(
                        "SELECT s.id AS service_id, COUNT(b.id) AS booking_count FROM services s"
                        " LEFT JOIN bookings b ON b.service_id = s.id AND b.status != 'cancelled'"
                        " WHERE s.company_id = ? GROUP BY s.id ORDER BY s.id",
                        (company_id,),
                    )
                ]
            },
            "preferences": preferences,
            "conversationSummary": summary,
            "intermediate": {
                "processingStatus": "completed" if conversation else "new",
                "lastMessage": next((m["text"] for m in conversation if m["role"] == "user"), ""),
            },
        }


def _client(conn: sqlite3.Connection, phone: str, company_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT c.id, c.name, c.phone, c.is_vip, c.conversation_summary,"
        " p.favorite_service_id, p.favorite_staff_id, p.preferred_time, p.notes,"
        " (SELECT COUNT(*) FROM bookings b WHERE b.client_id = c.id"
        "  AND b.status = 'completed') AS visits_count,"
        " (SELECT MAX(date(b.start)) FROM bookings b WHERE b.client_id = c.id"
        "  AND b.status = 'completed') AS last_visit"
        " FROM clients c LEFT JOIN client_preferences p ON p.client_id = c.id"
        " WHERE c.company_id = ? AND c.phone = ?",
        (company_id, phone),
    ).fetchone()
    if row is None:
        return None
    client = dict(row)
    client["is_vip"] = bool(client["is_vip"])
    client["visit_history"] = [
        dict(r)
        for r in conn.execute(
            "SELECT date(start) AS date, service_id, staff_id, cost FROM bookings"
            " WHERE client_id = ? AND status = 'completed' ORDER BY start DESC, id DESC LIMIT ?",
            (client["id"], VISIT_HISTORY_LIMIT),
        )
    ]
    client["upcomingBookings"] = [
        dict(r)
        for r in conn.execute(
            "SELECT b.id AS booking_id, b.start, b.service_id, s.title AS service_title,"
            " b.staff_id, st.name AS staff_name, b.cost, b.status FROM bookings b"
            " JOIN services s ON s.id = b.service_id JOIN staff st ON st.id = b.staff_id"
            " WHERE b.client_id = ? AND b.status = 'booked' ORDER BY b.start, b.id",
            (client["id"],),
        )
    ]
    return client


def _services(
    conn: sqlite3.Connection, company_id: int, pairs: list[sqlite3.Row]
) -> list[dict[str, Any]]:
    staff_ids: dict[int, list[int]] = {}
    for pair in pairs:
        staff_ids.setdefault(pair["service_id"], []).append(pair["staff_id"])
    return [
        {**dict(row), "active": bool(row["active"]), "staff_ids": staff_ids.get(row["id"], [])}
        for row in conn.execute(
            "SELECT id, title, category, price_min, price_max, duration, description, active,"
            " weight FROM services WHERE company_id = ? ORDER BY id",
            (company_id,),
        )
    ]


def _staff(
    conn: sqlite3.Connection, company_id: int, pairs: list[sqlite3.Row]
) -> list[dict[str, Any]]:
    service_ids: dict[int, list[int]] = {}
    for pair in pairs:
        service_ids.setdefault(pair["staff_id"], []).append(pair["service_id"])
    return [
        {**dict(row), "service_ids": service_ids.get(row["id"], [])}
        for row in conn.execute(
            "SELECT id, name, specialization, rating, bio, avatar FROM staff"
            " WHERE company_id = ? ORDER BY id",
            (company_id,),
        )
    ]


def _free_slots(conn: sqlite3.Connection, company_id: int) -> list[dict[str, Any]]:
    schedules: list[dict[str, Any]] = []
    for row in conn.execute(
        "SELECT staff_id, date(slot_start) AS day, slot_start FROM staff_schedules"
        " WHERE company_id = ? AND booking_id IS NULL ORDER BY staff_id, slot_start",
        (company_id,),
    ):
        if not schedules or (schedules[-1]["staff_id"], schedules[-1]["date"]) != (
            row["staff_id"],
            row["day"],
        ):
            schedules.append({"staff_id": row["staff_id"], "date": row["day"], "slots": []})
        schedules[-1]["slots"].append(row["slot_start"])
    return schedules


def load_context(phone: str, company_id: int) -> dict[str, Any]:
    """The SQL loader bound to :func:`default_db_path` (importable by dotted name)."""
    return SqlContextLoader()(phone, company_id)


def list_vip_clients(path: str | Path | None = None) -> list[tuple[str, int]]:
    """``(phone, company_id)`` of every VIP client, ordered by company and client id."""
    with closing(_connect(_resolve(path), "ro")) as conn:
        rows = conn.execute(
            "SELECT phone, company_id FROM clients WHERE is_vip = 1 ORDER BY company_id, id"
        )
        return [(row["phone"], row["company_id"]) for row in rows]


def vip_clients() -> list[tuple[str, int]]:
    """VIP clients of the database at :func:`default_db_path`."""
    return list_vip_clients(default_db_path())


def sample_clients(path: str | Path | None, company_id: int, limit: int = 10) -> list[str]:
    """Up to ``limit`` client phones of a company, VIPs first."""
    with closing(_connect(_resolve(path), "ro")) as conn:
        rows = conn.execute(
            "SELECT phone FROM clients WHERE company_id = ? ORDER BY is_vip DESC, id LIMIT ?",
            (company_id, limit),
        )
        return [row["phone"] for row in rows]


def create_booking(
    path: str | Path | None,
    phone: str,
    company_id: int,
    *,
    service_id: int | None = None,
    staff_id: int | None = None,
    start: str | None = None,
) -> int:
    """Book the earliest free slot matching the given filters; returns the booking id.

    An unknown phone in a known company is registered as a new client.
    """
    with _write_tx(path) as conn:
        if conn.execute("SELECT 1 FROM companies WHERE id = ?", (company_id,)).fetchone() is None:
            raise LookupError(f"company {company_id} not found")
        conn.execute(
            "INSERT OR IGNORE INTO clients (company_id, phone, name) VALUES (?, ?, '')",
            (company_id, phone),
        )
        slot = conn.execute(
            "SELECT sl.id AS slot_id, sl.staff_id, sl.slot_start, sv.id AS service_id,"
            " (sv.price_min + sv.price_max) / 2 AS cost FROM staff_schedules sl"
            " JOIN staff_services ss ON ss.staff_id = sl.staff_id"
            " JOIN services sv ON sv.id = ss.service_id AND sv.active = 1"
            " WHERE sl.company_id = :cid AND sl.booking_id IS NULL"
            " AND (:svc IS NULL OR sv.id = :svc) AND (:st IS NULL OR sl.staff_id = :st)"
            " AND (:start IS NULL OR sl.slot_start = :start)"
            " ORDER BY sl.slot_start, sl.staff_id, sv.id LIMIT 1",
            {"cid": company_id, "svc": service_id, "st": staff_id, "start": start},
        ).fetchone()
        if slot is None:
            raise ValueError(
                f"no free slot in company {company_id} for service={service_id}"
                f" staff={staff_id} start={start}"
            )
        booking_id: int = conn.execute(
            "INSERT INTO bookings (company_id, client_id, service_id, staff_id, start, cost,"
            " status) SELECT ?, id, ?, ?, ?, ?, 'booked' FROM clients"
            " WHERE company_id = ? AND phone = ? RETURNING id",
            (
                company_id,
                slot["service_id"],
                slot["staff_id"],
                slot["slot_start"],
                slot["cost"],
                company_id,
                phone,
            ),
        ).fetchone()[0]
        conn.execute(
            "UPDATE staff_schedules SET booking_id = ? WHERE id = ?", (booking_id, slot["slot_id"])
        )
        return booking_id


def cancel_booking(path: str | Path | None, booking_id: int) -> None:
    """Mark an upcoming booking cancelled and free its slot (no-op if already cancelled)."""
    with _write_tx(path) as conn:
        row = conn.execute("SELECT status FROM bookings WHERE id = ?", (booking_id,)).fetchone()
        if row is None:
            raise LookupError(f"booking {booking_id} not found")
        if row["status"] == "completed":
            raise ValueError(f"booking {booking_id} is already completed")
        conn.execute("UPDATE bookings SET status = 'cancelled' WHERE id = ?", (booking_id,))
        conn.execute(
            "UPDATE staff_schedules SET booking_id = NULL WHERE booking_id = ?", (booking_id,)
        )
