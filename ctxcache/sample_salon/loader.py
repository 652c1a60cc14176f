"""The SQL loader of a client's context: whole, or in its client and company parts.

:class:`SqlContextLoader` offers both loader forms the cache accepts. Called,
it returns the whole context (a plain :class:`~ctxcache.ContextLoader`). Its
:meth:`~SqlContextLoader.load_client` and
:meth:`~SqlContextLoader.load_company_sections` are the
:class:`~ctxcache.SectionedLoader` form, so that a new client of a company
whose sections are cached costs only the client's own queries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from ctxcache.core.layout import SectionLayout
from ctxcache.errors import SectionScopeError
from ctxcache.sample_salon.database import default_db_path, read_snapshot
from ctxcache.sample_salon.schema import CONVERSATION_LIMIT, VISIT_HISTORY_LIMIT
from ctxcache.settings import CacheSettings

__all__ = [
    "CLIENT_SECTIONS",
    "COMPANY_WIDE_SECTIONS",
    "CONTEXT_SECTIONS",
    "SqlContextLoader",
    "load_context",
]

# The top-level keys of a context, in the order the Node service's context has them.
CONTEXT_SECTIONS: Final = (
    "phone",
    "companyId",
    "company",
    "client",
    "services",
    "staff",
    "staffSchedules",
    "conversation",
    "businessStats",
    "preferences",
    "conversationSummary",
    "intermediate",
)
# What depends on the company alone: the sections a layout may make company scope.
COMPANY_WIDE_SECTIONS: Final = (
    "companyId",
    "company",
    "services",
    "staff",
    "staffSchedules",
    "businessStats",
)
CLIENT_SECTIONS: Final = tuple(n for n in CONTEXT_SECTIONS if n not in COMPANY_WIDE_SECTIONS)

_DEFAULT_PREFERENCES: Final[dict[str, Any]] = {
    "favoriteServiceId": None,
    "favoriteStaffId": None,
    "notes": "",
    "preferredTime": None,
}


class SqlContextLoader:
    """A client's context assembled with SQL, as a whole or in parts.

    Each call reads one consistent snapshot of the database. A phone the
    database does not know is a first-time client: its context holds
    ``client: None`` and default preferences, in both forms, so the merged
    parts always equal the whole. A company it does not know raises
    :class:`LookupError`.

    ``path`` defaults to :func:`~ctxcache.sample_salon.default_db_path` (read
    on each call) and ``layout`` to the one ``CTXCACHE_COMPANY_SECTIONS``
    describes (read at first use). :meth:`load_client` returns every section
    the layout leaves to the client, so the parts fit the cache they are
    loaded for.
    """

    def __init__(
        self, path: str | Path | None = None, *, layout: SectionLayout | None = None
    ) -> None:
        self._path = Path(path) if path is not None else None
        self._layout = layout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._path) if self._path else 'default path'})"

    @property
    def path(self) -> Path:
        """The database file: the one given, else :func:`default_db_path` (read on each use)."""
        return self._path if self._path is not None else default_db_path()

    @property
    def layout(self) -> SectionLayout:
        """The layout given, else the one the settings describe (read at first use)."""
        if self._layout is None:
            # Reading the settings costs more than the client's queries: once per loader.
            self._layout = CacheSettings.load().section_layout()
        return self._layout

    def __call__(self, phone: str, company_id: int) -> dict[str, Any]:
        """The whole context (the plain loader form)."""
        with read_snapshot(self.path) as conn:
            company = _Company(conn, company_id, self.path)
            sections = _client_sections(conn, phone, company_id)
            sections.update((name, company.build(name)) for name in COMPANY_WIDE_SECTIONS)
        return {name: sections[name] for name in CONTEXT_SECTIONS}

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        """Every section the layout leaves to the client, none of its company sections."""
        layout = self.layout
        with read_snapshot(self.path) as conn:
            company = _Company(conn, company_id, self.path)
            sections = _client_sections(conn, phone, company_id)
            sections.update(
                (name, company.build(name))
                for name in COMPANY_WIDE_SECTIONS
                if not layout.is_company(name)
            )
        return {
            n: sections[n] for n in CONTEXT_SECTIONS if n in sections and not layout.is_company(n)
        }

    def load_company_sections(self, company_id: int, sections: Sequence[str]) -> dict[str, Any]:
        """Each of ``sections``; :class:`~ctxcache.SectionScopeError` for one it cannot build.

        A section that depends on the client (``conversation``) or that the
        salon does not have cannot be loaded per company.
        """
        names = [sections] if isinstance(sections, str) else list(sections)
        strays = [name for name in names if name not in COMPANY_WIDE_SECTIONS]
        if strays:
            raise SectionScopeError(
                f"the sample salon cannot load {', '.join(map(repr, strays))[:200]} per company;"
                f" its company-wide sections are {', '.join(COMPANY_WIDE_SECTIONS)}"
            )
        with read_snapshot(self.path) as conn:
            company = _Company(conn, company_id, self.path)
            return {name: company.build(name) for name in names}


# The SQL loader bound to the default database and the configured layout, resolved on each
# call: what CTXCACHE_LOADER=ctxcache.sample_salon:load_context names. Creating it reads nothing.
load_context: Final = SqlContextLoader()


def _client_sections(conn: sqlite3.Connection, phone: str, company_id: int) -> dict[str, Any]:
    """The sections that depend on the client: :data:`CLIENT_SECTIONS`."""
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
    return {
        "phone": phone,
        "client": client,
        "conversation": conversation,
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


class _Company:
    """The company-wide sections of one company, built from one snapshot on demand."""

    def __init__(self, conn: sqlite3.Connection, company_id: int, path: Path) -> None:
        self.row = conn.execute(
            "SELECT id AS company_id, title, address, timezone, working_hours,"
            " settings FROM companies WHERE id = ?",
            (company_id,),
        ).fetchone()
        if self.row is None:
            raise LookupError(f"company {company_id} not found in sample database {path}")
        self.conn, self.company_id = conn, company_id
        self._pairs: list[sqlite3.Row] | None = None

    def build(self, name: str) -> Any:
        """The section ``name``, one of :data:`COMPANY_WIDE_SECTIONS`."""
        return _BUILDERS[name](self)

    def company(self) -> dict[str, Any]:
        return {
            **dict(self.row),
            "working_hours": json.loads(self.row["working_hours"]),
            "settings": json.loads(self.row["settings"]),
        }

    def pairs(self) -> list[sqlite3.Row]:
        """Who performs what; services and staff both list it, so it is read once."""
        if self._pairs is None:
            self._pairs = self.conn.execute(
                "SELECT ss.staff_id, ss.service_id FROM staff_services ss JOIN staff st"
                " ON st.id = ss.staff_id WHERE st.company_id = ?"
                " ORDER BY ss.staff_id, ss.service_id",
                (self.company_id,),
            ).fetchall()
        return self._pairs

    def services(self) -> list[dict[str, Any]]:
        staff_ids: dict[int, list[int]] = {}
        for pair in self.pairs():
            staff_ids.setdefault(pair["service_id"], []).append(pair["staff_id"])
        return [
            {**dict(row), "active": bool(row["active"]), "staff_ids": staff_ids.get(row["id"], [])}
            for row in self.conn.execute(
                "SELECT id, title, category, price_min, price_max, duration, description, active,"
                " weight FROM services WHERE company_id = ? ORDER BY id",
                (self.company_id,),
            )
        ]

    def staff(self) -> list[dict[str, Any]]:
        service_ids: dict[int, list[int]] = {}
        for pair in self.pairs():
            service_ids.setdefault(pair["staff_id"], []).append(pair["service_id"])
        return [
            {**dict(row), "service_ids": service_ids.get(row["id"], [])}
            for row in self.conn.execute(
                "SELECT id, name, specialization, rating, bio, avatar FROM staff"
                " WHERE company_id = ? ORDER BY id",
                (self.company_id,),
            )
        ]

    def free_slots(self) -> list[dict[str, Any]]:
        """``staffSchedules``: the free slots per staff member and day."""
        schedules: list[dict[str, Any]] = []
        for row in self.conn.execute(
            "SELECT staff_id, date(slot_start) AS day, slot_start FROM staff_schedules"
            " WHERE company_id = ? AND booking_id IS NULL ORDER BY staff_id, slot_start",
            (self.company_id,),
        ):
            if not schedules or (schedules[-1]["staff_id"], schedules[-1]["date"]) != (
                row["staff_id"],
                row["day"],
            ):
                schedules.append({"staff_id": row["staff_id"], "date": row["day"], "slots": []})
            schedules[-1]["slots"].append(row["slot_start"])
        return schedules

    def business_stats(self) -> dict[str, Any]:
        return {
            "popularServices": [
                dict(row)
                for row in self.conn.execute(
                    "SELECT s.id AS service_id, COUNT(b.id) AS booking_count FROM services s"
                    " LEFT JOIN bookings b ON b.service_id = s.id AND b.status != 'cancelled'"
                    " WHERE s.company_id = ? GROUP BY s.id ORDER BY s.id",
                    (self.company_id,),
                )
            ]
        }


_BUILDERS: Final[dict[str, Callable[[_Company], Any]]] = {
    "companyId": lambda company: company.company_id,
    "company": _Company.company,
    "services": _Company.services,
    "staff": _Company.staff,
    "staffSchedules": _Company.free_slots,
    "businessStats": _Company.business_stats,
}
