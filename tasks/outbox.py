"""A transactional outbox: the invalidation commits with the booking, a relay applies it.

A hook called after the booking's commit is lost if the booking code crashes
between the two. Writing the invalidation as a row in the booking's own
transaction closes that hole: the row exists exactly when the booking does.
:func:`relay_outbox`, run every few seconds (a periodic task, cron, or the
booking service's scheduler), hands each row to the hooks' two steps and
deletes it once Redis or the broker took it.

Works on any DB-API 2 connection (``sqlite3``, psycopg). Rows may be relayed
twice (a relay that dies after the hook, before the delete; two relays at
once): an invalidation is idempotent, so that costs one extra miss.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from celery import Celery

from ctxcache import InvalidationFailedError

from .hooks import ClientContext, invalidate_now_and_queue

__all__ = ["OUTBOX_TABLE", "create_outbox_table", "record_invalidation", "relay_outbox"]

OUTBOX_TABLE: Final = "ctxcache_outbox"
Paramstyle = Literal["qmark", "format"]  # sqlite3 uses ?, psycopg %s

_ID_COLUMN: Final = {
    "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}


def create_outbox_table(connection: Any, dialect: Literal["sqlite", "postgresql"]) -> None:
    """Create the outbox table if it is missing (a migration may do this instead)."""
    connection.cursor().execute(
        f"CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} ("
        f"{_ID_COLUMN[dialect]}, phone TEXT NOT NULL, company_id BIGINT NOT NULL,"
        " event TEXT NOT NULL)"
    )
    connection.commit()


def record_invalidation(
    connection: Any,
    phone: str,
    company_id: int | str,
    event: str = "booking changed",
    *,
    paramstyle: Paramstyle = "qmark",
) -> None:
    """Add the invalidation to the caller's open transaction; the caller commits.

    Bad input raises here, before the booking commits.
    """
    client = ClientContext.of(phone, company_id)
    mark = "?" if paramstyle == "qmark" else "%s"
    connection.cursor().execute(
        f"INSERT INTO {OUTBOX_TABLE} (phone, company_id, event)"  # noqa: S608
        f" VALUES ({mark}, {mark}, {mark})",
        (client.phone, client.company_id, event),
    )


def relay_outbox(
    connection: Any,
    *,
    app: Celery | None = None,
    limit: int = 100,
    paramstyle: Paramstyle = "qmark",
) -> int:
    """Apply up to ``limit`` outbox rows, oldest first, deleting each once it took.

    Stops at the first row that neither Redis nor the broker took (it stays for
    the next run). Returns the number of rows relayed.
    """
    mark = "?" if paramstyle == "qmark" else "%s"
    cursor = connection.cursor()
    cursor.execute(
        f"SELECT id, phone, company_id, event FROM {OUTBOX_TABLE}"  # noqa: S608
        f" ORDER BY id LIMIT {int(limit)}"
    )
    rows = cursor.fetchall()
    connection.commit()  # end the read; each row is deleted in its own transaction
    relayed = 0
    for row_id, phone, company_id, event in rows:
        try:
            invalidate_now_and_queue(ClientContext(phone, int(company_id)), event, app)
        except InvalidationFailedError:
            break
        cursor.execute(f"DELETE FROM {OUTBOX_TABLE} WHERE id = {mark}", (row_id,))  # noqa: S608
        connection.commit()
        relayed += 1
    return relayed
