"""Builds the sample salon database, deterministically from a seed.

Two builds with the same seed are identical: every date is relative to
:data:`~ctxcache.sample_salon.schema.SAMPLE_TODAY`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

from ctxcache.sample_salon.database import connect, resolve_path
from ctxcache.sample_salon.schema import (
    CONVERSATION_LIMIT,
    FIRST_COMPANY_ID,
    SAMPLE_TODAY,
    SCHEDULE_DAYS,
    SCHEMA_SQL,
    SCHEMA_VERSION,
    SERVICES_PER_COMPANY,
    STAFF_PER_COMPANY,
)

__all__ = ["create_sample_database"]

_CATEGORIES = ("Стрижки", "Окрашивание", "Ногти", "Брови")
_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SYLLABLES = [c + v for c in "бвгджзклмнпрстфхцчшщ" for v in "аеиоуыэюя"]
# 09:00 .. 20:45 on a 15-minute grid; about half of the quarters become free slots.
_QUARTERS = [f"{h:02d}:{m:02d}" for h in range(9, 21) for m in (0, 15, 30, 45)]


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
        with closing(connect(path, "ro")) as conn:
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
    target = resolve_path(path)
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
            conn.executescript(SCHEMA_SQL)
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
